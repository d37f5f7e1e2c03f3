"""PACS connectivity: node options, jobs, sent instances, storage commitment

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pacs_node_options",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_pk", sa.Integer(), nullable=False),
        sa.Column("propose_compressed", sa.Boolean(), nullable=False),
        sa.Column("commitment_mode", sa.String(length=16), nullable=False),
        sa.Column("commitment_wait", sa.Float(), nullable=False),
        sa.Column("dimse_timeout", sa.Float(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["node_pk"], ["remote_nodes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("node_pk"),
    )
    op.create_table(
        "pacs_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("node_name", sa.String(length=64), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("warning", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pacs_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pacs_jobs_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_pacs_jobs_state"), ["state"], unique=False)
    op.create_table(
        "pacs_sent_instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_pk", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("transcoded", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_pk"], ["pacs_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pacs_sent_instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pacs_sent_instances_job_pk"), ["job_pk"])
        batch_op.create_index(
            batch_op.f("ix_pacs_sent_instances_sop_instance_uid"), ["sop_instance_uid"]
        )
    op.create_table(
        "pacs_commitments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transaction_uid", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("node_name", sa.String(length=64), nullable=False),
        sa.Column("job_pk", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("retry_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("transaction_uid"),
    )
    with op.batch_alter_table("pacs_commitments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pacs_commitments_node_id"), ["node_id"])
        batch_op.create_index(batch_op.f("ix_pacs_commitments_job_pk"), ["job_pk"])
        batch_op.create_index(batch_op.f("ix_pacs_commitments_state"), ["state"])
        batch_op.create_index(batch_op.f("ix_pacs_commitments_retry_at"), ["retry_at"])
    op.create_table(
        "pacs_commitment_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["request_pk"], ["pacs_commitments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_pk", "sop_instance_uid", name="uq_commit_item"),
    )
    with op.batch_alter_table("pacs_commitment_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pacs_commitment_items_request_pk"), ["request_pk"])
        batch_op.create_index(
            batch_op.f("ix_pacs_commitment_items_sop_instance_uid"), ["sop_instance_uid"]
        )


def downgrade() -> None:
    op.drop_table("pacs_commitment_items")
    op.drop_table("pacs_commitments")
    op.drop_table("pacs_sent_instances")
    op.drop_table("pacs_jobs")
    op.drop_table("pacs_node_options")
