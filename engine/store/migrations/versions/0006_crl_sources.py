"""Fetched CRLs (issue 14): the distribution points ``swreg revocation refresh`` re-requests,
and on each stored CRL the issuer key, the partition and the URL it came from.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    # engine.store._models.UTCDateTime stores through this type.
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("crls") as batch:
        batch.add_column(sa.Column("issuer_key_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("partition", sa.String(4096), nullable=True))
        batch.add_column(sa.Column("source_url", sa.String(2048), nullable=True))
        batch.create_index("ix_crls_issuer_key_id", ["issuer_key_id"])
    op.create_table(
        "crl_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("etag", sa.String(1024), nullable=True),
        sa.Column("last_modified", sa.String(64), nullable=True),
        sa.Column("checked_at", _utc(), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.Column("added_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_crl_sources"),
        sa.UniqueConstraint("url", name="uq_crl_sources_url"),
    )


def downgrade() -> None:
    op.drop_table("crl_sources")
    with op.batch_alter_table("crls") as batch:
        batch.drop_index("ix_crls_issuer_key_id")
        batch.drop_column("source_url")
        batch.drop_column("partition")
        batch.drop_column("issuer_key_id")
