"""Index tables of PACS connectivity: node options, jobs, per-instance send and commitment results.

Kept apart from ``models.py`` (same ``Base``, own migration 0002) so the DICOM hierarchy stays
small. Jobs name their node by id *and* name: a job outlives a node that was deleted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.index.models import Base


class NodeOptions(Base):
    """Per-node settings beyond RemoteNode (Conformance 4.2.4.2, 4.1.2.5, 4.2.2.6)."""

    __tablename__ = "pacs_node_options"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_pk: Mapped[int] = mapped_column(
        ForeignKey("remote_nodes.id", ondelete="CASCADE"), unique=True
    )
    # Propose the compressed list of 4.2.4.2 besides the uncompressed syntaxes.
    propose_compressed: Mapped[bool] = mapped_column(Boolean, default=False)
    # How the N-EVENT-REPORT comes back: same | incoming | reopen (4.1.2.5 ways 1, 2, 3).
    commitment_mode: Mapped[str] = mapped_column(String(16), default="same")
    # Seconds to wait for the report on an association (ways 1 and 3).
    commitment_wait: Mapped[float] = mapped_column(Float, default=10.0)
    # Seconds per DIMSE message (RemoteNode.timeout covers connect and negotiation).
    dimse_timeout: Mapped[float] = mapped_column(Float, default=30.0)
    # Extra attempts for a C-MOVE / C-STORE after a retryable failure; NULL: not set for
    # this node, pacs.move_retries / pacs.store_retries apply (migration 0013).
    retries: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)


class Job(Base):
    """A retrieve, send or commitment run with progress; the API lists and cancels them."""

    __tablename__ = "pacs_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # retrieve | send | commit
    state: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    node_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    node_name: Mapped[str] = mapped_column(String(64), default="")
    pool: Mapped[str] = mapped_column(String(64), default="")
    params: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    warning: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class SentInstance(Base):
    """Per-instance C-STORE result of a send job (issue 3: "per-instance result recorded")."""

    __tablename__ = "pacs_sent_instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("pacs_jobs.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    transcoded: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    at: Mapped[datetime] = mapped_column(DateTime)


class CommitmentRequest(Base):
    """One N-ACTION transaction (Conformance 4.2.5, 5.1.1)."""

    __tablename__ = "pacs_commitments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_uid: Mapped[str] = mapped_column(String(64), unique=True)
    node_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    node_name: Mapped[str] = mapped_column(String(64), default="")
    job_pk: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    # pending | answered | failed (N-ACTION not accepted) | superseded (retried) | expired
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    mode: Mapped[str] = mapped_column(String(16), default="same")
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    message: Mapped[str] = mapped_column(Text, default="")
    requested_at: Mapped[datetime] = mapped_column(DateTime)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    retry_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)

    items: Mapped[list[CommitmentItem]] = relationship(
        back_populates="request", cascade="all, delete-orphan"
    )


class CommitmentItem(Base):
    """Commitment state of one instance in a transaction (Conformance 5.1.2)."""

    __tablename__ = "pacs_commitment_items"
    __table_args__ = (UniqueConstraint("request_pk", "sop_instance_uid", name="uq_commit_item"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_pk: Mapped[int] = mapped_column(
        ForeignKey("pacs_commitments.id", ondelete="CASCADE"), index=True
    )
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|committed|failed
    failure_reason: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    request: Mapped[CommitmentRequest] = relationship(back_populates="items")
