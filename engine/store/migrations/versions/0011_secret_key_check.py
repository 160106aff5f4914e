"""Rotating ``SWREG_SECRET_KEY`` (issue 18): which keyring the keyed hashes are under.

``secret_key_check``: one row (``id`` 1) holding the keyed hash of a fixed text under the
keyring (``marker``), the newest key's short fingerprint and the number of keys. A database made
before it adopts the keyring of its first start (``engine/services/secret_keys.py``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "secret_key_check",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("marker", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(8), nullable=False),
        sa.Column("key_count", sa.Integer(), nullable=False),
        # engine.store._models.UTCDateTime stores through this type.
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_secret_key_check"),
    )


def downgrade() -> None:
    op.drop_table("secret_key_check")
