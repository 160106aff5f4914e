"""SQLite files and the key file are owner-only (DESIGN.md §6, "Retention"): real files.

Every command that opens a SQLite database sets the database, its ``-wal`` and ``-shm`` files
and the key file to 0600; a looser existing mode is tightened with a warning. The umask is set
to the usual 022 around each test, so a file created with the default mode would be 0644.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from engine import Settings
from engine.store import Database


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sidecars(path: Path) -> tuple[Path, Path]:
    return Path(f"{path}-wal"), Path(f"{path}-shm")


def test_a_new_database_and_its_wal_and_shm_files_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "swreg.db"
    database = Database(f"sqlite:///{path}")
    try:
        database.migrate()
        with database.engine.connect() as connection:  # WAL: -wal and -shm exist while open
            connection.execute(text("SELECT count(*) FROM accounts")).scalar()
            files = (path, *sidecars(path))
            assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        database.dispose()


def test_looser_database_wal_and_shm_files_are_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "swreg.db"
    holder = Database(f"sqlite:///{path}")  # another process keeps the database open
    try:
        holder.migrate()
        with holder.engine.connect() as connection:
            connection.execute(text("SELECT count(*) FROM accounts")).scalar()
            files = (path, *sidecars(path))
            for file in files:
                os.chmod(file, 0o644)
            with caplog.at_level(logging.WARNING, logger="swreg.files"):
                database = Database(f"sqlite:///{path}")
            try:
                assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
                warned = [r.getMessage() for r in caplog.records if r.name == "swreg.files"]
                assert warned == [
                    f"{p} was mode 0644 (readable by others): set to 0600" for p in files
                ]
                with database.engine.connect() as other:  # still the same, working database
                    assert other.execute(text("SELECT count(*) FROM accounts")).scalar() == 0
            finally:
                database.dispose()
    finally:
        holder.dispose()


def test_an_owner_only_database_is_left_alone_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "swreg.db"
    Database(f"sqlite:///{path}").dispose()
    os.chmod(path, 0o400)  # stricter than 0600: not "looser", not touched
    with caplog.at_level(logging.WARNING, logger="swreg.files"):
        Database(f"sqlite:///{path}").dispose()
    assert mode(path) == 0o400
    assert caplog.records == []


def test_the_key_file_is_created_owner_only_and_a_looser_one_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "swreg.db"
    settings = Settings(database_url=f"sqlite:///{path}")
    key = settings.identifier_keys()
    key_file = tmp_path / "swreg.db.key"
    assert mode(key_file) == 0o600
    os.chmod(key_file, 0o644)
    with caplog.at_level(logging.WARNING):
        assert settings.identifier_keys() == key
    assert mode(key_file) == 0o600
    assert f"{key_file} was mode 0644 (readable by others): set to 0600" in caplog.messages
