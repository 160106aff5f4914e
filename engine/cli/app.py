"""``swreg``: the command-line front end (DESIGN.md §9).

Thin by design: every command parses its arguments, calls a service of :class:`engine.App` and
prints the result, in zh-TW and English for people or as one JSON object with ``--json``.
Exit status: 0 success, 1 refused (validation or business rule), 2 usage error, 3 environment
error (no reader, no card, no database).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import segno
import typer

from engine._bootstrap import bootstrap
from engine._errors import (
    EnvironmentProblem,
    ErrorCode,
    RefusedError,
    UsageError,
)
from engine._settings import Settings
from engine.cli.accounts import accounts_app
from engine.cli.customs import customs_app
from engine.cli.keys import keys_app
from engine.cli.officers import officers_app
from engine.cli.purge import purge
from engine.cli.registrations import registrations_app
from engine.cli.renewal import reminders_app, renewal_app
from engine.cli.revocation import revocation_app, source_app
from engine.cli.support import (
    CARD_HELP,
    DbOption,
    JsonOption,
    app_for,
    command,
    read_answers,
    read_file,
    read_pin,
    remember_options,
    settings,
)
from engine.cli.turnkey import turnkey_app
from engine.cli.twfido import twfido_app
from engine.cli.workflow import workflow_app
from engine.services import metrics
from engine.services.audit import AuditExport, AuditService
from engine.services.enrolment import SigningCard, register_with_card
from engine.services.mobile_id import PendingMobileId, Phone
from engine.services.registration import RegistrationView

app = typer.Typer(
    name="swreg",
    help="Smart-card certificate account registration (關港貿單一窗口憑證註冊).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
trust_app = typer.Typer(help="Trust anchors (受信任的根憑證與中繼憑證).", no_args_is_help=True)
crl_app = typer.Typer(help="Certificate revocation lists (憑證廢止清冊).", no_args_is_help=True)
cert_app = typer.Typer(help="Certificates (憑證).", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log (稽核紀錄).", no_args_is_help=True)
readers_app = typer.Typer(help="Card readers (讀卡機).", no_args_is_help=True)
card_app = typer.Typer(
    help="Virtual cards for trying swreg without hardware.", no_args_is_help=True
)
for sub, name in (
    (trust_app, "trust"),
    (crl_app, "crl"),
    (accounts_app, "accounts"),
    (cert_app, "cert"),
    (audit_app, "audit"),
    (readers_app, "readers"),
    (card_app, "card"),
    (customs_app, "customs-cert"),
    (turnkey_app, "turnkey"),
    (reminders_app, "reminders"),
    (renewal_app, "renewal"),
    (registrations_app, "registrations"),
    (workflow_app, "workflow"),
    (officers_app, "officers"),
    (revocation_app, "revocation"),
    (twfido_app, "twfido"),
    (keys_app, "keys"),
):
    app.add_typer(sub, name=name)
crl_app.add_typer(source_app, name="source")
app.command("purge")(purge)


@app.callback()
def _options(ctx: typer.Context, db: DbOption = None) -> None:
    remember_options(ctx, db)


@app.command()
def init(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Create or migrate the database (idempotent). 建立或更新資料庫。"""
    with command(as_json) as out:
        application = app_for(ctx)
        out.result.update(
            database=application.settings.database_url, workflow=application.workflow.hash
        )
        out.say(f"資料庫已就緒 / database ready: {application.settings.database_url}")
        out.say(f"流程定義 / workflow {application.workflow.name} {application.workflow.hash[:12]}")


@trust_app.command("add")
def trust_add(
    ctx: typer.Context,
    file: Path,
    intermediate: Annotated[
        bool, typer.Option("--intermediate", help="Use for path building only; do not trust it.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Trust a CA certificate (DER or PEM). 加入受信任的憑證。"""
    with command(as_json) as out:
        entry = app_for(ctx).trust.add_certificate(read_file(file), anchor=not intermediate)
        out.result.update(
            fingerprint=entry.fingerprint,
            subject=entry.subject,
            anchor=entry.is_anchor,
            added=entry.added,
        )
        verb = "已加入 / added" if entry.added else "已存在 / already present"
        out.say(f"{verb}: {entry.subject} ({entry.fingerprint[:16]}…)")


@trust_app.command("list")
def trust_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List trusted certificates. 列出受信任的憑證。"""
    with command(as_json) as out:
        entries = app_for(ctx).trust.list()
        out.result["certificates"] = [
            {"fingerprint": e.fingerprint, "subject": e.subject, "anchor": e.is_anchor}
            for e in entries
        ]
        for e in entries:
            role = "anchor" if e.is_anchor else "intermediate"
            out.say(f"{e.fingerprint[:16]}…  {role:12}  {e.subject}")
        if not entries:
            out.say("尚無受信任的憑證 / no trusted certificates yet (swreg trust add FILE)")


@crl_app.command("add")
def crl_add(ctx: typer.Context, file: Path, as_json: JsonOption = False) -> None:
    """Add a CRL signed by a trusted CA. 加入憑證廢止清冊。"""
    with command(as_json) as out:
        info = app_for(ctx).trust.add_crl(read_file(file))
        out.result.update(info)
        out.say(f"CRL {info['issuer']} #{info['crl_number']}: {info['revoked']} revoked")


@app.command("types")
def types_(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Applicant types and customs usage types of the installed plugins. 申請類別與憑證使用類型。"""
    with command(as_json) as out:
        application = app_for(ctx)
        applicants = list(application.catalog.applicant_types.values())
        usages = list(application.catalog.usage_types.values())
        out.result["applicant_types"] = [
            {
                "code": a.code,
                "category": a.category.value,
                "labels": {"zh-TW": a.labels.zh_tw, "en": a.labels.en},
                "category_labels": {"zh-TW": a.category.labels.zh_tw, "en": a.category.labels.en},
                "login_cas": sorted(ca.value for ca in a.login.cas),
                "account": a.account.field,
                "iot_allowed": a.iot_allowed,
                "steps": list(application.workflow.path_for(a)),
            }
            for a in applicants
        ]
        out.result["usage_types"] = [
            {
                "code": u.code,
                "labels": {"zh-TW": u.labels.zh_tw, "en": u.labels.en},
                "imports": sorted(f"{kind.value}:{cert.value}" for kind, cert in u.imports),
                "query_key": u.query_key,
            }
            for u in usages
        ]
        out.say("申請類別 / applicant types:")
        for a in applicants:
            out.say(
                f"  {a.code:32} {a.category.labels.zh_tw}/{a.labels.zh_tw}  "
                f"{a.category.labels.en} / {a.labels.en}"
            )
        out.say("憑證使用類型 / customs usage types:")
        for u in usages:
            out.say(f"  {u.code:32} {u.labels.zh_tw}  {u.labels.en}")


@app.command()
def register(
    ctx: typer.Context,
    type_code: Annotated[str, typer.Option("--type", help="Applicant type code (swreg types).")],
    answers: Annotated[Path, typer.Option("--answers", help="JSON or TOML file of field: value.")],
    card: Annotated[str, typer.Option("--card", help=CARD_HELP)],
    pin_stdin: Annotated[
        bool, typer.Option("--pin-stdin", help="Read the PIN from stdin.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """The whole 憑證註冊 with a card. 以憑證卡完成註冊。"""
    from readers import open_card

    with command(as_json) as out:
        data = read_answers(answers)
        application = app_for(ctx)
        application.catalog.applicant(type_code)

        def remember(view: RegistrationView) -> None:
            out.result["registration_id"] = view.id

        def enrol(card: SigningCard | Phone, pin: str) -> RegistrationView:
            return register_with_card(  # stops where an officer decides (view.awaiting)
                application.registrations, type_code=type_code, answers=data,
                card=card, pin=pin, on_step=remember,
            )  # fmt: skip

        if card.startswith(TWFIDO_SPEC):
            view = enrol(mobile_id_card(card), "")  # the phone asks for its own PIN
        else:
            with open_card(card) as opened:
                view = enrol(opened, read_pin(pin_stdin))
        out.result.update(
            account=view.account,
            state=view.state,
            type=view.applicant_type,
            registration_id=view.id,
        )
        if view.awaiting is not None:
            out.result.update(
                awaiting=view.awaiting, status={"zh-TW": view.status.zh_tw, "en": view.status.en}
            )
            out.say(f"已送出，待審核 / submitted, awaiting approval: {view.applicant_type}")
            out.say(f"註冊作業 / registration: {view.id}")
            out.say(f"核准後的帳號 / account once approved: {view.account}")
            return
        out.say(f"註冊完成 / registration completed: {view.applicant_type}")
        out.say(f"帳號 / account: {view.account}")
        out.say("請至您的電子郵件Email進行帳號啟用 / activate the account from your e-mail")


TWFIDO_SPEC = "twfido:"


def mobile_id_card(spec: str) -> Phone:
    """``twfido:NATIONAL_ID``: the configured TW FidO service asks that person's phone
    (DESIGN.md §13); the QR code and the app link go to stderr while the phone is awaited."""

    def show(pending: PendingMobileId) -> None:
        print("行動自然人憑證 / mobile ID: 請以App掃描 / scan with the app:", file=sys.stderr)
        if pending.sp_ticket:
            segno.make(pending.sp_ticket, error="m").terminal(out=sys.stderr, compact=True)
        print(f"手機 / on the phone: {pending.app_link}", file=sys.stderr)

    return Phone(spec[len(TWFIDO_SPEC) :], sleep=time.sleep, on_ticket=show)


@cert_app.command("inspect")
def cert_inspect(ctx: typer.Context, file: Path, as_json: JsonOption = False) -> None:
    """Explain a certificate the way the card check sees it. 說明憑證檢查的結果。"""
    with command(as_json) as out:
        data = read_file(file)
        report = app_for(ctx).inspect_certificate(data)
        out.result.update(report)
        for key in ("ca", "subject", "issuer", "serial", "not_before", "not_after", "status"):
            out.say(f"{key:12} {report[key]}")
        out.say(f"{'key_usage':12} {', '.join(report['key_usage'])}")
        for key, value in report["identity"].items():
            out.say(f"{'identity':12} {key} = {value}")
        for i, subject in enumerate(report["chain"]):
            out.say(f"{'chain':12} {'  ' * i}{subject}")
        out.say(f"{'accepted_by':12} {', '.join(report['accepted_by']) or '-'}")


@audit_app.command("verify")
def audit_verify(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check the audit hash chain; report the first bad row. 驗證稽核紀錄。"""
    with command(as_json) as out:
        result = app_for(ctx).audit.verify()
        out.result.update(
            rows=result.rows, first_bad_seq=result.first_bad_seq, reason=result.reason
        )
        if not result.ok:
            raise RefusedError(
                ErrorCode.INVALID_VALUE, field="audit",
                detail=f"row {result.first_bad_seq}: {result.reason}",
                first_bad_seq=result.first_bad_seq, reason=result.reason,
            )  # fmt: skip
        out.say(f"稽核紀錄完整 / audit chain intact: {result.rows} rows")


@audit_app.command("show")
def audit_show(
    ctx: typer.Context,
    registration_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOption = False,
) -> None:
    """The audit rows of one registration. 顯示註冊作業的稽核紀錄。"""
    with command(as_json) as out:
        entries = app_for(ctx).audit.entries(registration_id)
        if not entries:
            raise RefusedError(ErrorCode.REGISTRATION_NOT_FOUND, field="id")
        out.result["entries"] = entries
        for e in entries:
            out.say(
                f"#{e['seq']} {e['at']} {e['actor']} {e['event']} "
                f"{e['from_state'] or '-'} → {e['to_state'] or '-'} "
                f"{json.dumps(e['diff'], ensure_ascii=False)}"
            )


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Write to FILE (default: stdout; the summary on stderr)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The audit log as JSON Lines with the chain hashes, for auditors. 匯出稽核紀錄。

    Check an export with scripts/verify-audit-export.py (Python standard library only).
    """
    with command(as_json) as out:
        audit = app_for(ctx).audit
        if output is None:
            out.to_stderr = True  # stdout carries the export itself
            exported = audit.export(sys.stdout)
            sys.stdout.flush()
        else:
            exported = _export_to_file(audit, output)
            out.result["output"] = str(output)
        out.result.update(rows=exported.rows, last_hash=exported.last_hash)
        out.say(f"已匯出 / exported {exported.rows} rows" + (f" to {output}" if output else ""))
        if exported.last_hash:
            out.say(f"最後雜湊 / last hash: {exported.last_hash} (keep it to detect truncation)")


def _export_to_file(audit: AuditService, output: Path) -> AuditExport:
    """Write the export next to ``output`` and move it into place: never a half-written file."""
    directory = output.resolve().parent
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{output.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(detail=f"cannot write {output}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            exported = audit.export(handle)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return exported


@readers_app.command("list")
def readers_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Card readers and whether a card is present. 列出讀卡機。

    PC/SC readers (bridge pcsc) and the slots of the PKCS#11 modules named in
    SWREG_PKCS11_MODULES (comma-separated paths; bridge pkcs11, with the --card URI of each token),
    and whether the mobile citizen certificate (TW FidO, --card twfido:ID) is configured.
    """
    from readers import list_readers

    with command(as_json) as out:
        twfido = settings(ctx).twfido
        out.result["twfido"] = (
            {"configured": True, "url": twfido.url, "service_id": twfido.service_id}
            if twfido
            else {"configured": False}
        )
        found = list_readers()
        out.result["readers"] = [
            {
                "name": r.name,
                "card_present": r.card_present,
                "profile": r.profile,
                "bridge": r.bridge,
                "token": r.token,
                "spec": r.spec,
            }
            for r in found
        ]
        for r in found:
            line = f"{r.name}  {'card' if r.card_present else 'empty'}  {r.profile or ''}"
            out.say(f"{line}  {r.bridge}  {r.spec or ''}".rstrip())
        if not found:
            out.say("找不到讀卡機 / no card reader found")
        if twfido:
            out.say(f"行動自然人憑證 / mobile ID: TW FidO at {twfido.url} (--card twfido:ID)")
        else:
            out.say("行動自然人憑證 / mobile ID: not configured (SWREG_TWFIDO_URL)")


@card_app.command("serve")
def card_serve(
    file: Path,
    slot: Annotated[
        int, typer.Option("--slot", help="vpcd reader slot: 0 = 'Virtual PCD 00 00'.")
    ] = 0,
    port: Annotated[
        int | None, typer.Option("--port", help="vpcd TCP port (default: 35963 + slot).")
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", help="piv (read, PIN, sign) or gpki (read only).")
    ] = "piv",
    state: Annotated[
        Path | None, typer.Option("--state", help="Keep the PIN retry counter in this file.")
    ] = None,
    pin_stdin: Annotated[
        bool, typer.Option("--pin-stdin", help="Read the PIN from stdin.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Insert a PKCS#12 file as a virtual card into a vpcd reader of pcscd (test material).

    The PKCS#12 password is the card's PIN. The card stays in the reader until Ctrl-C.
    """
    from readers.vcard import CardThread, PivApplet, RetryState, port_for_slot
    from readers.vcard._gpki import GpkiApplet
    from readers.virtual import VirtualP12Card

    with command(as_json) as out:
        if profile not in ("piv", "gpki"):
            raise UsageError(detail="--profile is piv or gpki")
        data = read_file(file)
        pin = read_pin(pin_stdin)
        applet: Any
        if profile == "piv":
            retries = RetryState.file(state) if state else None
            applet = PivApplet.from_pkcs12(data, pin, state=retries)
        else:
            with VirtualP12Card(file) as soft:
                soft.verify_pin(pin)
                chain = soft.read_chain()
                applet = GpkiApplet(soft.read_certificate(), issuer_cert=chain[0] if chain else b"")
        del pin
        port = port or port_for_slot(slot)
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # the card thread inherits it
        try:
            thread = CardThread(applet, port=port).start()
        except OSError as exc:
            raise EnvironmentProblem(
                ErrorCode.NO_READER,
                detail=f"vpcd is not listening on port {port}; start pcscd (vsmartcard-vpcd)",
            ) from exc
        out.result.update(slot=slot, port=port, profile=profile)
        typer.echo(
            f"虛擬卡片已插入 / virtual {profile.upper()} card inserted: vpcd slot {slot} "
            f"(port {port}); Ctrl-C to remove",
            err=as_json,
        )
        try:
            signal.sigwait(stop_signals)
        finally:
            thread.stop()
        out.say("已移除 / removed")


@app.command()
def agent(
    origin: Annotated[
        list[str],
        typer.Option("--origin", help="A page origin allowed to use the agent (repeatable)."),
    ],
    port: Annotated[int, typer.Option("--port", help="Loopback port to listen on.")] = 61234,
    host: Annotated[str, typer.Option("--host", help="Loopback address only.")] = "127.0.0.1",
    allow_virtual: Annotated[
        bool, typer.Option("--allow-virtual", help="Also open virtual:FILE.p12 cards (testing).")
    ] = False,
    pkcs11_module: Annotated[
        list[str] | None,
        typer.Option(
            "--pkcs11-module",
            help="Offer the tokens of this PKCS#11 module, by absolute path (repeatable); "
            "the page can use no other module.",
        ),
    ] = None,
) -> None:
    """The local card agent: a WebSocket server on 127.0.0.1 for the registration page."""
    from readers.agent import AgentConfig, run_agent

    with command(False) as out:
        schemes = frozenset({"pcsc", "virtual"} if allow_virtual else {"pcsc"})
        config = AgentConfig(
            host=host,
            port=port,
            allowed_origins=frozenset(origin),
            card_schemes=schemes,
            pkcs11_modules=tuple(pkcs11_module or ()),
        )
        typer.echo(f"swreg agent: ws://{host}:{port}/ for {', '.join(sorted(origin))}")
        run_agent(config)
        out.say("swreg agent stopped")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="uvicorn worker processes.")] = 1,
) -> None:
    """The registration portal: HTTP API and web wizard (FastAPI on uvicorn). 啟動註冊網站。

    The portal answers only its public origin's Host (SWREG_PUBLIC_ORIGIN; unset, the address
    and port it listens on)."""
    import logging

    import uvicorn

    from engine._logging import log_config
    from engine.web._http import BoundedHttpToolsProtocol
    from engine.web.asgi import PortalFactory

    with command(False):
        configured = _listening_origin(settings(ctx), host, port)
        bootstrap(configured).close()  # migrate once, before the workers start
        typer.echo(f"swreg portal: {configured.public_origin}/ (listening on {host}:{port})")
        config = uvicorn.Config(
            PortalFactory(configured),  # each worker process gets these settings (pickled)
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http=BoundedHttpToolsProtocol,  # llhttp, its head bounded (engine/web/_http.py)
            loop="uvloop",
            proxy_headers=False,
            server_header=False,
            log_config=log_config(),  # every line JSON once started (engine/_logging.py)
            access_log=False,  # raw paths hold tokens: engine/web/_request_log.py logs requests
            log_level="info",
        )
        with metrics.shared_across_workers(workers):  # prometheus-client's multiprocess mode
            if workers > 1:
                _serve_workers(config)
            else:
                uvicorn.Server(config).run()
        logging.getLogger("swreg.portal").info(
            "swreg portal stopped", extra={"event": "portal_stopped"}
        )


def _listening_origin(configured: Settings, host: str, port: int) -> Settings:
    """Without SWREG_PUBLIC_ORIGIN the portal's origin is where it listens (``--host``,
    ``--port``), so that the Host check answers what the command prints; a wildcard address
    names no origin, and then the default one stays until SWREG_PUBLIC_ORIGIN says better."""
    if os.environ.get("SWREG_PUBLIC_ORIGIN") or host in ("0.0.0.0", "::", ""):
        return configured
    shown = f"[{host}]" if ":" in host else host
    return replace(configured, public_origin=f"http://{shown}:{port}")


def _serve_workers(config: Any) -> None:
    """uvicorn's worker processes on one listening socket with TCP_NODELAY.

    With several workers uvicorn hands each one the bound socket, and asyncio then leaves Nagle's
    algorithm on for the connections they accept: every response waits ≈ 40 ms for the client's
    delayed ACK (measured: 165 → 850 requests/s on a trivial route with 2 workers). Accepted
    sockets inherit the option on Linux.
    """
    import socket

    from uvicorn.supervisors import Multiprocess

    class Workers(Multiprocess):
        """Tells prometheus-client of every worker that is gone (replaced, or at the end)."""

        def _reaping(self, step: Callable[[], None]) -> None:
            before = {process.pid for process in self.processes}
            step()
            for pid in before - {process.pid for process in self.processes}:
                metrics.worker_exited(pid)

        def handle_signals(self) -> None:
            self._reaping(super().handle_signals)

        def keep_subprocess_alive(self) -> None:
            self._reaping(super().keep_subprocess_alive)

        def join_all(self) -> None:
            super().join_all()
            for process in self.processes:
                metrics.worker_exited(process.pid)

    listener = config.bind_socket()
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Workers(config, sockets=[listener]).run()


@app.command()
def demo(
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Keep the demo PKI, cards and database here.")
    ] = None,
    serve: Annotated[
        bool,
        typer.Option("--serve", help="Then serve the portal with virtual cards (needs pcscd)."),
    ] = False,
    port: Annotated[int, typer.Option("--port", help="Portal port for --serve.")] = 8000,
    as_json: JsonOption = False,
) -> None:
    """Register one applicant of each category with virtual test cards. 示範註冊流程。"""
    from engine.testing.demo import run_demo

    with command(as_json) as out:
        summary = run_demo(out_dir, say=_narrator(as_json), serve_port=port if serve else None)
        out.result.update(summary)


def _narrator(as_json: bool) -> Callable[[str], None]:
    """The demo's narration: on stdout, or on stderr with ``--json`` (stdout holds the one JSON
    object), so that a long run is never silent."""
    if as_json:
        return lambda line: typer.echo(line, err=True)
    return typer.echo


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv, prog_name="swreg")
