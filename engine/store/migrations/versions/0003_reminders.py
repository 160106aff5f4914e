"""Expiry reminders (憑證逾期提醒): one row per certificate and window; certificates by expiry.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    # engine.store._models.UTCDateTime stores through this type.
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reminders",
        sa.Column("certificate_id", sa.Integer(), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("claimed_at", _utc(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("sent_at", _utc(), nullable=True),
        sa.ForeignKeyConstraint(
            ["certificate_id"], ["certificates.id"], name="fk_reminders_certificate_id_certificates"
        ),
        sa.PrimaryKeyConstraint("certificate_id", "window_days", name="pk_reminders"),
    )
    op.create_index("ix_certificates_not_after", "certificates", ["not_after"])


def downgrade() -> None:
    op.drop_index("ix_certificates_not_after", table_name="certificates")
    op.drop_table("reminders")
