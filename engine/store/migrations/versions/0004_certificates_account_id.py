"""An index on certificates.account_id: 通關憑證查詢 by UBN joins the accounts' login certificates.

Without it the query scans every certificate (measured with 1,000,000 stored: p50 586 ms on
SQLite, 99 ms on PostgreSQL; with it 0.77 ms and 2.7 ms, ``make bench``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_certificates_account_id", "certificates", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_certificates_account_id", table_name="certificates")
