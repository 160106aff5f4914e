"""Processes the tests start (``swreg serve``, ``swreg agent``): spawn, wait until ready, stop.

Every process is stopped by its PID, together with the descendants it forked (uvicorn workers),
found by PID and start time so that a recycled PID is never signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

SWREG = str(Path(sys.executable).parent / "swreg")
STARTUP_TIMEOUT = 30.0


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def descendants(pid: int) -> list[tuple[int, str]]:
    """(PID, start time) of every live descendant of ``pid`` (uvicorn workers, helpers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            started = start_time(child)
            if started is not None:
                found.append((child, started))
                todo.append(child)
    return found


def kill_leftovers(children: list[tuple[int, str]]) -> None:
    """SIGKILL each (PID, start time) that is still the same process."""
    for pid, started in children:
        if start_time(pid) == started:  # still the same process: a leftover of ours
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a process we started (SIGTERM, then SIGKILL) and any descendant it left behind."""
    children = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    kill_leftovers(children)


def kill_process_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process we started and all its descendants at once: a crash, no shutdown."""
    children = descendants(process.pid)
    with suppress(ProcessLookupError):
        process.kill()
    kill_leftovers(children)
    process.wait(timeout=15)


def log_tail(path: Path, limit: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-limit:]


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, what: str
) -> None:
    """Poll ``ready`` until it holds; fail early (with the log) if the process exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in {STARTUP_TIMEOUT} s:\n{log_tail(log)}")
        time.sleep(0.05)  # startup polling only; the tests themselves never sleep


def answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP answer, even an error status, means the server is up
    except OSError:
        return False


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in the log's directory with stdout and stderr appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)


def swreg_env(**settings: str) -> dict[str, str]:
    """This environment without any ``SWREG_*`` variable, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWREG_")}
    env.update(settings)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def serve(
    database_url: str, secret_hex: str, port: int, log: Path, *, workers: int = 2, **extra: str
) -> subprocess.Popen[bytes]:
    """``swreg serve --workers N`` on ``port``, answering ``GET /`` when this returns."""
    origin = f"http://127.0.0.1:{port}"
    env = swreg_env(
        SWREG_DATABASE_URL=database_url,
        SWREG_SECRET_KEY=secret_hex,
        SWREG_ARGON2="1,64,1",
        SWREG_PUBLIC_ORIGIN=origin,
        **extra,
    )
    args = [SWREG, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    process = spawn(args, env, log)
    try:
        wait_until(lambda: answers_http(origin + "/"), process, log, "swreg serve")
    except BaseException:
        stop_process(process)
        raise
    return process
