"""Re-fold patient names holding Turkish İ or ı (``folding.DOTTED_I``).

Case-insensitive name search folds İ and ı to i before upper-casing (outside probe: "çiçek"
did not find "ÇİÇEK"); names indexed before keep the old fold until this re-folds them.
The fold is written out here, not imported: a migration must not change with the code.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_DOTTED = ("\u0130", "\u0131")


def _fold(name: str) -> str:
    alphabetic = name.split("=", 1)[0]
    for char in _DOTTED:
        alphabetic = alphabetic.replace(char, "i")
    return alphabetic.upper()


def upgrade() -> None:
    patients = sa.table(
        "patients",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("name_folded", sa.String),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(patients.c.id, patients.c.name).where(
            sa.or_(*(patients.c.name.contains(char) for char in _DOTTED))
        )
    ).all()
    for row_id, name in rows:
        bind.execute(
            patients.update().where(patients.c.id == row_id).values(name_folded=_fold(name))
        )


def downgrade() -> None:
    """The old fold kept İ and ı; the new one matches more, and nothing depends on it."""
