"""``swreg keys``: the server's secret keyring (``SWREG_SECRET_KEY``; docs/operations.md
"Rotating SWREG_SECRET_KEY").

``show`` prints the keyring in use and the database's, by fingerprint (the first 8 hex digits of
a key's SHA-256; never a key). ``rotate`` adds a new key (32 random bytes, or the hex key of
``--new-key-file``) and rewrites every stored keyed hash under it in one transaction, then
replaces the key file with the longer keyring (``<key file>.next`` first, renamed after the
commit). With ``SWREG_SECRET_KEY`` in the environment no file is written: ``--new-key-file`` is
required (exit 2 without), and the new key is to be appended to ``SWREG_SECRET_KEY``. Stop every
portal first and start them with the new keyring after: a process holding the old one is
refused at start, and ``/readyz`` of one still running says ``secret key does not match``.

``--json``: ``show`` → ``{ok, keys, fingerprint, source, database_keys, database_fingerprint,
matches}``; ``rotate`` → ``{ok, fingerprint, previous_fingerprint, keys, rewritten: {accounts,
certificates, registrations, mobile_id_tickets, rate_limits}, key_file}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine._errors import ErrorCode, RefusedError
from engine.cli.support import JsonOption, app_for, command, read_file

keys_app = typer.Typer(
    help="The secret keyring of the keyed ID hashes (SWREG_SECRET_KEY).", no_args_is_help=True
)


@keys_app.command("show")
def keys_show(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The keyring in use and the database's, by fingerprint. 顯示金鑰環。"""
    with command(as_json) as out:
        view = app_for(ctx).secret_keys.view()
        out.result.update(view.as_dict())
        out.say(
            f"使用中 / in use: {view.keys} 把金鑰 / keys, 最新 / newest {view.fingerprint} "
            f"({view.source})"
        )
        if view.database_fingerprint is not None:
            out.say(
                f"資料庫 / database: {view.database_keys} 把金鑰 / keys, 最新 / newest "
                f"{view.database_fingerprint}"
            )


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            "--new-key-file",
            help="A file holding the new key in hex (≥ 32 bytes); default: 32 random bytes. "
            "Required when the keyring is SWREG_SECRET_KEY's.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a new key and rewrite every stored keyed hash under it. 輪替金鑰。"""
    with command(as_json) as out:
        new_key = _read_key(new_key_file) if new_key_file is not None else None
        rotation = app_for(ctx).secret_keys.rotate(new_key, actor="cli")
        out.result.update(rotation.as_dict())
        counts = ", ".join(f"{name} {n}" for name, n in rotation.rewritten.items())
        out.say(
            f"已輪替 / rotated: {rotation.previous_fingerprint} → {rotation.fingerprint} "
            f"({rotation.keys} 把金鑰 / keys)"
        )
        out.say(f"已改寫 / rewritten: {counts}")
        if rotation.key_file is not None:
            out.say(f"金鑰檔 / key file: {rotation.key_file}")
        else:
            out.say(
                "請將新金鑰加到 SWREG_SECRET_KEY 的最後 / append the new key to SWREG_SECRET_KEY: "
                f'SWREG_SECRET_KEY="$SWREG_SECRET_KEY,$(cat {new_key_file})"'
            )


def _read_key(path: Path) -> bytes:
    text = read_file(path, limit=4096).decode("ascii", errors="replace").strip()
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise RefusedError(
            ErrorCode.INVALID_VALUE, field="new_key_file", detail="one key in hex"
        ) from None


__all__ = ["keys_app"]
