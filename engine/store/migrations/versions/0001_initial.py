"""Initial schema: registrations, accounts, certificates, challenges, trust, CRLs, audit log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    # engine.store._models.UTCDateTime stores through this type.
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workflow_definitions",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("hash", name="pk_workflow_definitions"),
    )
    op.create_table(
        "registrations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("chosen_type", sa.String(64), nullable=False),
        sa.Column("applicant_type", sa.String(64), nullable=False),
        sa.Column("workflow_hash", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("locked", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=True),
        sa.Column("certificate_fingerprint", sa.String(64), nullable=True),
        sa.Column("account_name", sa.String(255), nullable=True),
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_hash"],
            ["workflow_definitions.hash"],
            name="fk_registrations_workflow_hash_workflow_definitions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_registrations"),
    )
    op.create_index(
        "ix_registrations_certificate_fingerprint", "registrations", ["certificate_fingerprint"]
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("applicant_type", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), server_default="pending_activation", nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("contact_name", sa.String(200), nullable=False),
        sa.Column("national_id_hash", sa.String(64), nullable=True),
        sa.Column("national_id_masked", sa.String(16), nullable=True),
        sa.Column("ubn", sa.String(8), nullable=True),
        sa.Column("sub_card", sa.String(8), nullable=True),
        sa.Column("oid", sa.String(256), nullable=True),
        sa.Column("company_name", sa.String(200), nullable=True),
        sa.Column("phone", sa.String(40), nullable=False),
        sa.Column("address", sa.String(200), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("iot", sa.Boolean(), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("registration_id", sa.String(36), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("name", name="uq_accounts_name"),
    )
    op.create_index("ix_accounts_national_id_hash", "accounts", ["national_id_hash"])
    op.create_index("ix_accounts_ubn", "accounts", ["ubn"])
    op.create_index("ix_accounts_oid", "accounts", ["oid"])
    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("registration_id", sa.String(36), nullable=True),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("serial_hex", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(1024), nullable=False),
        sa.Column("issuer", sa.String(1024), nullable=False),
        sa.Column("ca", sa.String(16), nullable=False),
        sa.Column("card_rank", sa.String(16), nullable=True),
        sa.Column("not_before", _utc(), nullable=False),
        sa.Column("not_after", _utc(), nullable=False),
        sa.Column("ubn", sa.String(8), nullable=True),
        sa.Column("oid", sa.String(256), nullable=True),
        sa.Column("national_id_hash", sa.String(64), nullable=True),
        sa.Column("query_key", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=True),
        sa.Column("usage_type", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), server_default="active", nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_certificates_account_id_accounts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_certificates"),
        sa.UniqueConstraint("fingerprint", "purpose", name="uq_certificates_fingerprint_purpose"),
    )
    op.create_index("ix_certificates_ubn", "certificates", ["ubn"])
    op.create_index("ix_certificates_oid", "certificates", ["oid"])
    op.create_index("ix_certificates_national_id_hash", "certificates", ["national_id_hash"])
    op.create_index("ix_certificates_query_key", "certificates", ["query_key"])
    op.create_table(
        "challenges",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("registration_id", sa.String(36), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.Column("used_at", _utc(), nullable=True),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["registrations.id"],
            name="fk_challenges_registration_id_registrations",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_challenges"),
    )
    op.create_table(
        "trust_certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("subject", sa.String(1024), nullable=False),
        sa.Column("is_anchor", sa.Boolean(), nullable=False),
        sa.Column("added_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trust_certificates"),
        sa.UniqueConstraint("fingerprint", name="uq_trust_certificates_fingerprint"),
    )
    op.create_table(
        "crls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(1024), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("crl_number", sa.String(80), nullable=True),
        sa.Column("this_update", _utc(), nullable=False),
        sa.Column("next_update", _utc(), nullable=True),
        sa.Column("added_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_crls"),
        sa.UniqueConstraint("fingerprint", name="uq_crls_fingerprint"),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("registration_id", sa.String(36), nullable=True),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=True),
        sa.Column("applicant_type", sa.String(64), nullable=True),
        sa.Column("workflow_hash", sa.String(64), nullable=True),
        sa.Column("diff", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_registration_id", "audit_log", ["registration_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_registration_id", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("crls")
    op.drop_table("trust_certificates")
    op.drop_table("challenges")
    op.drop_index("ix_certificates_query_key", table_name="certificates")
    op.drop_index("ix_certificates_national_id_hash", table_name="certificates")
    op.drop_index("ix_certificates_oid", table_name="certificates")
    op.drop_index("ix_certificates_ubn", table_name="certificates")
    op.drop_table("certificates")
    op.drop_index("ix_accounts_oid", table_name="accounts")
    op.drop_index("ix_accounts_ubn", table_name="accounts")
    op.drop_index("ix_accounts_national_id_hash", table_name="accounts")
    op.drop_table("accounts")
    op.drop_index("ix_registrations_certificate_fingerprint", table_name="registrations")
    op.drop_table("registrations")
    op.drop_table("workflow_definitions")
