"""忘記密碼 (issue 16): when each account's password was last set.

``accounts.password_changed_at`` is the completion time at first (existing accounts take their
``created_at``), then the time of each password reset or change (``swreg accounts show``).

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


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("password_changed_at")
