"""Index table of perfusion evaluations (issue 6, "Server integration").

One row per evaluation of a series: what started it, the job that runs it, how many
instances it saw, and the result JSON the API serves. Kept apart from ``models.py`` (same
``Base``, own migration 0004). The job itself lives in ``pacs_jobs`` (kind "perfusion"):
the one job queue of the server.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.index.models import Base

RUN_STATES = (
    "queued",
    "running",
    "done",
    "partial",
    "refused",
    "failed",
    "cancelled",
    "superseded",
    "interrupted",
)
"""superseded: new images of the series arrived during the evaluation (FAQ: abort, restart).
partial: analysed, but some result objects were not made or were refused by the archive."""


class PerfusionRun(Base):
    __tablename__ = "perfusion_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    pool: Mapped[str] = mapped_column(String(64), default="DEFAULT")
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    trigger: Mapped[str] = mapped_column(String(16), default="auto")  # auto | manual | restart
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    recognition: Mapped[str] = mapped_column(Text, default="")
    instances: Mapped[int] = mapped_column(Integer, default=0)
    last_instance_pk: Mapped[int] = mapped_column(Integer, default=0)
    """Highest instances.id the evaluation saw: a higher one in the series means new images."""
    result: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    result_series_uids: Mapped[list[str]] = mapped_column(JSON, default=list)
    stored: Mapped[int] = mapped_column(Integer, default=0)
    send_job_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
