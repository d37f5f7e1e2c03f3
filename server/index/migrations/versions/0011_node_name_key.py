"""Remote node names are unique by a fold computed in Python, the same on every database.

Migration 0010 made names unique on SQL ``lower(name)``; SQLite's ``lower()`` folds ASCII
letters only, so "MÜNCHEN" and "münchen" were two nodes on SQLite and one on PostgreSQL,
or two there too, depending on the database locale (the C locale folds ASCII only). A
``name_key`` column now holds ``server.index.folding.name_key(name)`` (NFC, casefold,
Turkish İ and ı as i), set by the model whenever a name is, and carries the unique index;
the ``lower(name)`` index goes.

Names an index made before this revision holds twice by the new fold ("MÜNCHEN" and
"münchen", "Straße" and "STRASSE") are told apart first, as 0010 did: every node but the
oldest of such a group gets its id appended, "münchen (7)". The fold is written out here,
not imported: a migration must not change with the code.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-09
"""

from __future__ import annotations

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD_INDEX = "uq_remote_nodes_name_lower"
INDEX = "uq_remote_nodes_name_key"
_NAME_LENGTH = 64  # remote_nodes.name is String(64)
_KEY_LENGTH = 256
_UNDOTTED = str.maketrans("\u0130\u0131", "ii")


def _key(name: str) -> str:
    folded = unicodedata.normalize("NFC", name.strip().translate(_UNDOTTED)).casefold()
    return unicodedata.normalize("NFC", folded)


def _fill_keys(bind: sa.engine.Connection, nodes: sa.TableClause) -> None:
    rows = bind.execute(sa.select(nodes.c.id, nodes.c.name).order_by(nodes.c.id)).all()
    taken = {_key(name) for _, name in rows}
    seen: set[str] = set()
    for row_id, name in rows:
        key = _key(name)
        if key in seen:
            count = 0
            while True:
                suffix = f" ({row_id})" if count == 0 else f" ({row_id}-{count})"
                renamed = name[: _NAME_LENGTH - len(suffix)] + suffix
                if _key(renamed) not in taken:
                    break
                count += 1
            name, key = renamed, _key(renamed)
            taken.add(key)
        seen.add(key)
        bind.execute(nodes.update().where(nodes.c.id == row_id).values(name=name, name_key=key))


def upgrade() -> None:
    with op.batch_alter_table("remote_nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_key", sa.String(_KEY_LENGTH), nullable=True))
    nodes = sa.table(
        "remote_nodes",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("name_key", sa.String),
    )
    _fill_keys(op.get_bind(), nodes)
    op.drop_index(OLD_INDEX, table_name="remote_nodes")
    with op.batch_alter_table("remote_nodes", schema=None) as batch_op:
        batch_op.alter_column("name_key", existing_type=sa.String(_KEY_LENGTH), nullable=False)
        batch_op.create_index(INDEX, ["name_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("remote_nodes", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
        batch_op.drop_column("name_key")
    op.create_index(OLD_INDEX, "remote_nodes", [sa.text("lower(name)")], unique=True)
