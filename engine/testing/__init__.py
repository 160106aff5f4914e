"""Test material for swreg: a GPKI-shaped test PKI and card certificates (測試用, never production).

Used by the test suite, ``swreg demo`` and plugin authors' tests::

    from engine.testing import TestPKI

    pki = TestPKI.create(now)
    card = pki.issue_company("04595257", "測試公司")

The pytest fixtures for plugin authors (``swreg_pki``, ``swreg_app``, ``swreg_register``, ...)
live in :mod:`engine.testing.pytest_plugin`, which pytest loads through the ``pytest11`` entry
point (docs/plugins.md §6). It is not imported here: ``swreg demo`` does not need pytest.
"""

from engine.testing.pki import (
    SUBJECT_CLASS_AGENCY,
    SUBJECT_CLASS_CITIZEN,
    SUBJECT_CLASS_COMPANY,
    SUBJECT_CLASS_ORGANIZATION,
    TEST_POLICY_OID,
    IssuedCard,
    KeyType,
    TestCA,
    TestPKI,
    pkcs12_bytes,
    write_pem,
    write_pkcs12,
)

__all__ = [
    "SUBJECT_CLASS_AGENCY",
    "SUBJECT_CLASS_CITIZEN",
    "SUBJECT_CLASS_COMPANY",
    "SUBJECT_CLASS_ORGANIZATION",
    "TEST_POLICY_OID",
    "IssuedCard",
    "KeyType",
    "TestCA",
    "TestPKI",
    "pkcs12_bytes",
    "write_pem",
    "write_pkcs12",
]
