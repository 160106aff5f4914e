"""行動自然人憑證 (issue 17): signings under way at MOI's TW FidO service.

``mobile_id_tickets``: one row per ticket until the phone answers or its time ends, keyed by
the SHA-256 hex of the pending id the browser holds; the ID sent only as its keyed hash and
last four digits.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    # engine.store._models.UTCDateTime stores through this type.
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mobile_id_tickets",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("subject_hash", sa.String(64), nullable=False),
        sa.Column("challenge_id", sa.String(36), nullable=False),
        sa.Column("national_id_hash", sa.String(64), nullable=False),
        sa.Column("id_last4", sa.String(4), nullable=False),
        sa.Column("sp_ticket_id", sa.String(128), nullable=False),
        sa.Column("transaction_id", sa.String(36), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.Column("next_poll_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_mobile_id_tickets"),
    )
    op.create_index("ix_mobile_id_tickets_expires_at", "mobile_id_tickets", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_mobile_id_tickets_expires_at", "mobile_id_tickets")
    op.drop_table("mobile_id_tickets")
