"""A node's ``retries`` option may be unset: then each kind of job takes its global default.

``pacs_node_options.retries`` was filled with ``pacs.move_retries`` whenever a node got an
options row (any PUT of its options), and only C-MOVE read it: C-STORE always took
``pacs.store_retries`` (probe 38 #5). Now it governs both, and NULL means "not set here":
C-MOVE falls back to ``pacs.move_retries``, C-STORE to ``pacs.store_retries``. Existing
rows keep their value (it may have been set on purpose).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pacs_node_options", schema=None) as batch_op:
        batch_op.alter_column("retries", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    options = sa.table("pacs_node_options", sa.column("retries", sa.Integer))
    op.get_bind().execute(options.update().where(options.c.retries.is_(None)).values(retries=3))
    with op.batch_alter_table("pacs_node_options", schema=None) as batch_op:
        batch_op.alter_column("retries", existing_type=sa.Integer(), nullable=False)
