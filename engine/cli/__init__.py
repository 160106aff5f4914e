"""The ``swreg`` command (DESIGN.md §9): one module per command group, each a thin caller of the
services; :func:`main` is the console script.
"""

from engine.cli.app import app, main

__all__ = ["app", "main"]
