"""Progress of long commands on stderr: a rich progress bar on a terminal, plain lines when
stderr is no terminal (cron, a pipe, a CI log) or with ``--json`` (stdout then holds the one
JSON object and nothing else).

``swreg revocation refresh`` reports each CRL as it streams in (bytes) and when it is verified
(its entries); :class:`CliProgress` is the :class:`~engine.services.revocation.RefreshProgress`
it is given. ``swreg purge`` reports each step with its count (:meth:`CliProgress.step`).
Plain lines are few on purpose: one when a download starts, one per :data:`LINE_EVERY_BYTES`
received, one when it ends.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Final, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from engine.services.revocation import SourceReport

LINE_EVERY_BYTES: Final = 8 * 1024 * 1024
"""Plain output prints one line per this many bytes of one download."""


def _size(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB" if size >= 1024 * 1024 else f"{size:,} B"


class CliProgress:
    """Progress on stderr (see the module docstring); use it as a context manager."""

    def __init__(self, *, as_json: bool, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._bar: Progress | None = None
        if not as_json and self._stream.isatty():
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
                console=Console(file=self._stream),
                transient=False,
            )
        self._tasks: dict[str, TaskID] = {}
        self._printed: dict[str, int] = {}

    def __enter__(self) -> CliProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def _line(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    # -- steps ---------------------------------------------------------------------------------

    def step(self, label: str, count: int) -> None:
        """One step of a command is done (``swreg purge``'s deletions), with its count."""
        if self._bar is not None:
            self._bar.console.print(f"✓ {label}: {count:,}")
        else:
            self._line(f"✓ {label}: {count:,}")

    # -- RefreshProgress -------------------------------------------------------------------------

    def begin(self, url: str) -> None:
        if self._bar is not None:
            self._tasks[url] = self._bar.add_task(url, total=None)
        else:
            self._printed[url] = 0
            self._line(f"… {url}")

    def received(self, url: str, size: int) -> None:
        if self._bar is not None:
            self._bar.update(self._tasks[url], completed=size)
        elif size - self._printed.get(url, 0) >= LINE_EVERY_BYTES:
            self._printed[url] = size
            self._line(f"… {url}: {_size(size)}")

    def end(self, report: SourceReport) -> None:
        done = report.outcome
        if report.size is not None:
            done += f", {_size(report.size)}"
        if report.entries is not None:
            done += f", {report.entries:,} entries"
        if self._bar is not None:
            task = self._tasks[report.url]
            self._bar.update(task, total=report.size or 0, completed=report.size or 0)
            self._bar.update(task, description=f"{report.url}: {done}")
        else:
            self._line(f"{'✓' if report.ok else '✗'} {report.url}: {done}")


__all__ = ["LINE_EVERY_BYTES", "CliProgress"]
