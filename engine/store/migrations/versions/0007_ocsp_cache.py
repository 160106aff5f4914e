"""The OCSP cache (issue 14): the answer about each certificate, shared by every worker, and the
latest request to each responder URL.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    # engine.store._models.UTCDateTime stores through this type.
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ocsp_responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("issuer_key_id", sa.String(64), nullable=False),
        sa.Column("responder_url", sa.String(2048), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("revoked_at", _utc(), nullable=True),
        sa.Column("this_update", _utc(), nullable=False),
        sa.Column("next_update", _utc(), nullable=True),
        sa.Column("produced_at", _utc(), nullable=True),
        sa.Column("is_hold", sa.Boolean(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("checked_at", _utc(), nullable=False),
        sa.Column("cache_until", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ocsp_responses"),
        sa.UniqueConstraint("fingerprint", name="uq_ocsp_responses_fingerprint"),
    )
    op.create_index("ix_ocsp_responses_issuer_key_id", "ocsp_responses", ["issuer_key_id"])
    op.create_table(
        "ocsp_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("issuer", sa.String(1024), nullable=False),
        sa.Column("reachable", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.String(1024), nullable=True),
        sa.Column("checked_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ocsp_attempts"),
        sa.UniqueConstraint("url", name="uq_ocsp_attempts_url"),
    )


def downgrade() -> None:
    op.drop_table("ocsp_attempts")
    op.drop_index("ix_ocsp_responses_issuer_key_id", table_name="ocsp_responses")
    op.drop_table("ocsp_responses")
