"""A test service listening on 127.0.0.1 in a thread of the test process: the lifecycle shared
by the emulators of services swreg talks to (:mod:`engine.testing.hipki`,
:mod:`engine.testing.twfido`).

A subclass calls :meth:`LoopbackService._listen_on` from its ``__init__`` and says with
:meth:`~LoopbackService._handler_class` how it answers; it then runs as a context manager::

    with Emulator(...) as service:      # start(): a port of its own (or the one asked for)
        service.port
    # stop(): no longer listening; a handler waiting on ``_released`` (a "hang" switch) returns

``absent=True`` (changeable before ``start``) only picks a port nothing listens on: the service
as a user without it installed sees it, connections refused.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from engine.testing.ports import free_port


class LoopbackService:
    """The start / stop / ``with`` of a threaded HTTP service on 127.0.0.1 (module docstring)."""

    absent: bool
    port: int

    def _listen_on(self, port: int | None, *, absent: bool) -> None:
        """Set up listening on ``port`` (None: any free one), or on nothing when ``absent``."""
        self.absent = absent
        self.port = port or 0
        self._fixed_port = port
        self._released = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> Self:
        """Listen (unless ``absent``: then only pick a port nothing listens on)."""
        if self._httpd is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._released.clear()
        if self.absent:
            self.port = self._fixed_port or free_port()
            return self
        httpd = ThreadingHTTPServer(("127.0.0.1", self._fixed_port or 0), self._handler_class())
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and release hanging requests."""
        self._released.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
