"""A password set by someone other than the account's owner is a one-time password.

Clinic IT may reset passwords (issue 4) but "reads no patient data" (rights.py): a
password it set let it log in as a radiologist and read that radiologist's pools (probe
21). ``user_security.password_one_time`` marks such a password; the account must set its
own before any other route answers (``server.api.auth.authorize``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user_security", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("password_one_time", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("user_security", schema=None) as batch_op:
        batch_op.drop_column("password_one_time")
