"""``swreg serve --workers N`` with TCP_NODELAY on the listening socket, for bench/portal.py.

What the proposed patch of ``engine/cli.py`` does: with more than one worker, uvicorn binds
the listening socket itself with protocol 0, and asyncio only sets TCP_NODELAY on accepted
sockets whose protocol is IPPROTO_TCP; uvicorn writes a response's head and body separately,
so on a kept-alive connection the body waits for the client's delayed ACK (≈ 40 ms on Linux).
Accepted sockets inherit the listener's TCP_NODELAY on Linux. Settings come from the
environment, as for ``swreg serve`` (the database must be migrated already);
``SWREG_BENCH_SQLITE_SYNCHRONOUS=NORMAL`` also applies the proposed SQLite setting.

    .venv/bin/python bench/serve_nodelay.py PORT WORKERS
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import event
from uvicorn.supervisors import Multiprocess

from engine.web.asgi import create_app_from_env

SYNCHRONOUS = "SWREG_BENCH_SQLITE_SYNCHRONOUS"
"""``NORMAL``: also the proposed ``PRAGMA synchronous=NORMAL`` of SQLite files in WAL mode."""


def create_app() -> FastAPI:
    """The portal of ``swreg serve``, with the SQLite PRAGMA of ``SWREG_BENCH_SQLITE_SYNCHRONOUS``
    on every new connection when it is set."""
    web = create_app_from_env()
    mode = os.environ.get(SYNCHRONOUS)
    engine = web.state.portal.app.database.engine
    if mode and engine.dialect.name == "sqlite":

        def pragma(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA synchronous={mode}")

        event.listen(engine, "connect", pragma)
        engine.dispose()  # connections made before the listener
    return web


def main() -> None:
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    config = uvicorn.Config(
        "serve_nodelay:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        proxy_headers=False,
        server_header=False,
        log_level="warning",
    )
    sock = config.bind_socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()


if __name__ == "__main__":
    main()
