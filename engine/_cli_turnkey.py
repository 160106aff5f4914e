"""``swreg turnkey``: Turnkey message verification (訊息簽章驗證)."""

from __future__ import annotations

import typer

turnkey_app = typer.Typer(help="Turnkey message verification (訊息簽章驗證).", no_args_is_help=True)
