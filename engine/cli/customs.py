"""``swreg customs-cert``: 通關憑證註冊、查詢與刪除 (customs certificates of Turnkey systems).

Thin: each command reads its inputs, calls the customs certificate service
(:class:`~engine.services.customs.CustomsCertificateService`) and prints the result (DESIGN.md
§9). An IC-card import opens the card here, verifies the PIN on it and hands the service the
certificate, the card's chain and the card's signer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from engine._bootstrap import App
from engine._errors import ErrorCode, RefusedError, UsageError
from engine.cli.support import (
    CARD_HELP,
    JsonOption,
    Output,
    app_for,
    command,
    read_answers,
    read_file,
    read_pin,
)
from engine.core.declarations import ImportKind
from engine.pki.signatures import Signer, key_file_signer
from engine.services.customs import COLUMNS, CustomsCertificateService, CustomsImport
from engine.services.login import SessionView

customs_app = typer.Typer(
    help="通關憑證註冊、查詢與刪除 (customs certificates of Turnkey systems).", no_args_is_help=True
)


@customs_app.command("import")
def import_certificate(
    ctx: typer.Context,
    usage_type: Annotated[
        str, typer.Option("--usage-type", help="憑證使用類型 code (swreg types), e.g. shipping.")
    ],
    answers: Annotated[
        Path, typer.Option("--answers", help="JSON or TOML file: ubn, or the 報關專責人員 fields.")
    ],
    cer: Annotated[
        Path | None, typer.Option("--cer", help="非IC卡類憑證: a .cer file (DER or PEM).")
    ] = None,
    card: Annotated[
        str | None,
        typer.Option(
            "--card",
            help=f"IC卡類憑證: {CARD_HELP}",
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="The .cer's private key (PEM or DER): signs a challenge here."),
    ] = None,
    p12: Annotated[
        Path | None,
        typer.Option("--p12", help="A PKCS#12 file holding the .cer's key (password prompted)."),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            help="The owner's card-login session token (swreg_session): proves ownership "
            "instead of --key (報關專責人員: required).",
        ),
    ] = None,
    pin_stdin: Annotated[
        bool,
        typer.Option("--pin-stdin", help="Read the card's PIN (or the key's password) from stdin."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """通關憑證註冊: import a Turnkey signing certificate (exactly one of --cer or --card).

    The importer proves it owns the certificate (DESIGN.md §5): a card signs a challenge; a
    .cer needs its key (--key or --p12) or the owner's card login (--session).
    """
    with command(as_json) as out:
        if (cer is None) == (card is None):
            raise UsageError(detail="give exactly one of --cer FILE or --card SPEC")
        if key is not None and p12 is not None:
            raise UsageError(detail="give at most one of --key FILE or --p12 FILE")
        if card is not None and (key is not None or p12 is not None):
            raise UsageError(detail="--key and --p12 go with --cer")
        data = read_answers(answers)
        application = app_for(ctx)
        view = _card_login(application, session)
        service = application.customs
        if cer is None:
            result = _import_from_card(service, usage_type, data, str(card), pin_stdin, view)
        elif p12 is not None:
            result = _import_with_card(
                service, usage_type, data, cer, f"virtual:{p12}", pin_stdin, view
            )
        else:
            signer = _key_signer(key, pin_stdin) if key is not None else None
            result = service.import_certificate(
                usage_type, data, certificate=read_file(cer), kind=ImportKind.NON_IC,
                signature_check=signer, session=view,
            )  # fmt: skip
        _report_import(out, result)


def _card_login(application: App, token: str | None) -> SessionView | None:
    """The card login ``--session`` names; a token given that is not a live session is
    ``session_expired`` (not a silent "not logged in")."""
    if token is None:
        return None
    view = application.logins.session(token)
    if view is None:
        raise RefusedError(ErrorCode.SESSION_EXPIRED, field="session")
    return view


def _key_signer(path: Path, pin_stdin: bool) -> Signer:
    """The signer of a private key file; an encrypted one asks for its password."""
    data = read_file(path)
    signer = key_file_signer(data)
    if signer is None and b"ENCRYPTED" in data:
        signer = key_file_signer(data, read_pin(pin_stdin).encode("utf-8"))
    if signer is None:
        raise UsageError(detail=f"{path}: no RSA or EC private key (or a wrong password)")
    return signer


def _import_with_card(
    service: CustomsCertificateService,
    usage_type: str,
    data: dict[str, Any],
    cer: Path,
    spec: str,
    pin_stdin: bool,
    session: SessionView | None,
) -> CustomsImport:
    """A .cer whose key is in a PKCS#12 file: the file signs a fresh challenge."""
    from readers import open_card

    with open_card(spec) as opened:
        opened.verify_pin(read_pin(pin_stdin))
        return service.import_certificate(
            usage_type, data, certificate=read_file(cer), kind=ImportKind.NON_IC,
            signature_check=opened.sign, session=session,
        )  # fmt: skip


def _import_from_card(
    service: CustomsCertificateService,
    usage_type: str,
    data: dict[str, Any],
    spec: str,
    pin_stdin: bool,
    session: SessionView | None,
) -> CustomsImport:
    """Read the certificate from the card after its PIN; the card proves it holds the key."""
    from readers import open_card

    with open_card(spec) as opened:
        opened.verify_pin(read_pin(pin_stdin))
        return service.import_certificate(
            usage_type, data, certificate=opened.read_certificate(), kind=ImportKind.IC_CARD,
            chain=opened.read_chain(), signature_check=opened.sign, session=session,
        )  # fmt: skip


def _report_import(out: Output, result: CustomsImport) -> None:
    out.result.update(
        id=result.id,
        query_key=result.query_key,
        fingerprint=result.fingerprint,
        usage_type=result.usage_type,
        kind=result.kind.value,
        certificate_kind=result.certificate_kind.value,
        message=result.message.zh_tw,
    )
    out.say(f"{result.message.zh_tw} / {result.message.en}")
    out.say(f"查詢鍵 / query key: {result.query_key}  (id {result.id})")
    out.say(f"{result.certificate_kind.labels.zh_tw}  {result.fingerprint[:16]}…")


@customs_app.command("query")
def query(
    ctx: typer.Context,
    key: Annotated[
        str, typer.Argument(help="A00001 (大關別+專責人員代碼), UBN, 身分證字號 or OID.")
    ],
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            help="A card-login session token: its own account's rows are shown unmasked.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """通關憑證查詢: the certificates registered under a query key (personal values masked
    unless --session is the owner's card login)."""
    with command(as_json) as out:
        application = app_for(ctx)
        view = _card_login(application, session)
        rows = application.customs.query(key, session=view)
        out.result["rows"] = [row.as_dict() for row in rows]
        out.say(" | ".join(["id", *(labels.zh_tw for _, labels in COLUMNS), "狀態 / status"]))
        for row in rows:
            out.say(
                f"{row.id} | {row.form} | {row.kind} | {row.purpose} | {row.info} | {row.status}"
            )
        if not rows:
            out.say("查無資料 / nothing registered under this key")


@customs_app.command("delete")
def delete(
    ctx: typer.Context,
    certificate_id: Annotated[int, typer.Argument(metavar="ID", help="The id 查詢 shows.")],
    session: Annotated[
        str,
        typer.Option(
            "--session",
            help="The session token of the owner's card login (憑證登入, swreg_session cookie).",
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """刪除通關憑證: the owner, logged in with its card (憑證登入), deletes a certificate."""
    with command(as_json) as out:
        application = app_for(ctx)
        view = _card_login(application, session)
        application.customs.delete(certificate_id, session=view, actor="cli")
        out.result.update(id=certificate_id, status="deleted")
        out.say(f"已刪除 / deleted: {certificate_id}")
