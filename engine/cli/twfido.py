"""``swreg twfido``: the mock TW FidO service (行動自然人憑證, test material) and its "phone".

``swreg twfido mock`` serves :class:`engine.testing.twfido.TwFidoMock` in the foreground until
Ctrl-C and prints the ``SWREG_TWFIDO_*`` settings a portal needs (the key is test material:
printing it is for the mock only) and its control page. ``swreg twfido approve|reject TICKET``
and ``swreg twfido pending`` play the phone against a running mock over its control endpoints
(``POST /control/approve|reject`` JSON, ``GET /control/tickets``), at ``--url`` or
``SWREG_TWFIDO_URL``.

Errors: the mock cannot be reached or answers something else than its control endpoints →
``mobile_id_unavailable`` (exit 3); no such ticket, or one whose time is over →
``challenge_expired`` (exit 1: a ticket is the phone's challenge, and an unknown one is one the
service no longer holds — the code the portal gives for an unknown or finished pending id); a
ticket already answered → ``challenge_used`` (exit 1).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import signal
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from engine._errors import EnvironmentProblem, ErrorCode, RefusedError, UsageError
from engine.cli.support import JsonOption, Output, command, read_file

if TYPE_CHECKING:
    from engine.testing.twfido_setup import HolderSpec

twfido_app = typer.Typer(
    help="行動自然人憑證 (TW FidO): a mock service for tests and demos, and its phone.",
    no_args_is_help=True,
)

CONTROL_TIMEOUT: Final = 10.0
MAX_CONTROL_ANSWER: Final = 1024 * 1024
APP_LINK_SCHEME: Final = "mobilemoica:"
DEFAULT_HOLDER: Final = "A123456789:王小明"

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="The mock's base URL (default: SWREG_TWFIDO_URL)."),
]
TicketArgument = Annotated[
    str,
    typer.Argument(
        metavar="TICKET", help="The sp_ticket_id, the whole sp_ticket or the app-to-app link."
    ),
]


@twfido_app.command("mock")
def mock(
    port: Annotated[
        int, typer.Option("--port", help="Port on 127.0.0.1 (default: any free one).")
    ] = 0,
    service_id: Annotated[
        str | None, typer.Option("--service-id", help="The SP's sp_service_id.")
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="A file holding the SP key as SWREG_TWFIDO_KEY does (base64 of 32 bytes); "
            "without it a fresh key is made and printed.",
        ),
    ] = None,
    holder: Annotated[
        list[str] | None,
        typer.Option(
            "--holder",
            help="A person with a mobile certificate, NATIONAL_ID:NAME (repeatable; default "
            "A123456789:王小明).",
        ),
    ] = None,
    pki: Annotated[
        Path | None,
        typer.Option(
            "--pki",
            help="A test PKI folder (swreg demo --out DIR keeps one in DIR/pki): loaded, or "
            "created there; default a new one in a temporary folder.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Serve a mock TW FidO service until Ctrl-C (test material). 行動自然人憑證模擬服務。"""
    from engine.testing.twfido import TwFidoMock
    from engine.testing.twfido_setup import (
        DEFAULT_SERVICE_ID,
        holder_in,
        pki_folder,
        portal_settings,
        salt_in,
    )

    with command(as_json) as out:
        if not 0 <= port <= 65535:
            raise UsageError(detail="--port is 0 to 65535")
        service = (service_id or DEFAULT_SERVICE_ID).strip()
        if not service:
            raise UsageError(detail="--service-id is empty")
        key = _read_key(key_file) if key_file else secrets.token_bytes(32)
        people = _holders(holder or [DEFAULT_HOLDER])
        folder = pki or Path(tempfile.mkdtemp(prefix="swreg-twfido-"))
        folder.mkdir(parents=True, exist_ok=True)
        test_pki, created = pki_folder(folder)
        holders = {person.national_id: holder_in(test_pki, folder, person) for person in people}
        fido = TwFidoMock({service: key}, holders, port=port or None, salt=salt_in(folder))
        started: dict[str, Any] = {
            "service_id": service,
            "holders": [
                {
                    "national_id": person.national_id,
                    "name": person.name,
                    "fingerprint": _fingerprint(holders[person.national_id].card.der()),
                }
                for person in people
            ],
            "pki": str(folder),
            "pki_created": created,
            "trust_commands": [
                ["swreg", *line] for line in test_pki.trust_commands(folder / "trust")
            ],
        }
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # threads inherit it
        try:
            try:
                fido.start()
            except OSError as exc:
                raise EnvironmentProblem(
                    ErrorCode.MOBILE_ID_UNAVAILABLE, detail=f"cannot listen on port {port}"
                ) from exc
            try:
                started.update(
                    url=fido.url,
                    control_url=fido.control_url,
                    settings=portal_settings(fido.url, service, key),
                )
                _announce(out, started)
                signal.sigwait(stop_signals)
            finally:
                fido.stop()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if as_json:
            raise typer.Exit(0)  # its one JSON object went out when the mock started
        out.say("已停止 / stopped")


def _holders(texts: list[str]) -> list[HolderSpec]:
    from engine.testing.twfido_setup import HolderSpec

    people: dict[str, HolderSpec] = {}
    for text in texts:
        national_id, _, name = text.partition(":")
        if not national_id.strip() or not name.strip():
            raise UsageError(detail="--holder is NATIONAL_ID:NAME, e.g. A123456789:王小明")
        try:
            person = HolderSpec.parse(text)
        except ValueError as exc:
            raise RefusedError(
                ErrorCode.INVALID_NATIONAL_ID, field="holder", detail=str(exc)
            ) from None
        people[person.national_id] = person  # the last one given for an ID
    return list(people.values())


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _announce(out: Output, started: dict[str, Any]) -> None:
    """What the running mock prints at once: one JSON object with --json."""
    if out.as_json:
        typer.echo(json.dumps({"ok": True, **started}, ensure_ascii=False))
        return
    lines = [
        "行動自然人憑證 TW FidO 模擬服務 / mock service — 測試用 TEST material",
        *(f"{name}={value}" for name, value in started["settings"].items()),
        f"模擬手機 / the phone: {started['control_url']}",
        f"   或 / or: swreg twfido pending|approve|reject TICKET --url {started['url']}",
        "持有行動自然人憑證者 / holders of a mobile certificate:",
        *(f"   {h['national_id']} {h['name']}" for h in started["holders"]),
        f"測試PKI / test PKI: {started['pki']} — 註冊網站須信任 / the portal must trust it:",
        *(f"   {' '.join(line)}" for line in started["trust_commands"]),
        "Ctrl-C 結束 / to stop",
    ]
    for line in lines:
        typer.echo(line)


def _read_key(path: Path) -> bytes:
    text = read_file(path, limit=4096).decode("ascii", "replace").strip()
    try:
        key = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise UsageError(detail=f"{path}: the key file holds the base64 of a 32-byte AES key")
    return key


# -- the phone -----------------------------------------------------------------------------------


@twfido_app.command("approve")
def approve(ticket: TicketArgument, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """The phone confirms the ticket (the mock signs). 在模擬手機上核准。"""
    with command(as_json) as out:
        answered = _control(_base_url(url), "approve", ticket)
        _report(out, answered, "已核准 / approved")


@twfido_app.command("reject")
def reject(ticket: TicketArgument, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """The phone cancels the ticket (APP_USER_CANCEL). 在模擬手機上拒絕。"""
    with command(as_json) as out:
        answered = _control(_base_url(url), "reject", ticket)
        _report(out, answered, "已拒絕 / rejected")


@twfido_app.command("pending")
def pending(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """The tickets waiting for the phone. 等待確認的請求。"""
    with command(as_json) as out:
        answer = _request(f"{_base_url(url)}/control/tickets", None)
        tickets = answer.get("tickets") if isinstance(answer, dict) else None
        if not isinstance(tickets, list):
            raise _unavailable("not a TW FidO mock's ticket list")
        out.result["tickets"] = tickets
        for item in tickets:
            out.say(
                f"{item.get('sp_ticket_id')}  {item.get('id_num')}  {item.get('op_code')} "
                f"{item.get('op_mode') or 'PUSH'}  至 / until {item.get('expiration_time')}"
            )
        if not tickets:
            out.say("沒有等待中的請求 / no pending ticket")


def _report(out: Output, ticket: dict[str, Any], done: str) -> None:
    out.result["ticket"] = ticket
    out.say(f"{done}: {ticket.get('sp_ticket_id')} ({ticket.get('id_num')})")


def _base_url(url: str | None) -> str:
    base = (url or os.environ.get("SWREG_TWFIDO_URL") or "").strip().rstrip("/")
    if not base:
        raise UsageError(detail="give --url or set SWREG_TWFIDO_URL")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise UsageError(detail="--url is an http:// or https:// URL")
    return base


def _ticket_id(ticket: str) -> str:
    """The ticket as the mock takes it; an app-to-app link gives its ``sp_ticket``."""
    text = ticket.strip()
    if text.lower().startswith(APP_LINK_SCHEME):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(text).query)
        text = (query.get("sp_ticket") or [""])[0]
    if not text:
        raise RefusedError(ErrorCode.FIELD_REQUIRED, field="ticket")
    return text


def _control(base: str, action: str, ticket: str) -> dict[str, Any]:
    body = json.dumps({"sp_ticket_id": _ticket_id(ticket)}).encode("utf-8")
    answer = _request(f"{base}/control/{action}", body)
    if not isinstance(answer, dict) or not isinstance(answer.get("sp_ticket_id"), str):
        raise _unavailable("not a TW FidO mock's control answer")
    return answer


def _request(url: str, body: bytes | None) -> Any:
    """GET (``body`` None) or POST JSON to the mock's control endpoint; its JSON answer."""
    request = urllib.request.Request(
        url,
        data=body,
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=CONTROL_TIMEOUT) as answer:
            data = answer.read(MAX_CONTROL_ANSWER)
    except urllib.error.HTTPError as refused:
        raise _refusal(refused) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise _unavailable(f"{url}: {type(exc).__name__}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError:
        raise _unavailable("an answer that is not JSON") from None


def _refusal(refused: urllib.error.HTTPError) -> Exception:
    """The mock's 404 (no such ticket) and 409 (expired, or already answered)."""
    try:
        reason = str(json.loads(refused.read(4096).decode("utf-8")).get("error", ""))
    except (ValueError, AttributeError, OSError):
        reason = ""
    if refused.code == 404 and reason:
        return RefusedError(ErrorCode.CHALLENGE_EXPIRED, field="ticket", detail=reason)
    if refused.code == 409 and "expired" in reason:
        return RefusedError(ErrorCode.CHALLENGE_EXPIRED, field="ticket", detail=reason)
    if refused.code == 409:
        return RefusedError(ErrorCode.CHALLENGE_USED, field="ticket", detail=reason)
    return _unavailable(f"HTTP {refused.code} (not a TW FidO mock's control endpoint?)")


def _unavailable(detail: str) -> EnvironmentProblem:
    return EnvironmentProblem(ErrorCode.MOBILE_ID_UNAVAILABLE, detail=detail)
