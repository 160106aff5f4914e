"""``SWREG_REVOCATION_CAS``: per-CA revocation settings from a TOML file (DESIGN.md §4a)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from engine._errors import UsageError
from engine._settings import CaRevocation, RevocationSourceKind, Settings

MOICA = "3f" * 32
MOEACA = "a8" * 32


def settings_from(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "cas.toml"
    path.write_text(text, encoding="utf-8")
    return Settings.from_env({"SWREG_REVOCATION_CAS": str(path)})


def test_unset_means_every_ca_asks_ocsp_then_crls() -> None:
    assert Settings.from_env({}).revocation_cas == {}
    assert CaRevocation().sources == (RevocationSourceKind.OCSP, RevocationSourceKind.CRL)


def test_each_table_sets_one_ca_by_its_fingerprint(tmp_path: Path) -> None:
    colons = ":".join(MOEACA.upper()[i : i + 2] for i in range(0, 64, 2))
    found = settings_from(
        tmp_path,
        f'["{MOICA}"]\nsources = ["crl"]\n'
        f'["{colons}"]\nsources = ["crl", "ocsp"]\nocsp_url = "http://ocsp.moeaca.nat.gov.tw/"\n'
        'ocsp_nonce = "required"\nocsp_max_age = "30m"\n',
    ).revocation_cas
    assert found == {
        MOICA: CaRevocation(sources=(RevocationSourceKind.CRL,)),
        MOEACA: CaRevocation(
            sources=(RevocationSourceKind.CRL, RevocationSourceKind.OCSP),
            ocsp_url="http://ocsp.moeaca.nat.gov.tw/",
            ocsp_nonce_required=True,
            ocsp_max_age=timedelta(minutes=30),
        ),
    }


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('["moica"]\nsources = ["crl"]\n', "SHA-256 fingerprint"),
        (f'["{MOICA}"]\nsource = ["crl"]\n', "unknown setting 'source'"),
        (f'["{MOICA}"]\nsources = []\n', "sources is a list"),
        (f'["{MOICA}"]\nsources = ["crl", "crl"]\n', "sources is a list"),
        (f'["{MOICA}"]\nsources = ["ldap"]\n', "sources is a list"),
        (f'["{MOICA}"]\nocsp_url = "ldap://x/"\n', "ocsp_url is an http(s) URL"),
        (f'["{MOICA}"]\nocsp_nonce = "yes"\n', "ocsp_nonce is"),
        (f'["{MOICA}"]\nocsp_max_age = "soon"\n', "ocsp_max_age"),
        (f'["{MOICA}"\n', "SWREG_REVOCATION_CAS"),  # not TOML
    ],
)
def test_a_mistake_is_a_usage_error_naming_the_setting(
    tmp_path: Path, text: str, said: str
) -> None:
    with pytest.raises(UsageError) as caught:
        settings_from(tmp_path, text)
    assert said in str(caught.value.detail)
    assert "SWREG_REVOCATION_CAS" in str(caught.value.detail)


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        Settings.from_env({"SWREG_REVOCATION_CAS": str(tmp_path / "none.toml")})
    assert "SWREG_REVOCATION_CAS" in str(caught.value.detail)
