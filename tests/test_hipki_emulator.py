"""The HiPKI component emulator (:mod:`engine.testing.hipki`), driven by a client written from
DOMAIN.md §4.1 alone: ``tbsPackage=`` + JSON bodies (``tbs`` and ``pin`` escaped as CHT's
sample does, or not), the ``/p11Image.bmp`` pixels read back as a canvas would, replies checked
field by field, signatures verified with the card certificate's key (and CMS ones by OpenSSL).
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from engine.testing import IssuedCard, TestPKI
from engine.testing.hipki import HiPKICard, HiPKIEmulator, HiPKIReader, info_image

NOW = datetime.now(UTC).replace(microsecond=0)
PIN = "123456"
PORTAL = "https://portal.example"

UNTRUSTED = 0x76000031
FORBIDDEN = 0x7600000F
NO_CARD = 0x76000006
NO_READER = 0x76100003
LOGIN_FAILED = 0x76100006
BASE64_ERROR = 0x76600002
JSON_ERROR = 0x7600000B
PARAMETER_ERROR = 0x7600000C


# -- a client written from DOMAIN.md §4.1 --------------------------------------------------------


def encode_uri_component(text: str) -> str:
    """JavaScript's ``encodeURIComponent``."""
    return quote(text, safe="-_.!~*'()")


def body_of(package: dict[str, Any], *, escape: bool = True) -> bytes:
    """``tbsPackage=`` + the JSON; ``escape``: ``tbs`` and ``pin`` ``encodeURIComponent``-ed as
    in CHT's sample (the rest of the JSON goes as it is)."""
    sent = dict(package)
    if escape:
        for name in ("tbs", "pin"):
            if isinstance(sent.get(name), str):
                sent[name] = encode_uri_component(sent[name])
    return ("tbsPackage=" + json.dumps(sent, ensure_ascii=False)).encode("utf-8")


def sign_package(tbs: str, **extra: str) -> dict[str, Any]:
    package = {
        "func": "MakeSignature",
        "tbs": tbs,
        "tbsEncoding": "base64",
        "hashAlgorithm": "SHA256",
        "signatureType": "PKCS1",
        "pin": PIN,
    }
    package.update(extra)
    return package


def post_sign(
    hipki: HiPKIEmulator, package: dict[str, Any], *, escape: bool = True, origin: str = PORTAL
) -> dict[str, Any]:
    reply = httpx.post(
        hipki.url("/sign"),
        content=body_of(package, escape=escape),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": origin},
    )
    assert reply.status_code == 200
    assert "access-control-allow-origin" not in reply.headers  # no CORS on JSON replies
    result: dict[str, Any] = reply.json()
    return result


def read_image(bmp: bytes) -> dict[str, Any]:
    """What a page gets from ``/p11Image.bmp``: the pixels drawn on a canvas (R, G, B), read as
    B, G, R characters until a pixel whose blue is 0."""
    assert bmp[:2] == b"BM"
    (offset,) = struct.unpack_from("<I", bmp, 10)
    width, _height, _planes, bits = struct.unpack_from("<iiHH", bmp, 18)
    assert bits == 24
    text = ""
    for index in range(width):
        blue, green, red = bmp[offset + 3 * index : offset + 3 * index + 3]  # BMP stores B, G, R
        canvas = (red, green, blue, 255)  # getImageData: R, G, B, A
        if canvas[2] == 0:
            break
        text += chr(canvas[2]) + chr(canvas[1]) + chr(canvas[0])
    result: dict[str, Any] = json.loads(text)
    return result


def challenge(*, plus: bool | None = True) -> str:
    """Base64 of 96 random bytes, holding a ``+`` (``plus``), or a ``/`` and no ``+`` (False)."""
    while True:
        text = base64.b64encode(secrets.token_bytes(96)).decode()
        if plus is None or (plus and "+" in text) or (not plus and "+" not in text and "/" in text):
            return text


def verify(certificate: x509.Certificate, signature: bytes, data: bytes) -> None:
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI.create(NOW, key_type="rsa")  # MOICA and MOEACA cards hold RSA-2048 keys


@pytest.fixture(scope="module")
def person(pki: TestPKI) -> IssuedCard:
    return pki.issue_person("王小明")


@pytest.fixture(scope="module")
def company(pki: TestPKI) -> IssuedCard:
    return pki.issue_company("04595257", "測試股份有限公司")


_PKCS12: dict[bytes, bytes] = {}


def card_of(issued: IssuedCard, **options: Any) -> HiPKICard:
    """A fresh card (PIN tries full) from the card's PKCS#12, made once per certificate."""
    data = _PKCS12.setdefault(issued.der(), TestPKI.pkcs12_bytes(issued, PIN))
    return HiPKICard.from_pkcs12(data, PIN, **options)


@pytest.fixture
def hipki(person: IssuedCard) -> Iterator[HiPKIEmulator]:
    with HiPKIEmulator([HiPKIReader("Reader A 00 00", card_of(person))]) as emulator:
        yield emulator


# -- /p11Image.bmp and /pkcs11info -------------------------------------------------------------


def test_the_image_carries_the_component_json_and_is_the_one_cors_reply(
    person: IssuedCard,
) -> None:
    card = card_of(person, serial_number="TP03123456789012")
    readers = [HiPKIReader("Reader A 00 00"), HiPKIReader("Reader B 00 00", card)]
    with HiPKIEmulator(readers, server_version="1.3.4.9") as hipki:
        reply = httpx.get(hipki.url("/p11Image.bmp"), headers={"Origin": PORTAL})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "image/bmp"
    assert reply.headers["access-control-allow-origin"] == "*"
    info = read_image(reply.content)
    assert (info["func"], info["ret_code"], info["last_error"]) == ("pkcs11info", 0, 0)
    assert info["serverVersion"] == "1.3.4.9"
    assert [slot["slotDescription"] for slot in info["slots"]] == [
        "Reader A 00 00",
        "Reader B 00 00",
    ]
    assert info["slots"][0]["token"] is None  # a reader without a card
    assert info["slots"][1]["token"]["serialNumber"] == "TP03123456789012"
    assert "certs" not in info["slots"][1]["token"]


def test_the_image_reads_back_whatever_the_payload_length() -> None:
    for payload in (b'{"a":1}', b'{"a":12}', b'{"a":123}'):  # 7, 8, 9 bytes: 2 or 0 pad bytes
        assert read_image(info_image(payload)) == json.loads(payload)


def test_pkcs11info_without_cors_and_an_empty_slot_as_unknown_token(person: IssuedCard) -> None:
    readers = [HiPKIReader("Reader A 00 00", card_of(person)), HiPKIReader("Reader B 00 00")]
    with HiPKIEmulator(readers, empty_slot_token="unknown token") as hipki:
        reply = httpx.post(hipki.url("/pkcs11info"), content=b"", headers={"Origin": PORTAL})
        got = httpx.get(hipki.url("/pkcs11info"))
    assert "access-control-allow-origin" not in reply.headers
    info = reply.json()
    assert info == got.json()
    assert info["func"] == "pkcs11info"
    assert info["slots"][1] == {"slotDescription": "Reader B 00 00", "token": "unknown token"}
    for name in ("serverVersion", "version", "libraryDescription", "libraryVersion"):
        assert isinstance(info[name], str)
    for name in ("manufacturerID", "cryptokiVersion", "installedModule"):
        assert name in info


def test_withcert_lists_the_card_chain_and_the_signing_certificate(
    hipki: HiPKIEmulator, person: IssuedCard, pki: TestPKI
) -> None:
    reply = httpx.post(hipki.url("/pkcs11info?withcert=true"), content=b"")
    certs = reply.json()["slots"][0]["token"]["certs"]
    assert [c["label"] for c in certs] == ["Root CA Cert", "CA Cert", "cert1"]
    root, issuer, user = certs
    assert base64.b64decode(root["certb64"]) == TestPKI.der(pki.root.certificate)
    assert base64.b64decode(issuer["certb64"]) == TestPKI.der(person.chain[0])
    assert base64.b64decode(user["certb64"]) == person.der()
    assert user["usage"] == "digitalSignature"
    assert issuer["usage"] == "keyCertSign|cRLSign"
    assert user["subjectDN"].startswith("C=TW,CN=王小明,serialNumber=")
    assert user["issuerDN"] == issuer["subjectDN"]
    assert user["notAfterT"] == int(person.certificate.not_valid_after_utc.timestamp())
    # DOMAIN.md's rule for the signing certificate picks cert1
    signing = [
        c
        for c in certs
        if "digitalSignature" in c["usage"]
        and c["label"].lower() not in ("root ca cert", "ca cert")
    ]
    assert signing == [user]


def test_getusercert_names_one_reader(person: IssuedCard, company: IssuedCard) -> None:
    readers = [
        HiPKIReader("Reader A 00 00", card_of(person)),
        HiPKIReader("Reader B 00 00", card_of(company)),
    ]
    package = {"func": "GetUserCert", "slotDescription": "Reader B 00 00"}
    with HiPKIEmulator(readers) as hipki:
        reply = httpx.post(hipki.url("/pkcs11info?withcert=true"), content=body_of(package))
    slots = reply.json()["slots"]
    assert [slot["slotDescription"] for slot in slots] == ["Reader B 00 00"]
    assert base64.b64decode(slots[0]["token"]["certs"][-1]["certb64"]) == company.der()


def test_no_reader_lists_no_slot_and_cannot_sign() -> None:
    with HiPKIEmulator([]) as hipki:
        info = httpx.get(hipki.url("/pkcs11info")).json()
        reply = post_sign(hipki, sign_package(challenge()))
    assert (info["ret_code"], info["slots"]) == (0, [])
    assert (reply["func"], reply["ret_code"], reply["message"]) == (
        "sign",
        NO_READER,
        "無可用讀卡機",
    )


def test_no_card_in_the_reader() -> None:
    with HiPKIEmulator([HiPKIReader("Reader A 00 00")]) as hipki:
        reply = post_sign(hipki, sign_package(challenge()))
    assert (reply["func"], reply["ret_code"], reply["last_error"]) == ("sign", NO_CARD, 0)
    assert reply["message"] == "未插入IC卡"


# -- /sign -----------------------------------------------------------------------------------------


def test_a_pkcs1_signature_verifies_with_the_card_certificate(
    hipki: HiPKIEmulator, person: IssuedCard
) -> None:
    tbs = challenge()
    reply = post_sign(hipki, sign_package(tbs, withCardSN="true"))
    assert (reply["func"], reply["ret_code"], reply["last_error"]) == ("sign", 0, 0)
    assert reply["version"] == hipki.server_version
    assert reply["cardSN"] == hipki.readers[0].card.serial_number  # type: ignore[union-attr]
    assert base64.b64decode(reply["certb64"]) == person.der()
    certificate = x509.load_der_x509_certificate(base64.b64decode(reply["certb64"]))
    verify(certificate, base64.b64decode(reply["signature"]), base64.b64decode(tbs))


def test_a_none_encoded_tbs_is_signed_as_its_utf8_bytes(
    hipki: HiPKIEmulator, person: IssuedCard
) -> None:
    text = "憑證註冊 challenge 42"
    reply = post_sign(hipki, sign_package(text, tbsEncoding="NONE"))
    assert reply["ret_code"] == 0
    assert "cardSN" not in reply
    verify(person.certificate, base64.b64decode(reply["signature"]), text.encode("utf-8"))


@pytest.mark.parametrize(
    ("name", "algorithm"),
    [("SHA1", hashes.SHA1()), ("SHA384", hashes.SHA384()), ("SHA512", hashes.SHA512())],
)
def test_the_hash_algorithm_is_the_one_asked_for(
    hipki: HiPKIEmulator, person: IssuedCard, name: str, algorithm: hashes.HashAlgorithm
) -> None:
    tbs = challenge()
    reply = post_sign(hipki, sign_package(tbs, hashAlgorithm=name))
    key = person.certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    signature = base64.b64decode(reply["signature"])
    key.verify(signature, base64.b64decode(tbs), padding.PKCS1v15(), algorithm)


def test_a_raw_signature_signs_the_hash_given(hipki: HiPKIEmulator, person: IssuedCard) -> None:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"document")
    hashed = digest.finalize()
    package = sign_package(base64.b64encode(hashed).decode(), signatureType="RAW")
    del package["hashAlgorithm"]
    reply = post_sign(hipki, package)
    key = person.certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    signature = base64.b64decode(reply["signature"])
    key.verify(signature, hashed, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def test_a_pkcs7_signature_is_cms_signed_data_openssl_verifies(
    hipki: HiPKIEmulator, person: IssuedCard, tmp_path: Path
) -> None:
    text = "swreg 登入 challenge 42"
    reply = post_sign(hipki, sign_package(text, tbsEncoding="NONE", signatureType="PKCS7"))
    assert reply["ret_code"] == 0
    signed = tmp_path / "signed.der"
    signed.write_bytes(base64.b64decode(reply["signature"]))
    signer = tmp_path / "signer.pem"
    result = subprocess.run(
        ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(signed), "-noverify",
         "-binary", "-signer", str(signer)],
        capture_output=True,
        check=True,
    )  # fmt: skip
    assert result.stdout == text.encode("utf-8")
    assert x509.load_pem_x509_certificate(signer.read_bytes()) == person.certificate


def test_an_ec_card_answers_pkcs1_with_ecdsa(pki: TestPKI) -> None:
    issued = pki.issue_person("陳小華", key="ec")
    tbs = challenge()
    with HiPKIEmulator([HiPKIReader("Reader A 00 00", card_of(issued))]) as hipki:
        reply = post_sign(hipki, sign_package(tbs))
    verify(issued.certificate, base64.b64decode(reply["signature"]), base64.b64decode(tbs))


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"func": "DecryptData"}, 0x7600000E),  # 不支援的方法
        ({"signatureType": "CMS"}, 0x76300002),  # 簽章型別錯誤
        ({"hashAlgorithm": "sha256"}, PARAMETER_ERROR),  # names are upper case
        ({"tbsEncoding": "hex"}, PARAMETER_ERROR),
        ({"tbs": ""}, 0x76000003),  # 未輸入待簽訊息
        ({"pin": ""}, 0x76000998),  # 未輸入PIN碼
        ({"tbs": "not base64!"}, BASE64_ERROR),
    ],
)
def test_a_bad_package_answers_its_code(
    hipki: HiPKIEmulator, change: dict[str, str], code: int
) -> None:
    reply = post_sign(hipki, {**sign_package(challenge()), **change})
    assert (reply["func"], reply["ret_code"]) == ("sign", code)
    assert hipki.readers[0].card.tries_left == 3  # type: ignore[union-attr]


def test_an_escaped_newline_lands_raw_in_the_json(hipki: HiPKIEmulator, person: IssuedCard) -> None:
    text = "line one\nline two"
    refused = post_sign(hipki, sign_package(text, tbsEncoding="NONE"))
    assert (refused["func"], refused["ret_code"]) == ("sign", JSON_ERROR)
    hipki.json_control_characters = True  # as lenient C JSON parsers take it
    reply = post_sign(hipki, sign_package(text, tbsEncoding="NONE"))
    verify(person.certificate, base64.b64decode(reply["signature"]), text.encode())


def test_a_body_that_is_not_a_package_is_a_json_error(hipki: HiPKIEmulator) -> None:
    for body in (b"", b"tbsPackage={", b"other=1", b'tbsPackage=["MakeSignature"]'):
        reply = httpx.post(hipki.url("/sign"), content=body).json()
        assert (reply["func"], reply["ret_code"]) == ("sign", JSON_ERROR)


# -- strict and lenient decoding -----------------------------------------------------------------


def test_strict_decoding_turns_an_unescaped_plus_into_a_base64_error(
    hipki: HiPKIEmulator,
) -> None:
    tbs = challenge(plus=True)
    reply = post_sign(hipki, sign_package(tbs), escape=False)
    assert (reply["func"], reply["ret_code"], reply["message"]) == (
        "sign",
        BASE64_ERROR,
        "Base64解碼錯誤",
    )
    assert hipki.readers[0].card.tries_left == 3  # type: ignore[union-attr]
    assert post_sign(hipki, sign_package(tbs), escape=True)["ret_code"] == 0


def test_strict_decoding_keeps_a_slash(hipki: HiPKIEmulator, person: IssuedCard) -> None:
    tbs = challenge(plus=False)  # '/' is not special in a form body
    reply = post_sign(hipki, sign_package(tbs), escape=False)
    verify(person.certificate, base64.b64decode(reply["signature"]), base64.b64decode(tbs))


def test_strict_decoding_signs_other_text_when_a_none_tbs_is_unescaped(
    hipki: HiPKIEmulator, person: IssuedCard
) -> None:
    text = "a+b=c&d"
    unescaped = post_sign(hipki, sign_package("a+b", tbsEncoding="NONE"), escape=False)
    verify(person.certificate, base64.b64decode(unescaped["signature"]), b"a b")
    cut = post_sign(hipki, sign_package(text, tbsEncoding="NONE"), escape=False)
    assert cut["ret_code"] == JSON_ERROR  # the '&' ends the form field inside the JSON
    escaped = post_sign(hipki, sign_package(text, tbsEncoding="NONE"), escape=True)
    verify(person.certificate, base64.b64decode(escaped["signature"]), text.encode())


def test_lenient_decoding_takes_unescaped_and_escaped_packages(person: IssuedCard) -> None:
    tbs = challenge(plus=True)
    readers = [HiPKIReader("Reader A 00 00", card_of(person))]
    with HiPKIEmulator(readers, form_decoding="lenient") as hipki:
        for escape in (False, True):
            reply = post_sign(hipki, sign_package(tbs, pin="12+&45%"), escape=escape)
            assert (reply["ret_code"], reply["last_error"]) == (LOGIN_FAILED, -2147483646)
            reply = post_sign(hipki, sign_package(tbs), escape=escape)
            verify(person.certificate, base64.b64decode(reply["signature"]), base64.b64decode(tbs))


def test_a_fully_form_encoded_body_decodes_in_both_models(person: IssuedCard) -> None:
    tbs = challenge(plus=True)
    for decoding in ("strict", "lenient"):
        readers = [HiPKIReader("Reader A 00 00", card_of(person))]
        with HiPKIEmulator(readers, form_decoding=decoding) as hipki:  # type: ignore[arg-type]
            body = "tbsPackage=" + quote(json.dumps(sign_package(tbs)), safe="")
            reply = httpx.post(hipki.url("/sign"), content=body.encode()).json()
        assert reply["ret_code"] == 0, decoding


# -- PINs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "two_left", "one_left"),
    [(32, -2147483646, -2147483647), (64, 0xFFFFFFFF80000002, 0xFFFFFFFF80000001)],
)
def test_wrong_pins_count_down_to_a_locked_card(
    person: IssuedCard, bits: int, two_left: int, one_left: int
) -> None:
    card = card_of(person)
    with HiPKIEmulator([HiPKIReader("Reader A 00 00", card)], last_error_bits=bits) as hipki:  # type: ignore[arg-type]
        answers = [post_sign(hipki, sign_package(challenge(), pin="654321")) for _ in range(3)]
        after = post_sign(hipki, sign_package(challenge()))
    assert [(a["ret_code"], a["last_error"]) for a in answers] == [
        (LOGIN_FAILED, two_left),
        (LOGIN_FAILED, one_left),
        (LOGIN_FAILED, 0xA4),
    ]
    assert answers[0]["message"] == "IC卡登入失敗"
    assert (after["ret_code"], after["last_error"]) == (LOGIN_FAILED, 0xA4)  # the right PIN too
    assert "signature" not in after
    assert card.locked


def test_a_good_pin_resets_the_count(hipki: HiPKIEmulator) -> None:
    first = post_sign(hipki, sign_package(challenge(), pin="654321"))
    assert first["last_error"] == -2147483646
    assert post_sign(hipki, sign_package(challenge()))["ret_code"] == 0
    again = post_sign(hipki, sign_package(challenge(), pin="654321"))
    assert again["last_error"] == -2147483646


def test_a_pin_of_the_wrong_length_uses_no_try(hipki: HiPKIEmulator) -> None:
    for pin in ("12345", "123456789"):
        reply = post_sign(hipki, sign_package(challenge(), pin=pin))
        assert (reply["ret_code"], reply["last_error"]) == (LOGIN_FAILED, 0xA2)
    assert hipki.readers[0].card.tries_left == 3  # type: ignore[union-attr]


def test_more_tries_than_the_counted_ones_answer_a_plain_pin_error(person: IssuedCard) -> None:
    card = card_of(person, max_tries=5)
    with HiPKIEmulator([HiPKIReader("Reader A 00 00", card)]) as hipki:
        codes = [post_sign(hipki, sign_package(challenge(), pin="000000")) for _ in range(5)]
    assert [c["last_error"] for c in codes] == [0xA0, 0xA0, -2147483646, -2147483647, 0xA4]


def test_a_locked_card(person: IssuedCard) -> None:
    card = card_of(person, tries_left=0)
    with HiPKIEmulator([HiPKIReader("Reader A 00 00", card)]) as hipki:
        reply = post_sign(hipki, sign_package(challenge()))
    assert (reply["func"], reply["ret_code"], reply["last_error"]) == ("sign", LOGIN_FAILED, 0xA4)


# -- readers ---------------------------------------------------------------------------------------


def test_two_readers_sign_with_the_reader_named(person: IssuedCard, company: IssuedCard) -> None:
    readers = [
        HiPKIReader("Reader A 00 00"),
        HiPKIReader("Reader B 00 00", card_of(person)),
        HiPKIReader("Reader C 00 00", card_of(company)),
    ]
    tbs = challenge()
    with HiPKIEmulator(readers) as hipki:
        named = post_sign(hipki, sign_package(tbs, slotDescription="Reader C 00 00"))
        first = post_sign(hipki, sign_package(tbs))
        empty = post_sign(hipki, sign_package(tbs, slotDescription="Reader A 00 00"))
        unknown = post_sign(hipki, sign_package(tbs, slotDescription="Reader Z 00 00"))
    assert base64.b64decode(named["certb64"]) == company.der()
    verify(company.certificate, base64.b64decode(named["signature"]), base64.b64decode(tbs))
    assert base64.b64decode(first["certb64"]) == person.der()  # the first reader with a card
    assert empty["ret_code"] == NO_CARD
    assert unknown["ret_code"] == PARAMETER_ERROR


def test_cards_come_and_go_while_it_runs(hipki: HiPKIEmulator, person: IssuedCard) -> None:
    card = hipki.readers[0].card
    hipki.readers[0].card = None
    assert post_sign(hipki, sign_package(challenge()))["ret_code"] == NO_CARD
    hipki.reader("Reader A 00 00").card = card
    assert post_sign(hipki, sign_package(challenge()))["ret_code"] == 0


# -- trusted sites ---------------------------------------------------------------------------------


def test_an_untrusted_site_gets_0x76000031_until_it_is_added(person: IssuedCard) -> None:
    readers = [HiPKIReader("Reader A 00 00", card_of(person))]
    with HiPKIEmulator(readers, trusted_hosts=()) as hipki:
        image = read_image(
            httpx.get(hipki.url("/p11Image.bmp"), headers={"Origin": PORTAL}).content
        )
        info = httpx.post(hipki.url("/pkcs11info"), headers={"Origin": PORTAL}).json()
        sign = post_sign(hipki, sign_package(challenge(), pin="000000"))
        page = httpx.get(hipki.url("/addDomain?domain=portal.example"))
        added = httpx.post(
            hipki.url("/addDomain"),
            content=b"domain=portal.example&answer=yes",
            headers={"Origin": hipki.origin},
        ).json()
        after = post_sign(hipki, sign_package(challenge()))
    assert image == {
        "func": "pkcs11info",
        "ret_code": UNTRUSTED,
        "last_error": 0,
        "message": "非信任網站",
    }
    assert (info["func"], info["ret_code"], "slots" in info) == ("pkcs11info", UNTRUSTED, False)
    assert (sign["func"], sign["ret_code"]) == ("sign", UNTRUSTED)
    assert page.status_code == 200
    assert 'id="confirm"' in page.text and "portal.example" in page.text
    assert added == {"func": "addDomain", "ret_code": 0, "last_error": 0}
    assert hipki.trusted_hosts == {"portal.example"}
    assert after["ret_code"] == 0
    assert hipki.readers[0].card.tries_left == 3  # type: ignore[union-attr]


def test_only_the_emulator_own_page_adds_a_site(hipki: HiPKIEmulator) -> None:
    hipki.trusted_hosts = set()
    answers = [
        httpx.post(hipki.url("/addDomain"), content=body, headers=headers).json()
        for body, headers in [
            (b"domain=portal.example&answer=yes", {"Origin": "https://evil.example"}),
            (b"domain=portal.example&answer=yes", {}),
            (b"domain=portal.example&answer=no", {"Origin": hipki.origin}),
            (b"domain=&answer=yes", {"Origin": hipki.origin}),
        ]
    ]
    assert [a["ret_code"] for a in answers] == [FORBIDDEN, FORBIDDEN, 0x76000999, PARAMETER_ERROR]
    assert hipki.trusted_hosts == set()


def test_the_site_is_the_origin_or_the_referer_or_the_popup_opener(hipki: HiPKIEmulator) -> None:
    hipki.trusted_hosts = {"portal.example"}
    body = body_of(sign_package(challenge()))
    cases = [
        ({"Origin": PORTAL}, 0),
        ({"Referer": "https://evil.example/page"}, UNTRUSTED),
        ({"Referer": PORTAL + "/register"}, 0),
        ({}, 0),  # a local program, not a page
        ({"Origin": "null"}, UNTRUSTED),
        ({"Origin": hipki.origin, "X-HiPKI-Emulator-Opener": "https://evil.example"}, UNTRUSTED),
        ({"Origin": hipki.origin, "X-HiPKI-Emulator-Opener": PORTAL}, 0),
        ({"Origin": "https://evil.example", "X-HiPKI-Emulator-Opener": PORTAL}, UNTRUSTED),
    ]
    for headers, code in cases:
        reply = httpx.post(hipki.url("/sign"), content=body, headers=headers).json()
        assert reply["ret_code"] == code, headers


def test_no_site_may_send_the_opener_header_across_origins(hipki: HiPKIEmulator) -> None:
    preflight = httpx.request(
        "OPTIONS",
        hipki.url("/sign"),
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-hipki-emulator-opener",
        },
    )
    assert preflight.status_code >= 400
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-headers" not in preflight.headers


def test_a_forbidden_site_gets_0x7600000f(person: IssuedCard) -> None:
    readers = [HiPKIReader("Reader A 00 00", card_of(person))]
    with HiPKIEmulator(readers, forbidden_hosts={"portal.example"}) as hipki:
        reply = post_sign(hipki, sign_package(challenge()))
        added = httpx.post(
            hipki.url("/addDomain"),
            content=b"domain=portal.example&answer=yes",
            headers={"Origin": hipki.origin},
        ).json()
    assert (reply["func"], reply["ret_code"], reply["message"]) == (
        "sign",
        FORBIDDEN,
        "禁止存取的網域",
    )
    assert added["ret_code"] == FORBIDDEN


# -- pages, validity, failures ---------------------------------------------------------------------


def test_the_popup_page_is_served_to_any_site(hipki: HiPKIEmulator) -> None:
    hipki.trusted_hosts = set()
    reply = httpx.get(hipki.url("/popupForm"), headers={"Referer": PORTAL + "/"})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert '"getTbs"' in reply.text
    assert httpx.get(hipki.url("/sign")).status_code == 405


def test_an_expired_card_certificate_is_refused_unless_told_otherwise(pki: TestPKI) -> None:
    issued = pki.issue_person(
        valid_from=NOW - timedelta(days=800), valid_to=NOW - timedelta(days=1)
    )
    readers = [HiPKIReader("Reader A 00 00", card_of(issued))]
    with HiPKIEmulator(readers) as hipki:
        refused = post_sign(hipki, sign_package(challenge()))
        hipki.check_validity = False
        signed = post_sign(hipki, sign_package(challenge()))
    assert (refused["ret_code"], refused["message"]) == (0x76500002, "憑證已逾期")
    assert signed["ret_code"] == 0


def test_an_absent_component_refuses_connections() -> None:
    with HiPKIEmulator(absent=True) as hipki:
        assert hipki.port > 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(hipki.url("/p11Image.bmp"))


def test_a_component_that_never_answers(hipki: HiPKIEmulator) -> None:
    hipki.hang = True
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(hipki.url("/p11Image.bmp"), timeout=0.5)
    assert hipki.requests[-1].path == "/p11Image.bmp"
