"""Patients without a Patient ID are never merged: the (Patient ID, issuer) key is unique only
for a non-empty ID.

Patient ID is Type 2 in most IODs, so an empty one is legal, but it identifies no one: two
people who both lack an ID are not one patient. The unique constraint becomes a partial
unique index (SQLite and PostgreSQL both have them), and each study without a Patient ID gets
a patient row of its own (``server.index.records.upsert_patient``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_NON_EMPTY = sa.text("patient_id != ''")


def upgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_constraint("uq_patient_id_issuer", type_="unique")
    op.create_index(
        "uq_patient_identity",
        "patients",
        ["patient_id", "issuer"],
        unique=True,
        sqlite_where=_NON_EMPTY,
        postgresql_where=_NON_EMPTY,
    )


def downgrade() -> None:
    op.drop_index("uq_patient_identity", table_name="patients")
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_patient_id_issuer", ["patient_id", "issuer"])
