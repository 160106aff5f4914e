"""``swreg customs-cert``: 通關憑證註冊、查詢與刪除 (customs certificates of Turnkey systems)."""

from __future__ import annotations

import typer

customs_app = typer.Typer(
    help="通關憑證註冊、查詢與刪除 (customs certificates of Turnkey systems).", no_args_is_help=True
)
