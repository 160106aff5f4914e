"""Owner-only files (DESIGN.md §6): the SQLite database, its ``-wal`` and ``-shm`` files and the
key file are readable by their owner alone."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final

OWNER_ONLY: Final = 0o600

log = logging.getLogger("swreg.files")


def tighten_file_mode(path: Path) -> None:
    """Set ``path`` to owner-only (0600) with a warning when group or others had any access
    (a missing file is left alone)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, OWNER_ONLY)
        log.warning("%s was mode %04o (readable by others): set to 0600", path, mode)
