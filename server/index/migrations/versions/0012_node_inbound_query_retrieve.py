"""A remote node's two Q/R directions are two flags (outside probe 37).

``query_retrieve`` said both "we query and retrieve from this node" (our C-FIND/C-MOVE
SCU) and "this node may query and retrieve from us" (our Q/R SCP): clinic IT could not
query a hospital PACS without letting it pull our patients. ``query_retrieve`` keeps the
outbound meaning (issue 3's "query/retrieve source" role); ``inbound_query_retrieve`` is
the new inbound one, filled from ``query_retrieve`` so every existing node behaves as before.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("remote_nodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "inbound_query_retrieve", sa.Boolean(), nullable=False, server_default=sa.true()
            )
        )
    nodes = sa.table(
        "remote_nodes",
        sa.column("query_retrieve", sa.Boolean),
        sa.column("inbound_query_retrieve", sa.Boolean),
    )
    op.get_bind().execute(nodes.update().values(inbound_query_retrieve=nodes.c.query_retrieve))


def downgrade() -> None:
    # the old single flag allowed both directions: keep a node closed if either was closed
    nodes = sa.table(
        "remote_nodes",
        sa.column("query_retrieve", sa.Boolean),
        sa.column("inbound_query_retrieve", sa.Boolean),
    )
    op.get_bind().execute(
        nodes.update()
        .where(nodes.c.inbound_query_retrieve == sa.false())
        .values(query_retrieve=False)
    )
    with op.batch_alter_table("remote_nodes", schema=None) as batch_op:
        batch_op.drop_column("inbound_query_retrieve")
