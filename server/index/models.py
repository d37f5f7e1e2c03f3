"""SQLAlchemy 2 models of the index: the DICOM hierarchy, placeholders, accounts, nodes.

The index holds searchable metadata only; pixel data and the full data set live sealed in
the archive (FAQ: "separation of image data and metadata"). Storage keys are our own ids.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from server.index import folding


class Base(DeclarativeBase):
    pass


class Patient(Base):
    __tablename__ = "patients"
    # One row per (Patient ID, issuer) when there is an ID; each study without one has its own
    # row (an empty Patient ID identifies no one: migration 0007).
    __table_args__ = (
        Index(
            "uq_patient_identity",
            "patient_id",
            "issuer",
            unique=True,
            sqlite_where=text("patient_id != ''"),
            postgresql_where=text("patient_id != ''"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    issuer: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(324), default="")
    # Upper-cased alphabetic name, for case-insensitive search (FAQ: "schmidt" vs "Schmidt").
    name_folded: Mapped[str] = mapped_column(String(324), default="", index=True)
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(64 * 4), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    referring_physician: Mapped[str] = mapped_column(String(324), default="")
    requesting_service: Mapped[str] = mapped_column(String(64 * 4), default="")
    # Timezone Offset From UTC (0008,0201) as "+HHMM"/"-HHMM"; "" unknown (migration 0014)
    timezone_offset: Mapped[str] = mapped_column(String(5), default="")
    pool: Mapped[str] = mapped_column(String(64), default="DEFAULT", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(String(64 * 4), default="")
    body_part: Mapped[str] = mapped_column(String(16), default="")
    frame_of_reference_uid: Mapped[str] = mapped_column(String(64), default="")
    timezone_offset: Mapped[str] = mapped_column(String(5), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    lossy: Mapped[bool] = mapped_column(Boolean, default=False)
    # Viewer geometry and display values (IPP, IOP, spacing, rescale, window...), as JSON.
    attrs: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    # Sealed parts: the data set without pixel data, and the pixel data element value.
    meta_key: Mapped[str] = mapped_column(String(40))
    pixel_key: Mapped[str | None] = mapped_column(String(40), nullable=True)
    pixel_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str] = mapped_column(String(64), default="DEFAULT")
    source_ae: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime)

    series: Mapped[Series] = relationship(back_populates="instances")


class ArchiveTombstone(Base):
    """An archive object whose index rows were deleted but whose blobs may still exist.

    Written in the same (fully synced) transaction as the deletion and cleared once the blobs
    are gone, so start-up recovery removes those blobs instead of re-indexing them.
    """

    __tablename__ = "archive_tombstones"

    base: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class IndexOwner(Base):
    """The archive this index belongs to (one row, ``id`` 1), and the server that opened it
    last (probe 58).

    A twin server with its own archive on the same database, or an index copied next to
    another archive, listed studies whose objects it did not have, and a C-STORE to the twin
    replaced the first server's instances with objects in the twin's archive (500 on WADO-RS
    there). ``archive_id`` is the random id kept beside the archive's key file
    (``server.single_instance.archive_id_file``); every start compares the two before it
    changes anything. The holder columns only name a running server in the refusal of a
    second one (``server.index.db.lock_index``).
    """

    __tablename__ = "index_owner"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    archive_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    holder_host: Mapped[str] = mapped_column(String(255), default="")
    holder_pid: Mapped[int] = mapped_column(Integer, default=0)
    holder_data_dir: Mapped[str] = mapped_column(Text, default="")
    holder_since: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Placeholder(Base):
    """'Non-conformant data' entry: something arrived and was refused (Conformance 4.1.3.2)."""

    __tablename__ = "placeholders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    series_uid: Mapped[str] = mapped_column(String(64), default="")
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    pool: Mapped[str] = mapped_column(String(64), default="DEFAULT")
    source_ae: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime)

    patient: Mapped[Patient] = relationship()


class Event(Base):
    """Things an administrator may need to trace: duplicates replaced, keys rotated."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    kind: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stored case-folded: user names compare case-insensitively (FAQ, before mRay 6.0).
    username: Mapped[str] = mapped_column(String(128), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    email: Mapped[str] = mapped_column(String(256), default="")
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32), default="radiologist")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class RemoteNode(Base):
    """A configured DICOM peer: a Q/R source, store target and/or storage commitment SCP
    for us; may query/retrieve from us (``inbound_query_retrieve``), and is then a C-MOVE
    destination."""

    __tablename__ = "remote_nodes"
    #: Names are unique regardless of case (migrations 0010, 0011): two creates of "Main
    #: PACS" and "main pacs" at once were both stored on PostgreSQL (outside probe 31).
    __table_args__ = (Index("uq_remote_nodes_name_key", "name_key", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # folding.name_key(name), set with the name (``_key_name``): the fold is Python's on
    # every database, where SQL lower() folded "Ü" on PostgreSQL and not on SQLite
    name_key: Mapped[str] = mapped_column(String(folding.NAME_KEY_LENGTH))
    ae_title: Mapped[str] = mapped_column(String(16), index=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    # Issue 3's roles are from our side: a Q/R source is a node we C-FIND/C-MOVE from.
    # Whether the node may query and retrieve from *us* is its own flag (migration 0012):
    # one flag for both let a PACS we must query pull our patients too (probe 37).
    query_retrieve: Mapped[bool] = mapped_column(Boolean, default=True)
    inbound_query_retrieve: Mapped[bool] = mapped_column(Boolean, default=True)
    store_target: Mapped[bool] = mapped_column(Boolean, default=True)
    storage_commitment: Mapped[bool] = mapped_column(Boolean, default=False)
    tls: Mapped[bool] = mapped_column(Boolean, default=False)
    timeout: Mapped[float] = mapped_column(default=30.0)

    @validates("name")
    def _key_name(self, _: str, name: str) -> str:
        """Keep ``name_key`` in step with every name set through the ORM."""
        self.name_key = folding.name_key(name)
        return name
