"""The archive an index belongs to (probe 58).

A second server with its own archive and key file on the same PostgreSQL database (or an
index copied next to another archive) started without complaint: it listed the first
server's studies, answered 500 for their objects, and a C-STORE to it of an instance the
first server held replaced that instance's index row with objects in its own archive, so the
first server answered 500 "metadata object is missing" for it. ``index_owner`` records the
random id of the archive the index belongs to (kept beside the archive's key file); every
start compares the two before anything is changed. An index without the row (made before
this revision) adopts the archive of its next start.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "index_owner",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("archive_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("holder_host", sa.String(length=255), nullable=False),
        sa.Column("holder_pid", sa.Integer(), nullable=False),
        sa.Column("holder_data_dir", sa.Text(), nullable=False),
        sa.Column("holder_since", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("index_owner")
