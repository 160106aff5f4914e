"""``swreg turnkey``: Turnkey message verification (訊息簽章驗證).

``swreg turnkey verify --sender KEY --message FILE --signature FILE [--certificate NAME]
[--json]`` verifies a message's detached signature (raw, base64, or CMS SignedData in DER or
PEM) against the sender's registered signing certificates (DESIGN.md §5), judged at the time of
the check (or at the genTime of a trusted RFC 3161 time-stamp token in the CMS). Success prints
the certificate that verified it; a refusal prints its code and exits 1. ``--certificate`` names
the certificate that signed (SHA-256 fingerprint or serial, hex): only it is tried, and one that
is not the sender's is refused (``not_registered``). ``--signed-at`` is still accepted so older
scripts run, and ignored with a note on stderr: a signing time chosen by the sender never counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.cli.support import JsonOption, app_for, command, read_file
from engine.pki.cms import MAX_SIGNATURE_BYTES

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest message file ``turnkey verify`` reads."""

turnkey_app = typer.Typer(help="Turnkey message verification (訊息簽章驗證).", no_args_is_help=True)


@turnkey_app.command("verify")
def turnkey_verify(
    ctx: typer.Context,
    sender: Annotated[
        str, typer.Option("--sender", help="The sender key: UBN, or broker key such as A00001.")
    ],
    message: Annotated[Path, typer.Option("--message", help="The message file.")],
    signature: Annotated[
        Path,
        typer.Option("--signature", help="Its detached signature: raw, base64, or CMS (DER/PEM)."),
    ],
    certificate: Annotated[
        str | None,
        typer.Option(
            "--certificate",
            help="The certificate that signed: SHA-256 fingerprint or serial (hex). Only it "
            "is tried; one that is not the sender's is refused.",
        ),
    ] = None,
    signed_at: Annotated[
        str | None,
        typer.Option("--signed-at", hidden=True, help="Ignored: the time of the check counts."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify a Turnkey message's signature. 驗證訊息簽章。"""
    with command(as_json) as out:
        if signed_at is not None:
            typer.echo(
                "--signed-at is ignored: the time of the check counts (DESIGN.md §5)", err=True
            )
        body = read_file(message, limit=MAX_MESSAGE_BYTES)
        detached = read_file(signature, limit=MAX_SIGNATURE_BYTES)
        result = app_for(ctx).turnkey.verify(sender, body, detached, certificate=certificate)
        out.result.update(
            sender=result.sender,
            signed_at=result.signed_at.isoformat(),
            certificate=result.certificate(),
        )
        out.say(f"簽章驗證成功 / signature verified: {result.sender}")
        out.say(f"憑證 / certificate: {result.subject}")
        out.say(f"序號 / serial: {result.serial}")
        out.say(f"指紋 / fingerprint: {result.fingerprint}")
        out.say(f"簽章時間 / signed at: {result.signed_at.isoformat()}")
