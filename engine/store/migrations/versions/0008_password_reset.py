"""The account's own pages and 忘記密碼 (issue 16).

``accounts.password_changed_at``: the completion time at first (existing accounts take their
``created_at``), then the time of each password reset or change (``swreg accounts show``).
``account_tokens``: single-use mailed links of an account's own changes (a new e-mail address).
``sessions.client``: where a session was opened (browser, system, masked address).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    # engine.store._models.UTCDateTime stores through this type.
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("password_changed_at", _utc(), nullable=True))
    op.execute("UPDATE accounts SET password_changed_at = created_at")
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("client", sa.String(120), nullable=True))
    op.create_table(
        "account_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("new_email", sa.String(254), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.Column("used_at", _utc(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_account_tokens_account_id_accounts"
        ),
        sa.PrimaryKeyConstraint("token_hash", name="pk_account_tokens"),
    )
    op.create_index("ix_account_tokens_account_id", "account_tokens", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_account_tokens_account_id", "account_tokens")
    op.drop_table("account_tokens")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("client")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("password_changed_at")
