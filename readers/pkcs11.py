"""Cards behind a PKCS#11 module, named by RFC 7512 URIs (``pkcs11:token=…?module-path=…``).

Any PKCS#11 module works: Chunghwa Telecom's ``libHicos_p11.so`` and the independent
``openhicos-pkcs11`` for MOICA/MOEACA cards, OpenSC's ``opensc-pkcs11.so`` for PIV tokens, SoftHSM2
(DOMAIN.md §4.2, RECIPES.md §7).

The URI (RFC 7512) names the module and, optionally, the token and the object::

    pkcs11:token=swreg-test;object=card?module-path=/usr/lib/softhsm/libsofthsm2.so
    pkcs11:id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so
    pkcs11:?module-path=/usr/lib/softhsm/libsofthsm2.so      (every token of the module)

Path attributes: ``token``, ``manufacturer``, ``serial``, ``model``, ``slot-description``,
``slot-id`` (decimal), ``object`` (the label of the certificate or its key), ``id`` (the CKA_ID,
%-escaped bytes) and ``type`` (``cert``, ``private`` or ``public``). Query attributes:
``module-path`` (absolute). Without ``module-path`` the modules of ``SWREG_PKCS11_MODULES``
(comma-separated absolute paths) are searched. ``pin-value`` and ``pin-source`` are refused: the
PIN never comes from a card spec (it would end up in shell history and process lists), and so is
``module-name`` (give the path). Any other attribute, a repeated attribute or a bad %-escape is
refused too: a URI this bridge cannot honour exactly is not silently widened.

The signing certificate is the URI's object when it names one; otherwise the end-entity
certificate whose keyUsage has digitalSignature or nonRepudiation (nonRepudiation preferred) and
whose private key — paired by CKA_ID — may sign (CKA_SIGN); keys a token hides until login do not
rule a certificate out. One certificate under several IDs (OpenSC shows a PIV card's 9A and 9C
so when both hold the same certificate) is one key pair, not an ambiguity: the ID whose key has
``CKA_ALWAYS_AUTHENTICATE`` (PIV 9C, the signature key) is taken, else the lowest ID. Such a key
is signed with after ``C_Login(CKU_CONTEXT_SPECIFIC)``, so the card keeps the verified PIN until
it logs out (closing, or the next ``verify_pin``). The chain is the certificates on the token
whose basicConstraints say cA. Signing hashes with SHA-256 and signs with
``CKM_SHA256_RSA_PKCS`` (``CKM_RSA_PKCS`` over a DigestInfo when the token lacks it) or with
``CKM_ECDSA`` over the digest, whose raw ``r‖s`` is returned DER-encoded.

Module errors become ``engine`` errors here, at the edge: a wrong PIN is
``CardError("pin_incorrect", tries_left=N)`` — ``N`` is 1 when the token flags
``CKF_USER_PIN_FINAL_TRY``, otherwise ``None`` (``CKF_USER_PIN_COUNT_LOW`` says a wrong PIN was
entered, not how many tries are left; SoftHSM2 sets only that one and never locks; OpenSC with a
PIV card sets none after the first wrong PIN of three, FINAL_TRY at one left, and
``CKF_USER_PIN_LOCKED`` after the wrong PIN that locked the card, which is then reported as
``card_locked``); a locked PIN is ``CardError("card_locked")``; a module that cannot be
loaded, a slot without a token and a token removed are ``EnvironmentProblem`` (``no_reader`` /
``no_card``); a malformed URI or one matching several tokens or certificates is a
``UsageError``; anything else the module reports is ``CardError("card_error")`` naming the
PKCS#11 error, never data.

**Binding: python-pkcs11** (pyauth/python-pkcs11), chosen over PyKCS11:

* maintained (0.10.x in 2026, pyauth organisation), MIT-licensed — PyKCS11 is GPL-2.0+, which
  does not sit with this Apache-2.0 project;
* manylinux/macOS/Windows wheels for CPython 3.11 (PyKCS11 needs SWIG and a compiler where it has
  no wheel);
* typed: ships ``py.typed`` and stubs for its Cython core; PyKCS11 has no annotations;
* one exception class per ``CKR_*`` (``PinIncorrect``, ``PinLocked``, ``TokenNotPresent``…), so
  ``C_Login`` errors are caught by type instead of by comparing return-value numbers;
* ECDSA: both return the raw ``r‖s`` of ``CKM_ECDSA`` (PKCS#11 §2.3.1); this module converts it
  to DER with ``cryptography``;
* threads: python-pkcs11 releases the GIL around module calls but calls ``C_Initialize(NULL)``,
  which lets a module assume one thread at a time; every call into a module goes through that
  module's lock here (the agent runs card calls in worker threads).

A limit of the binding: ``Token.open(user_pin=…)`` does not close the session it opened when
``C_Login`` fails, so each wrong PIN leaves one public (not logged-in) session open until the
process ends. Closing a card logs the token out (``C_Logout`` ends the login of every session).

Importing this module registers nothing; :mod:`readers` registers the ``pkcs11`` scheme and imports
this module (and the binding) on first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass, SlotFlag, TokenFlag
from pkcs11 import exceptions as p11

from engine import CardError, EnvironmentProblem, ErrorCode, UsageError

from . import ReaderInfo

__all__ = [
    "MODULES_ENV",
    "SCHEME",
    "Pkcs11Card",
    "Pkcs11Uri",
    "configured_modules",
    "list_tokens",
    "open_pkcs11",
    "parse_uri",
    "token_uri",
]

SCHEME = "pkcs11"
MODULES_ENV = "SWREG_PKCS11_MODULES"
"""Comma-separated absolute paths of PKCS#11 modules that ``readers list`` shows and that a URI
without ``module-path`` searches."""

_PATH_ATTRIBUTES = frozenset(
    {"token", "manufacturer", "serial", "model", "slot-description", "slot-id", "object", "id",
     "type"}
)  # fmt: skip
_QUERY_ATTRIBUTES = frozenset({"module-path"})
_NO_PIN = "the PIN never comes from a card spec; it is asked for (or read with --pin-stdin)"
_REFUSED = {
    "pin-value": _NO_PIN,
    "pin-source": _NO_PIN,
    "module-name": "name the module by its absolute path with module-path=",
}
_TYPES = frozenset({"cert", "private", "public"})
_HEX = frozenset("0123456789abcdefABCDEF")

# DigestInfo prefix of SHA-256 (RFC 8017 §9.2 note 1), for tokens without CKM_SHA256_RSA_PKCS.
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


# -- URIs --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pkcs11Uri:
    """The parts of an RFC 7512 URI this bridge honours; ``None`` matches anything."""

    module_path: str | None = None
    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    slot_description: str | None = None
    slot_id: int | None = None
    object: str | None = None
    id: bytes | None = None
    type: str | None = None

    @property
    def names_object(self) -> bool:
        return self.object is not None or self.id is not None


def _unescape(name: str, value: str) -> bytes:
    """Percent-decode ``value`` (RFC 3986 §2.1); refuses a ``%`` without two hex digits."""
    out = bytearray()
    i = 0
    while i < len(value):
        char = value[i]
        if char == "%":
            pair = value[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise UsageError(detail=f"pkcs11 URI: bad %-escape in {name}={value!r}")
            out.append(int(pair, 16))
            i += 3
            continue
        out += char.encode("utf-8")
        i += 1
    return bytes(out)


def _text(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(detail=f"pkcs11 URI: {name} is not UTF-8") from None


def _attributes(part: str, separator: str, allowed: frozenset[str], where: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for item in part.split(separator) if part else ():
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise UsageError(detail=f"pkcs11 URI: {item!r} is not NAME=VALUE")
        name = name.lower()
        if name in _REFUSED:
            raise UsageError(detail=f"pkcs11 URI: {name} is refused: {_REFUSED[name]}")
        if name not in allowed:
            raise UsageError(detail=f"pkcs11 URI: unsupported {where} attribute {name!r}")
        if name in found:
            raise UsageError(detail=f"pkcs11 URI: {name} appears twice")
        found[name] = _unescape(name, value)
    return found


def parse_uri(spec: str) -> Pkcs11Uri:
    """Parse ``pkcs11:PATH[?QUERY]`` (the ``pkcs11:`` prefix may be left out).

    Raises :class:`~engine.UsageError` for a refused, unknown or repeated attribute, a bad
    %-escape, a ``slot-id`` that is not decimal, an unknown ``type`` or a ``module-path`` that
    is empty or relative.
    """
    body = spec[len(SCHEME) + 1 :] if spec.lower().startswith(f"{SCHEME}:") else spec
    if "#" in body:
        raise UsageError(detail="pkcs11 URI: a fragment (#) is not allowed")
    path, _, query = body.partition("?")
    attrs = _attributes(path, ";", _PATH_ATTRIBUTES, "path")
    queried = _attributes(query, "&", _QUERY_ATTRIBUTES, "query")
    text = {name: _text(name, raw) for name, raw in attrs.items() if name != "id"}
    slot_id: int | None = None
    if "slot-id" in text:
        if not text["slot-id"].isdecimal() or not text["slot-id"].isascii():
            raise UsageError(detail=f"pkcs11 URI: slot-id must be decimal, not {text['slot-id']!r}")
        slot_id = int(text["slot-id"])
    if "type" in text and text["type"] not in _TYPES:
        raise UsageError(
            detail=f"pkcs11 URI: type must be one of cert, private, public, not {text['type']!r}"
        )
    module_path: str | None = None
    if "module-path" in queried:
        module_path = _text("module-path", queried["module-path"])
        if not module_path or not os.path.isabs(module_path):
            raise UsageError(
                detail=f"pkcs11 URI: module-path must be an absolute path, not {module_path!r}"
            )
    return Pkcs11Uri(
        module_path=module_path,
        token=text.get("token"),
        manufacturer=text.get("manufacturer"),
        serial=text.get("serial"),
        model=text.get("model"),
        slot_description=text.get("slot-description"),
        slot_id=slot_id,
        object=text.get("object"),
        id=attrs.get("id"),
        type=text.get("type"),
    )


def _escape(value: str) -> str:
    return quote(value, safe="")


def token_uri(module_path: str, token_label: str) -> str:
    """The URI of one token of a module, as ``readers list`` shows it."""
    return f"{SCHEME}:token={_escape(token_label)}?module-path={quote(module_path, safe='/')}"


# -- modules -----------------------------------------------------------------------------------


_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock(path: str) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.RLock())


def configured_modules(environ: Mapping[str, str] | None = None) -> list[str]:
    """The module paths of ``SWREG_PKCS11_MODULES`` (empty entries dropped).

    Raises :class:`~engine.UsageError` for a relative path.
    """
    value = (os.environ if environ is None else environ).get(MODULES_ENV, "")
    paths = [p.strip() for p in value.split(",") if p.strip()]
    for path in paths:
        if not os.path.isabs(path):
            raise UsageError(detail=f"{MODULES_ENV}: {path!r} is not an absolute path")
    return paths


def _load(path: str) -> Any:
    """The loaded, initialised module at ``path`` (python-pkcs11 keeps one per path)."""
    if not Path(path).is_file():
        raise EnvironmentProblem(
            ErrorCode.NO_READER,
            detail=f"PKCS#11 module {path} not found; install its card software",
        )
    with _lock(path):
        try:
            return pkcs11.lib(path)
        except p11.PKCS11Error as exc:
            raise EnvironmentProblem(
                ErrorCode.NO_READER,
                detail=f"PKCS#11 module {path} could not be loaded ({type(exc).__name__})",
            ) from exc


@contextlib.contextmanager
def _translated(path: str) -> Iterator[None]:
    """Run module calls under the module's lock; turn their errors into engine errors."""
    with _lock(path):
        try:
            yield
        except (p11.TokenNotPresent, p11.DeviceRemoved, p11.TokenNotRecognised) as exc:
            raise EnvironmentProblem(
                ErrorCode.NO_CARD, detail=f"the token is gone ({type(exc).__name__})"
            ) from exc
        except (p11.SessionClosed, p11.SessionHandleInvalid) as exc:
            raise EnvironmentProblem(
                ErrorCode.NO_CARD, detail=f"the token session ended ({type(exc).__name__})"
            ) from exc
        except p11.PinLocked as exc:
            raise CardError(ErrorCode.CARD_LOCKED) from exc
        except p11.UserNotLoggedIn as exc:
            raise CardError(ErrorCode.CARD_ERROR, detail="PIN not verified") from exc
        except p11.PKCS11Error as exc:
            raise CardError(
                ErrorCode.CARD_ERROR, detail=f"the PKCS#11 module failed ({type(exc).__name__})"
            ) from exc
        except NotImplementedError as exc:  # python-pkcs11 cannot decode a vendor attribute
            raise CardError(
                ErrorCode.CARD_ERROR, detail="the token answered with an attribute it cannot read"
            ) from exc


def _attribute(obj: Any, attribute: Attribute, default: Any) -> Any:
    """``obj[attribute]``, or ``default`` when the token does not have or show it."""
    try:
        value = obj[attribute]
    except (p11.PKCS11Error, NotImplementedError):
        return default
    return default if value is None else value


@dataclass(frozen=True, slots=True)
class _Found:
    path: str
    slot: Any
    token: Any | None  # None: the slot has no (initialised) token


def _slots(path: str, lib: Any) -> list[_Found]:
    found: list[_Found] = []
    with _translated(path):
        for slot in lib.get_slots(token_present=False):
            token = None
            if slot.flags & SlotFlag.TOKEN_PRESENT:
                with contextlib.suppress(p11.TokenNotPresent, p11.TokenNotRecognised):
                    token = slot.get_token()
            if token is not None and not token.flags & TokenFlag.TOKEN_INITIALIZED:
                token = None  # SoftHSM2's free slot, a blank card: nothing to sign with
            found.append(_Found(path, slot, token))
    return found


def _matches(uri: Pkcs11Uri, found: _Found) -> bool:
    slot, token = found.slot, found.token
    if uri.slot_id is not None and slot.slot_id != uri.slot_id:
        return False
    if uri.slot_description is not None and slot.slot_description != uri.slot_description:
        return False
    if token is None:
        return False
    wanted = (
        (uri.token, token.label),
        (uri.manufacturer, token.manufacturer_id),
        (uri.model, token.model),
        (uri.serial, token.serial.decode("ascii", "replace")),
    )
    return all(want is None or want == have for want, have in wanted)


def _describe(found: _Found) -> str:
    label = found.token.label if found.token is not None else "no token"
    return f"{label!r} in {found.slot.slot_description!r} (slot-id={found.slot.slot_id})"


def list_tokens(modules: Sequence[str] | None = None) -> list[ReaderInfo]:
    """Every slot of ``modules`` (default: :func:`configured_modules`) as a reader.

    ``name`` is the slot description (for OpenSC the PC/SC reader's name), ``token`` the token's
    label, ``card_present`` whether an initialised token sits in the slot, ``bridge`` is
    ``"pkcs11"`` and ``spec`` the ``--card`` URI of the token.
    """
    infos: list[ReaderInfo] = []
    for path in configured_modules() if modules is None else modules:
        lib = _load(path)
        for found in _slots(path, lib):
            token = found.token
            infos.append(
                ReaderInfo(
                    name=found.slot.slot_description,
                    card_present=token is not None,
                    profile=None,
                    bridge=SCHEME,
                    token=None if token is None else token.label,
                    spec=None if token is None else token_uri(path, token.label),
                )
            )
    return infos


# -- the card ----------------------------------------------------------------------------------


def open_pkcs11(target: str, *, allowed_modules: Sequence[str] | None = None) -> Pkcs11Card:
    """Open the one token that the URI ``pkcs11:TARGET`` names.

    ``allowed_modules``: when given, only these module paths may be loaded (a URI naming another
    is a ``UsageError``) — for callers whose spec comes from elsewhere than the user.
    Raises ``UsageError`` for a bad URI or several matching tokens, ``EnvironmentProblem``
    (``no_reader``: module missing or without slots; ``no_card``: no matching token).
    """
    uri = parse_uri(target)
    if uri.module_path is not None:
        modules = [uri.module_path]
    else:
        modules = list(allowed_modules) if allowed_modules is not None else configured_modules()
        if not modules:
            raise UsageError(
                detail=f"pkcs11 URI: give ?module-path=/path/to/module.so (or set {MODULES_ENV})"
            )
    if allowed_modules is not None:
        for path in modules:
            if path not in allowed_modules:
                raise UsageError(detail=f"PKCS#11 module {path} is not enabled")
    slots = [found for path in modules for found in _slots(path, _load(path))]
    if not slots:
        raise EnvironmentProblem(ErrorCode.NO_READER, detail="the PKCS#11 module has no slot")
    matching = [found for found in slots if _matches(uri, found)]
    if not matching:
        present = "; ".join(sorted(_describe(found) for found in slots if found.token is not None))
        raise EnvironmentProblem(
            ErrorCode.NO_CARD, detail=f"no token matches the URI; tokens: {present or 'none'}"
        )
    if len(matching) > 1:
        names = "; ".join(sorted(_describe(found) for found in matching))
        raise UsageError(detail=f"the URI matches several tokens ({names}); add token=LABEL")
    return Pkcs11Card(matching[0], uri)


@dataclass(frozen=True, slots=True)
class _Cert:
    der: bytes
    id: bytes
    label: str
    certificate: x509.Certificate
    authority: bool
    rank: int  # see _signing_rank


def _key_usage(certificate: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _signing_rank(certificate: x509.Certificate) -> int:
    """2: nonRepudiation (and maybe digitalSignature); 1: digitalSignature only; 0: neither."""
    usage = _key_usage(certificate)
    if usage is None:
        return 0
    if usage.content_commitment:
        return 2
    return 1 if usage.digital_signature else 0


def _not_verified() -> CardError:
    return CardError(ErrorCode.CARD_ERROR, detail="PIN not verified")


class Pkcs11Card:
    """One token of a PKCS#11 module, opened from a URI (see :func:`open_pkcs11`).

    Opening opens a public read-only session; :meth:`verify_pin` logs in with a session of its
    own; :meth:`close` logs out and closes both.
    """

    def __init__(self, found: _Found, uri: Pkcs11Uri) -> None:
        assert found.token is not None
        self._path = found.path
        self._slot = found.slot
        self._token = found.token
        self._uri = uri
        self.label = token_uri(found.path, found.token.label)
        self._user: Any | None = None
        self._public: Any | None = None
        self._context_pin: str | None = None  # for CKA_ALWAYS_AUTHENTICATE keys, until logout
        self._chosen: _Cert | None = None
        with _translated(self._path):
            self._public = self._token.open()

    def __repr__(self) -> str:
        state = "closed" if self._public is None else f"pin_verified={self._user is not None}"
        return f"<{type(self).__name__} {self.label!r} {state}>"

    # -- the Card protocol -----------------------------------------------------------------

    def verify_pin(self, pin: str) -> None:
        """``C_Login`` as the user with ``pin`` in a new session.

        Raises ``CardError("pin_incorrect", tries_left=1 | None)`` and
        ``CardError("card_locked")`` (also before trying, when the token flags say so).
        """
        self._session()
        self._logout()
        with _translated(self._path):
            if self._flags() & TokenFlag.USER_PIN_LOCKED:
                raise CardError(ErrorCode.CARD_LOCKED)
            try:
                self._user = self._token.open(user_pin=pin)
            except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange) as exc:
                flags = self._flags()
                if flags & TokenFlag.USER_PIN_LOCKED:
                    raise CardError(ErrorCode.CARD_LOCKED) from exc
                tries_left = 1 if flags & TokenFlag.USER_PIN_FINAL_TRY else None
                raise CardError(ErrorCode.PIN_INCORRECT, tries_left=tries_left) from exc
            except p11.UserAlreadyLoggedIn as exc:  # another session of this process logged in
                raise CardError(
                    ErrorCode.CARD_ERROR,
                    detail="the token is already logged in by another session of this program",
                ) from exc
        self._context_pin = pin
        self._chosen = None  # keys hidden before login may now pair certificates

    def read_certificate(self) -> bytes:
        """DER of the signing certificate (see the module docstring for how it is chosen)."""
        return self._signing_certificate().der

    def read_chain(self) -> tuple[bytes, ...]:
        """DER of the CA certificates on the token: the signing certificate's issuers first."""
        signing = self._signing_certificate()
        authorities = [c for c in self._certificates() if c.authority and c.der != signing.der]
        ordered: list[_Cert] = []
        subject = signing.certificate.issuer
        while True:
            issuer = next(
                (c for c in authorities if c not in ordered and c.certificate.subject == subject),
                None,
            )
            if issuer is None:
                break
            ordered.append(issuer)
            if issuer.certificate.issuer == issuer.certificate.subject:
                break
            subject = issuer.certificate.issuer
        ordered += [c for c in authorities if c not in ordered]
        return tuple(c.der for c in ordered)

    def sign(self, message: bytes) -> bytes:
        """SHA-256 and sign ``message`` with the signing certificate's key (needs the PIN)."""
        session = self._user
        if session is None:
            self._session()
            raise _not_verified()
        chosen = self._signing_certificate()
        digest = hashlib.sha256(message).digest()
        with _translated(self._path):
            key = self._private_key(session, chosen)
            # A CKA_ALWAYS_AUTHENTICATE key (PIV 9C) wants C_Login(CKU_CONTEXT_SPECIFIC) after
            # each C_SignInit (PKCS#11 §5.1); python-pkcs11 does it when given the PIN.
            pin = (
                self._context_pin if _attribute(key, Attribute.ALWAYS_AUTHENTICATE, False) else None
            )
            if key.key_type == KeyType.RSA:
                if Mechanism.SHA256_RSA_PKCS in self._slot.get_mechanisms():
                    return bytes(key.sign(message, mechanism=Mechanism.SHA256_RSA_PKCS, pin=pin))
                return bytes(
                    key.sign(_SHA256_DIGEST_INFO + digest, mechanism=Mechanism.RSA_PKCS, pin=pin)
                )
            if key.key_type == KeyType.EC:
                raw = bytes(key.sign(digest, mechanism=Mechanism.ECDSA, pin=pin))
                if not raw or len(raw) % 2:
                    raise CardError(
                        ErrorCode.CARD_ERROR,
                        detail="the token returned a malformed ECDSA signature",
                    )
                half = len(raw) // 2
                r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
                return encode_dss_signature(r, s)
        raise CardError(
            ErrorCode.CARD_ERROR, detail="the card's key is neither RSA nor EC; cannot sign"
        )

    def close(self) -> None:
        """Log out and close the sessions; errors of a token already gone are ignored."""
        self._logout()
        public, self._public = self._public, None
        self._chosen = None
        if public is not None:
            with _lock(self._path), contextlib.suppress(p11.PKCS11Error):
                public.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _session(self) -> Any:
        if self._public is None:
            raise CardError(ErrorCode.CARD_ERROR, detail="the card is closed")
        return self._user or self._public

    def _logout(self) -> None:
        self._context_pin = None
        user, self._user = self._user, None
        if user is not None:
            with _lock(self._path), contextlib.suppress(p11.PKCS11Error):
                user.close()  # C_Logout, then C_CloseSession

    def _flags(self) -> TokenFlag:
        return TokenFlag(self._slot.get_token().flags)

    def _certificates(self) -> list[_Cert]:
        session = self._session()
        found: list[_Cert] = []
        with _translated(self._path):
            objects = list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}))
            for obj in objects:
                attrs = obj.get_attributes([Attribute.VALUE, Attribute.ID, Attribute.LABEL])
                der = bytes(attrs.get(Attribute.VALUE) or b"")
                try:
                    certificate = x509.load_der_x509_certificate(der)
                    authority, rank = _is_ca(certificate), _signing_rank(certificate)
                except ValueError:
                    continue  # not X.509, not DER, a malformed extension: never chosen
                found.append(
                    _Cert(
                        der=der,
                        id=bytes(attrs.get(Attribute.ID) or b""),
                        label=str(attrs.get(Attribute.LABEL) or ""),
                        certificate=certificate,
                        authority=authority,
                        rank=rank,
                    )
                )
        return found

    def _keys(self, session: Any) -> list[Any]:
        return list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))

    def _signing_certificate(self) -> _Cert:
        if self._chosen is not None:
            self._session()
            return self._chosen
        certificates = self._certificates()
        with _translated(self._path):
            keys = self._keys(self._session())
            key_ids = {
                bytes(_attribute(k, Attribute.ID, b"")): bool(_attribute(k, Attribute.SIGN, True))
                for k in keys
            }
            key_labels = {
                str(_attribute(k, Attribute.LABEL, "")): bytes(_attribute(k, Attribute.ID, b""))
                for k in keys
            }
            always = {
                bytes(_attribute(k, Attribute.ID, b""))
                for k in keys
                if _attribute(k, Attribute.ALWAYS_AUTHENTICATE, False)
            }
        uri = self._uri
        if uri.names_object:
            ids = {uri.id} if uri.id is not None else set()
            if (
                uri.object is not None
                and uri.type in (None, "private")
                and uri.object in key_labels
            ):
                ids.add(key_labels[uri.object])
            candidates = [
                c
                for c in certificates
                if (uri.id is None or c.id == uri.id)
                and (uri.object is None or c.label == uri.object or c.id in ids)
            ]
            what = "; ".join(
                f"{k}={v!r}" for k, v in (("object", uri.object), ("id", uri.id)) if v is not None
            )
            if not candidates:
                raise CardError(
                    ErrorCode.CARD_ERROR, detail=f"no certificate on the token matches {what}"
                )
        else:
            candidates = [
                c
                for c in certificates
                if not c.authority
                and c.rank > 0
                and key_ids.get(c.id, True)  # a key hidden until login does not rule it out
            ]
            best = max((c.rank for c in candidates), default=0)
            candidates = [c for c in candidates if c.rank == best]
            if len(candidates) > 1 and len({c.der for c in candidates}) == 1:
                # One certificate under several IDs (a PIV card's 9A and 9C): the same key pair,
                # so not ambiguous; take the key that needs the PIN at each use (PIV 9C).
                candidates = [min(candidates, key=lambda c: (c.id not in always, c.id))]
            what = "keyUsage digitalSignature or nonRepudiation"
            if not candidates:
                raise CardError(
                    ErrorCode.CARD_ERROR, detail=f"no certificate on the token has {what}"
                )
        if len(candidates) > 1:
            labels = ", ".join(sorted(f"{c.label!r} (id {c.id.hex()})" for c in candidates))
            raise UsageError(
                detail=f"several certificates on the token fit ({labels}); name one with object="
            )
        self._chosen = candidates[0]
        return self._chosen

    def _private_key(self, session: Any, chosen: _Cert) -> Any:
        keys = [k for k in self._keys(session) if _attribute(k, Attribute.ID, b"") == chosen.id]
        if len(keys) != 1 or not chosen.id:
            keys = [
                k for k in self._keys(session) if _attribute(k, Attribute.LABEL, "") == chosen.label
            ]
        if len(keys) != 1:
            raise CardError(
                ErrorCode.CARD_ERROR, detail="no single private key pairs with the certificate"
            )
        if not _attribute(keys[0], Attribute.SIGN, True):
            raise CardError(ErrorCode.CARD_ERROR, detail="the certificate's key may not sign")
        return keys[0]
