"""HTTP connections: uvicorn's httptools protocol, plus a deadline for a request's head.

Why: uvicorn arms no timer on a new connection, and any byte disarms its keep-alive timer, so
a client that connects and sends nothing, or drips a request line and headers a byte at a
time, holds a connection (a file descriptor and a parser) for as long as it likes. A few
thousand of those starve the pod. The body has its own deadline in the app (``hotpath.py``,
``web.BodyLimitMiddleware``); this one covers what comes before the app sees a request.

The deadline runs from the connection's start, and from the end of each response, until the
next request's headers are complete; when it passes, the client gets a 408 and the connection
is closed. A request being served (or a pipelined one waiting) never arms it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_TIMEOUT_BODY = b"request head (request line and headers) not received in time"


class HeadDeadlineProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes a connection whose next request head is late."""

    head_timeout_s: float = 30.0
    """Seconds a connection may take to send a request's head; set by :func:`protocol`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is None or self.cycle.response_complete:  # nothing pipelined is running
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        headers = b"".join(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers)
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\n" + headers + b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(HEAD_TIMEOUT_BODY), HEAD_TIMEOUT_BODY)
        )
        self.transport.close()


def protocol(head_timeout_s: float) -> type[HeadDeadlineProtocol]:
    """The protocol class for uvicorn's ``http=`` with this deadline."""
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"head_timeout_s": head_timeout_s})
