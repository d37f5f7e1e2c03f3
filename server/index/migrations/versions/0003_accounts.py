"""Accounts and access: groups, pool grants, sessions, devices, PINs, share links, quotas,
hidden data and the append-only audit trail (issue 4).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Append-only audit trail (IHE ATNA): the database itself refuses UPDATE and DELETE.
_SQLITE_TRIGGERS = (
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_records "
    "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_records "
    "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END",
)
_PG_FUNCTION = (
    "CREATE FUNCTION audit_append_only() RETURNS trigger AS $$ BEGIN "
    "RAISE EXCEPTION 'audit records are append-only'; END; $$ LANGUAGE plpgsql"
)
_PG_TRIGGER = (
    "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_records "
    "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
)


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("event_id", sa.String(length=16), nullable=False),
        sa.Column("event_type", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=1), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("objects", sa.JSON(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_at", "audit_records", ["at"], unique=False)
    op.create_index("ix_audit_event", "audit_records", ["event_id"], unique=False)
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "quotas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("limit_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "subject", name="uq_quota_subject"),
    )
    op.create_table(
        "user_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("identity_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_pk", "identity_hash", name="uq_device_identity"),
    )
    op.create_index(op.f("ix_devices_user_pk"), "devices", ["user_pk"], unique=False)
    op.create_table(
        "group_members",
        sa.Column("group_pk", sa.Integer(), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_pk"],
            ["user_groups.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("group_pk", "user_pk"),
    )
    op.create_table(
        "hidden_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("hidden_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_pk", "level", "uid", name="uq_hidden_item"),
    )
    op.create_index(op.f("ix_hidden_items_user_pk"), "hidden_items", ["user_pk"], unique=False)
    op.create_table(
        "instance_owners",
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("sop_instance_uid"),
    )
    op.create_index(
        op.f("ix_instance_owners_user_pk"), "instance_owners", ["user_pk"], unique=False
    )
    op.create_table(
        "password_resets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(
        op.f("ix_password_resets_user_pk"), "password_resets", ["user_pk"], unique=False
    )
    op.create_table(
        "pool_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=True),
        sa.Column("group_pk", sa.Integer(), nullable=True),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("rights", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_pk"],
            ["user_groups.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_pool_grants_group_pk"), "pool_grants", ["group_pk"], unique=False)
    op.create_index(op.f("ix_pool_grants_user_pk"), "pool_grants", ["user_pk"], unique=False)
    op.create_table(
        "share_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("creator_pk", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("pin_hash", sa.String(length=256), nullable=False),
        sa.Column("note", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("max_views", sa.Integer(), nullable=True),
        sa.Column("views", sa.Integer(), nullable=False),
        sa.Column("pin_failures", sa.Integer(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["creator_pk"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(op.f("ix_share_links_creator_pk"), "share_links", ["creator_pk"], unique=False)
    op.create_table(
        "user_security",
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("pin_login", sa.Boolean(), nullable=False),
        sa.Column("quota_mb", sa.Integer(), nullable=True),
        sa.Column("password_changed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("user_pk"),
    )
    op.create_table(
        "login_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(
        op.f("ix_login_sessions_device_pk"), "login_sessions", ["device_pk"], unique=False
    )
    op.create_index(op.f("ix_login_sessions_user_pk"), "login_sessions", ["user_pk"], unique=False)
    op.create_table(
        "pin_challenges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=True),
        sa.Column("pin_hash", sa.String(length=256), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(op.f("ix_pin_challenges_user_pk"), "pin_challenges", ["user_pk"], unique=False)
    op.create_table(
        "share_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("link_pk", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_pk"],
            ["share_links.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(op.f("ix_share_sessions_link_pk"), "share_sessions", ["link_pk"], unique=False)
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_append_only ON audit_records")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    op.drop_index(op.f("ix_share_sessions_link_pk"), table_name="share_sessions")
    op.drop_table("share_sessions")
    op.drop_index(op.f("ix_pin_challenges_user_pk"), table_name="pin_challenges")
    op.drop_table("pin_challenges")
    op.drop_index(op.f("ix_login_sessions_user_pk"), table_name="login_sessions")
    op.drop_index(op.f("ix_login_sessions_device_pk"), table_name="login_sessions")
    op.drop_table("login_sessions")
    op.drop_table("user_security")
    op.drop_index(op.f("ix_share_links_creator_pk"), table_name="share_links")
    op.drop_table("share_links")
    op.drop_index(op.f("ix_pool_grants_user_pk"), table_name="pool_grants")
    op.drop_index(op.f("ix_pool_grants_group_pk"), table_name="pool_grants")
    op.drop_table("pool_grants")
    op.drop_index(op.f("ix_password_resets_user_pk"), table_name="password_resets")
    op.drop_table("password_resets")
    op.drop_index(op.f("ix_instance_owners_user_pk"), table_name="instance_owners")
    op.drop_table("instance_owners")
    op.drop_index(op.f("ix_hidden_items_user_pk"), table_name="hidden_items")
    op.drop_table("hidden_items")
    op.drop_table("group_members")
    op.drop_index(op.f("ix_devices_user_pk"), table_name="devices")
    op.drop_table("devices")
    op.drop_table("user_groups")
    op.drop_table("quotas")
    op.drop_table("login_throttle")
    op.drop_index("ix_audit_event", table_name="audit_records")
    op.drop_index("ix_audit_at", table_name="audit_records")
    op.drop_table("audit_records")
