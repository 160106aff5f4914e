"""Fetching revocation data over HTTP, safe against server-side request forgery (DESIGN.md §4a).

A :class:`Fetcher` asks only ``http``/``https`` URLs whose host is in ``SWREG_FETCH_HOSTS``
(:class:`~engine._settings.FetchHosts`; the port is not part of the match) and answers every
request with a :class:`FetchResult` whose :class:`FetchOutcome` says what happened — it raises
nothing for a refusal or a network failure:

- **Redirects** are followed by hand, at most ``max_redirects`` (3), and only to the same host
  (``http`` → ``https`` and back allowed; every hop is re-checked against the allow-list); a
  redirect to another host is ``redirect_to_other_host``. A POST follows only 307/308.
- **Size**: the caller passes ``max_bytes`` (a CRL :data:`MAX_CRL_BYTES`, an OCSP answer
  :data:`MAX_OCSP_BYTES`). A Content-Length above it is refused before the body is read; the
  body is counted while it streams, so a missing or lying Content-Length changes nothing.
  ``Accept-Encoding: identity`` is asked for; a compressed body is counted decompressed.
- **Time**: ``timeout`` bounds the whole call (connect, redirects, body). Each network wait is
  limited to the time left and the deadline is checked between reads; a server that sends its
  *headers* a byte at a time can overrun it by one read timeout per byte (httpx has no total
  deadline on the header phase).
- **Conditional GET**: :class:`Validators` (ETag, Last-Modified) in; a 304 is ``not_modified``
  with the server's validators (or the ones sent when it gives none).
- **Bodies** go to a bounded in-memory buffer (:meth:`Fetcher.get`, :meth:`Fetcher.post`) or
  stream into a temporary file (:meth:`Fetcher.download`, for CRLs: the body is never held in
  memory), removed when the ``with`` block ends.

No proxy, ``.netrc`` or other environment setting of httpx is used (``trust_env=False``): the
allow-list is the whole policy. Only a URL's host is checked, never the addresses it resolves
to: list hosts you trust to resolve to public addresses. No cookie a server sets is kept: a
fetcher used for many requests (one per :class:`~engine.services.ocsp.OcspService`) sends each
as it would send its first.

A fetcher is cheap to make: every one shares one TLS context, made with certifi's CA bundle the
first time a fetcher is made in the process (loading the bundle costs ≈ 16 ms, more than asking
a responder), so a changed bundle is read by the next process.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from functools import cache
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import IO, Final

import httpx

from engine._settings import FetchHosts

MAX_CRL_BYTES: Final = 256 * 1024 * 1024
"""The largest CRL fetched (DESIGN.md §4a)."""
MAX_OCSP_BYTES: Final = 64 * 1024
"""The largest OCSP answer read (DESIGN.md §4a)."""
MAX_REDIRECTS: Final = 3
OCSP_REQUEST: Final = "application/ocsp-request"
OCSP_RESPONSE: Final = "application/ocsp-response"
USER_AGENT: Final = "swreg-revocation/1"

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_KEEP_METHOD: Final = frozenset({307, 308})

_Sink = Callable[[bytes], object]
"""Where a body's chunks go: a buffer's ``extend`` or a file's ``write``."""


class FetchOutcome(StrEnum):
    """What one fetch came to (stable: ``swreg revocation refresh`` reports these)."""

    FETCHED = "fetched"
    NOT_MODIFIED = "not_modified"
    """A conditional GET answered 304: what was fetched before is still current."""
    URL_NOT_ALLOWED = "url_not_allowed"
    """Not an ``http``/``https`` URL with a host (or it carries a user name or password)."""
    HOST_NOT_ALLOWED = "host_not_allowed"
    """The host is not in ``SWREG_FETCH_HOSTS``."""
    REDIRECT_TO_OTHER_HOST = "redirect_to_other_host"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    TOO_LARGE = "too_large"
    """Content-Length or the body itself went past ``max_bytes``."""
    TIMEOUT = "timeout"
    """The call ran out of time (connect, a read, or the total)."""
    CONNECTION_ERROR = "connection_error"
    """No connection, TLS failure, a reset, or a malformed HTTP answer."""
    TRUNCATED = "truncated"
    """The connection closed before the body announced by Content-Length was complete."""
    HTTP_STATUS = "http_status"
    """Any other status than 200 (or 304 for a conditional GET); ``status`` says which."""


_SUCCESSES: Final = frozenset({FetchOutcome.FETCHED, FetchOutcome.NOT_MODIFIED})


@dataclass(frozen=True, slots=True)
class Validators:
    """The conditional-GET validators of a fetched resource, as the server gave them."""

    etag: str | None = None
    last_modified: str | None = None

    def __bool__(self) -> bool:
        return bool(self.etag or self.last_modified)

    def headers(self) -> dict[str, str]:
        sent: dict[str, str] = {}
        if self.etag:
            sent["If-None-Match"] = self.etag
        if self.last_modified:
            sent["If-Modified-Since"] = self.last_modified
        return sent


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The answer to one fetch. ``body`` (:meth:`Fetcher.get`, :meth:`Fetcher.post`) or
    ``path`` (:meth:`Fetcher.download`) holds the body when ``outcome`` is ``fetched``."""

    outcome: FetchOutcome
    url: str
    """The URL asked for last (after same-host redirects)."""
    status: int | None = None
    detail: str = ""
    validators: Validators = Validators()
    content_type: str | None = None
    size: int = 0
    body: bytes | None = None
    path: Path | None = None

    @property
    def ok(self) -> bool:
        """``fetched`` or ``not_modified``."""
        return self.outcome in _SUCCESSES


class _Refused(Exception):
    def __init__(self, outcome: FetchOutcome, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.status = status


class Fetcher:
    """An HTTP client for revocation data, limited to the allowed hosts (see the module doc).

    ``transport`` replaces httpx's network transport (tests); close the fetcher (or use it as a
    context manager) to release its connections.
    """

    def __init__(
        self,
        hosts: FetchHosts,
        *,
        max_redirects: int = MAX_REDIRECTS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.hosts = hosts
        self.max_redirects = max_redirects
        self._client = httpx.Client(
            follow_redirects=False,
            trust_env=False,
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=())),  # none kept
            transport=httpx.HTTPTransport(verify=_tls_context())
            if transport is None
            else transport,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def allows(self, url: str) -> FetchOutcome | None:
        """``None`` when ``url`` may be fetched, else why not (``url_not_allowed`` or
        ``host_not_allowed``). Nothing is sent."""
        try:
            self._check_url(httpx.URL(url))
        except _Refused as refused:
            return refused.outcome
        except (httpx.InvalidURL, ValueError, TypeError):
            return FetchOutcome.URL_NOT_ALLOWED
        return None

    def get(
        self,
        url: str,
        *,
        max_bytes: int,
        timeout: float | timedelta,
        validators: Validators = Validators(),
    ) -> FetchResult:
        """GET ``url`` into memory (at most ``max_bytes``); conditional when ``validators``."""
        buffer = bytearray()
        result = self._request("GET", url, None, max_bytes, timeout, validators, buffer.extend)
        if result.outcome is FetchOutcome.FETCHED:
            return replace(result, body=bytes(buffer))
        return result

    def post(
        self,
        url: str,
        body: bytes,
        *,
        max_bytes: int = MAX_OCSP_BYTES,
        timeout: float | timedelta,
        content_type: str = OCSP_REQUEST,
        accept: str = OCSP_RESPONSE,
    ) -> FetchResult:
        """POST ``body`` (an OCSP request by default) and read the answer into memory."""
        buffer = bytearray()
        headers = {"Content-Type": content_type, "Accept": accept}
        result = self._request(
            "POST", url, (body, headers), max_bytes, timeout, Validators(), buffer.extend
        )
        if result.outcome is FetchOutcome.FETCHED:
            return replace(result, body=bytes(buffer))
        return result

    @contextmanager
    def download(
        self,
        url: str,
        *,
        max_bytes: int = MAX_CRL_BYTES,
        timeout: float | timedelta,
        validators: Validators = Validators(),
        directory: Path | None = None,
        on_bytes: Callable[[int], object] | None = None,
    ) -> Iterator[FetchResult]:
        """GET ``url`` into a temporary file (mode 0600, in ``directory`` or the system's
        temporary folder): ``result.path`` while the ``with`` block runs, removed after it.
        On any outcome but ``fetched`` no file is left and ``path`` is ``None``. ``on_bytes``
        is told the bytes received so far after each chunk (a progress bar)."""
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed and removed below
            prefix="swreg-fetch-", suffix=".part", dir=directory, delete=False
        )
        path = Path(handle.name)
        try:
            result = self._request(
                "GET", url, None, max_bytes, timeout, validators, _writer(handle, on_bytes)
            )
            handle.close()
            if result.outcome is FetchOutcome.FETCHED:
                result = replace(result, path=path)
            else:
                path.unlink(missing_ok=True)
            yield result
        finally:
            handle.close()
            with suppress(OSError):
                path.unlink(missing_ok=True)

    # -- the one request loop ------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        post: tuple[bytes, dict[str, str]] | None,
        max_bytes: int,
        timeout: float | timedelta,
        validators: Validators,
        sink: _Sink,
    ) -> FetchResult:
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        deadline = time.monotonic() + seconds
        current = url
        try:
            target = httpx.URL(url)
            origin_host = self._check_url(target)
            for hop in range(self.max_redirects + 1):
                current = str(target)
                remaining = _remaining(deadline)
                request = self._client.build_request(
                    method,
                    target,
                    content=post[0] if post else None,
                    headers={**(post[1] if post else {}), **validators.headers()},
                    timeout=httpx.Timeout(remaining),
                )
                response = self._client.send(request, stream=True)
                try:
                    if response.status_code in _REDIRECTS:
                        target = self._redirect(response, target, origin_host, method, hop)
                        continue
                    return self._answer(response, current, validators, max_bytes, deadline, sink)
                finally:
                    response.close()
            raise AssertionError("unreachable")  # pragma: no cover - _redirect raises first
        except _Refused as refused:
            return FetchResult(refused.outcome, current, refused.status, refused.detail)
        except httpx.TimeoutException as exc:
            return FetchResult(FetchOutcome.TIMEOUT, current, detail=_describe(exc))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return FetchResult(FetchOutcome.URL_NOT_ALLOWED, current, detail=_describe(exc))
        except httpx.TransportError as exc:
            return FetchResult(FetchOutcome.CONNECTION_ERROR, current, detail=_describe(exc))

    def _check_url(self, url: httpx.URL) -> str:
        """The host of ``url`` (lower case) if it may be fetched; otherwise :class:`_Refused`."""
        if url.scheme not in ("http", "https") or not url.host:
            raise _Refused(FetchOutcome.URL_NOT_ALLOWED, "only http and https URLs with a host")
        if url.userinfo:
            raise _Refused(FetchOutcome.URL_NOT_ALLOWED, "a URL with a user name or password")
        if not self.hosts.allows(url.host):
            raise _Refused(FetchOutcome.HOST_NOT_ALLOWED, f"{url.host} is not in the allow-list")
        return url.host.lower().rstrip(".")

    def _redirect(
        self, response: httpx.Response, url: httpx.URL, origin_host: str, method: str, hop: int
    ) -> httpx.URL:
        status = response.status_code
        location = response.headers.get("Location")
        if not location:
            raise _Refused(FetchOutcome.HTTP_STATUS, f"{status} without Location", status)
        if method != "GET" and status not in _KEEP_METHOD:
            raise _Refused(FetchOutcome.HTTP_STATUS, f"{status} redirect of a {method}", status)
        if hop >= self.max_redirects:
            raise _Refused(
                FetchOutcome.TOO_MANY_REDIRECTS, f"more than {self.max_redirects}", status
            )
        target = url.join(location)
        host = self._check_url(target)
        if host != origin_host:
            raise _Refused(
                FetchOutcome.REDIRECT_TO_OTHER_HOST, f"{origin_host} → {target.host}", status
            )
        return target

    def _answer(
        self,
        response: httpx.Response,
        url: str,
        sent: Validators,
        max_bytes: int,
        deadline: float,
        sink: _Sink,
    ) -> FetchResult:
        status = response.status_code
        got = Validators(response.headers.get("ETag"), response.headers.get("Last-Modified"))
        if status == 304 and sent:
            return FetchResult(FetchOutcome.NOT_MODIFIED, url, status, validators=got or sent)
        if status != 200:
            raise _Refused(FetchOutcome.HTTP_STATUS, f"HTTP {status}", status)
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
            raise _Refused(
                FetchOutcome.TOO_LARGE, f"Content-Length {declared} > {max_bytes}", status
            )
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise _Refused(FetchOutcome.TOO_LARGE, f"body > {max_bytes} bytes", status)
                if time.monotonic() > deadline:
                    raise _Refused(FetchOutcome.TIMEOUT, "total time limit", status)
                sink(chunk)
        except httpx.RemoteProtocolError as exc:
            raise _Refused(FetchOutcome.TRUNCATED, _describe(exc), status) from exc
        return FetchResult(
            FetchOutcome.FETCHED,
            url,
            status,
            validators=got,
            content_type=response.headers.get("Content-Type"),
            size=size,
        )


@cache
def _tls_context() -> ssl.SSLContext:
    """The TLS context every fetcher shares: what httpx makes for ``verify=True`` without the
    environment (certifi's CA bundle, hostnames checked), made once (two threads racing on the
    first make two, harmlessly). Nothing changes it after it is made."""
    return httpx.create_ssl_context(verify=True, trust_env=False)


def _writer(handle: IO[bytes], on_bytes: Callable[[int], object] | None) -> _Sink:
    os.chmod(handle.name, 0o600)
    if on_bytes is None:
        return handle.write
    received = 0

    def write(chunk: bytes) -> None:
        nonlocal received
        handle.write(chunk)
        received += len(chunk)
        on_bytes(received)

    return write


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Refused(FetchOutcome.TIMEOUT, "total time limit")
    return left


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
