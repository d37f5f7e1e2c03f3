"""Studies and series keep their Timezone Offset From UTC (0008,0201).

PS3.18 Tables 10.6.3-3..5 list it among the attributes a QIDO-RS answer includes when
known, and C-FIND SCUs ask for it as a return key (PS3.4 C.6.1.1): the index did not keep
it, so both answered it empty. ``timezone_offset`` holds it as received ("+0100",
"-0500"); "" is unknown, which is what every row archived before this revision keeps (no
backfill: the archived data sets are sealed, and reading each one back costs more than an
unknown offset).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_TABLES = ("studies", "series")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("timezone_offset", sa.String(length=5), nullable=False, server_default="")
            )


def downgrade() -> None:
    for table in reversed(_TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("timezone_offset")
