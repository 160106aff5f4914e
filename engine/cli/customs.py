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

from engine._errors import UsageError
from engine.cli.support import (
    JsonOption,
    Output,
    app_for,
    command,
    read_answers,
    read_file,
    read_pin,
)
from engine.core.declarations import ImportKind
from engine.services.customs import COLUMNS, CustomsCertificateService, CustomsImport

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
        typer.Option("--card", help="IC卡類憑證: pcsc:NAME_OR_INDEX or virtual:FILE.p12."),
    ] = None,
    pin_stdin: Annotated[
        bool, typer.Option("--pin-stdin", help="Read the card's PIN from stdin.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """通關憑證註冊: import a Turnkey signing certificate (exactly one of --cer or --card)."""
    with command(as_json) as out:
        if (cer is None) == (card is None):
            raise UsageError(detail="give exactly one of --cer FILE or --card SPEC")
        data = read_answers(answers)
        service = app_for(ctx).customs
        if cer is not None:
            result = service.import_certificate(
                usage_type, data, certificate=read_file(cer), kind=ImportKind.NON_IC
            )
        else:
            result = _import_from_card(service, usage_type, data, str(card), pin_stdin)
        _report_import(out, result)


def _import_from_card(
    service: CustomsCertificateService,
    usage_type: str,
    data: dict[str, Any],
    spec: str,
    pin_stdin: bool,
) -> CustomsImport:
    """Read the certificate from the card after its PIN; the card proves it holds the key."""
    from readers import open_card

    with open_card(spec) as opened:
        opened.verify_pin(read_pin(pin_stdin))
        return service.import_certificate(
            usage_type, data, certificate=opened.read_certificate(), kind=ImportKind.IC_CARD,
            chain=opened.read_chain(), signature_check=opened.sign,
        )  # fmt: skip


def _report_import(out: Output, result: CustomsImport) -> None:
    out.result.update(
        id=result.id,
        query_key=result.query_key,
        fingerprint=result.fingerprint,
        usage_type=result.usage_type,
        kind=result.kind.value,
        certificate_kind=result.certificate_kind.value,
        message=result.message,
    )
    out.say(f"{result.message} / the certificate was imported")
    out.say(f"查詢鍵 / query key: {result.query_key}  (id {result.id})")
    out.say(f"{result.certificate_kind.labels.zh_tw}  {result.fingerprint[:16]}…")


@customs_app.command("query")
def query(
    ctx: typer.Context,
    key: Annotated[
        str, typer.Argument(help="A00001 (大關別+專責人員代碼), UBN, 身分證字號 or OID.")
    ],
    as_json: JsonOption = False,
) -> None:
    """通關憑證查詢: the certificates registered under a query key."""
    with command(as_json) as out:
        rows = app_for(ctx).customs.query(key)
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
        view = application.logins.session(session)
        application.customs.delete(certificate_id, session=view, actor="cli")
        out.result.update(id=certificate_id, status="deleted")
        out.say(f"已刪除 / deleted: {certificate_id}")
