"""Security hardening (issue 13): registration secrets and purge marks, failed-password counts,
the officer list with personal API tokens.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    # engine.store._models.UTCDateTime stores through this type.
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.add_column(sa.Column("secret_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("purged_at", _utc(), nullable=True))
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("failed_passwords", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "officers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("token_issued_at", _utc(), nullable=True),
        sa.Column("added_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_officers"),
        sa.UniqueConstraint("name", name="uq_officers_name"),
        sa.UniqueConstraint("fingerprint", name="uq_officers_fingerprint"),
        sa.UniqueConstraint("token_hash", name="uq_officers_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("officers")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("failed_passwords")
    with op.batch_alter_table("registrations") as batch:
        batch.drop_column("purged_at")
        batch.drop_column("secret_hash")
