"""Remote node names are unique regardless of case, in the database too.

The API compared names case-insensitively ("SINK" and "sink" in one list are two entries an
administrator cannot tell apart when picking a target), but only by reading before it
inserted: on PostgreSQL (READ COMMITTED) two concurrent creates of "Main PACS" and
"main pacs" both passed the check and both were stored (outside probe 31). A unique index
on ``lower(name)`` (SQLite and PostgreSQL both index expressions) makes the second one fail;
the API answers 409.

Names an index made before this revision already holds twice (by case) are told apart
first: every node but the oldest of such a group gets its id appended, "main pacs (7)".
The fold is SQL ``lower()``, the one the index uses, so the two always agree.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEX = "uq_remote_nodes_name_lower"
_NAME_LENGTH = 64  # remote_nodes.name is String(64)


def _distinct_names(bind: sa.engine.Connection, nodes: sa.TableClause) -> None:
    rows = bind.execute(
        sa.select(nodes.c.id, nodes.c.name, sa.func.lower(nodes.c.name)).order_by(nodes.c.id)
    ).all()
    taken = {folded for _, _, folded in rows}
    seen: set[str] = set()
    for row_id, name, folded in rows:
        if folded not in seen:
            seen.add(folded)
            continue
        count = 0
        while True:
            suffix = f" ({row_id})" if count == 0 else f" ({row_id}-{count})"
            renamed = name[: _NAME_LENGTH - len(suffix)] + suffix
            new_folded = bind.execute(sa.select(sa.func.lower(sa.literal(renamed)))).scalar()
            if new_folded not in taken:
                break
            count += 1
        taken.add(new_folded)
        seen.add(new_folded)
        bind.execute(nodes.update().where(nodes.c.id == row_id).values(name=renamed))


def upgrade() -> None:
    nodes = sa.table("remote_nodes", sa.column("id", sa.Integer), sa.column("name", sa.String))
    _distinct_names(op.get_bind(), nodes)
    op.create_index(INDEX, "remote_nodes", [sa.text("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="remote_nodes")
