"""The officer console (issue 18): officers' card-login sessions.

``officer_sessions``: one row per console login, keyed by the SHA-256 hex of its cookie token;
removing an officer from the list ends their sessions (ON DELETE CASCADE).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    # engine.store._models.UTCDateTime stores through this type.
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "officer_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("officer_id", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.Column("last_seen_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_officer_sessions"),
        sa.ForeignKeyConstraint(
            ["officer_id"],
            ["officers.id"],
            name="fk_officer_sessions_officer_id_officers",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_officer_sessions_officer_id", "officer_sessions", ["officer_id"])


def downgrade() -> None:
    op.drop_index("ix_officer_sessions_officer_id", "officer_sessions")
    op.drop_table("officer_sessions")
