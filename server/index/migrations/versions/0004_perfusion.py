"""Perfusion evaluations (issue 6, server integration)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "perfusion_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("recognition", sa.Text(), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("last_instance_pk", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("result_series_uids", sa.JSON(), nullable=False),
        sa.Column("stored", sa.Integer(), nullable=False),
        sa.Column("send_job_ids", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("perfusion_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_perfusion_runs_series_uid"), ["series_uid"])
        batch_op.create_index(batch_op.f("ix_perfusion_runs_job_id"), ["job_id"])
        batch_op.create_index(batch_op.f("ix_perfusion_runs_state"), ["state"])


def downgrade() -> None:
    with op.batch_alter_table("perfusion_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_perfusion_runs_state"))
        batch_op.drop_index(batch_op.f("ix_perfusion_runs_job_id"))
        batch_op.drop_index(batch_op.f("ix_perfusion_runs_series_uid"))
    op.drop_table("perfusion_runs")
