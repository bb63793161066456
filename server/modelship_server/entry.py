"""settings → app → uvicorn: what ``modelship-server`` runs (cli.main catches signals first).

SIGTERM handling: readiness turns 503 at once (the app's data plane starts draining), the
listener stays open for ``shutdown_delay_s`` so endpoint controllers can stop routing here,
then uvicorn stops accepting, waits for in-flight requests (``graceful_timeout_s``), and the
lifespan shutdown drains whatever is still queued before the model is released.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import pydantic
import uvicorn

from . import cli, connections, workers
from .app import ModelshipApp, create_app
from .settings import Settings, load_settings

log = logging.getLogger("modelship.main")


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that tells the app about SIGTERM before (optionally) delaying exit.

    The delay only matters to a server that was serving (endpoints may still route to it); one
    still loading, or whose load failed, was never ready, so it stops at once instead of making
    the kubelet wait (a rollback of a slow model would otherwise hold its pod, and maybe its
    GPU, for the whole grace period)."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_signal: Callable[[], None],
        delay_s: float,
        serving: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(config)
        self._on_signal = on_signal
        self._delay_s = delay_s
        self._serving = serving
        self._signalled = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._signalled or self._delay_s <= 0 or not self._serving():
            self._signalled = True
            self._on_signal()
            super().handle_exit(sig, frame)
            return
        self._signalled = True
        self._on_signal()
        timer = threading.Timer(self._delay_s, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve(settings: Settings) -> int:
    """One process, or a supervisor over several (``workers``). Returns the exit code."""
    if workers.worker_count(settings) > 1:
        return workers.supervise(settings)
    serve_app(create_app(settings), settings)
    return 0


def uvicorn_config(app: ModelshipApp, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn's settings for ``app`` (the tests serve it with the same ones, on port 0)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": int(max(1, settings.graceful_timeout_s)),
        "lifespan": "on",
        "loop": "auto",
        "http": connections.protocol(settings.request_timeout_s),  # a late request head: 408
        "log_config": None,
    }
    return uvicorn.Config(app, **{**options, **overrides})


def watch_requests(server: uvicorn.Server, app: ModelshipApp) -> None:
    """Let the app's batcher count the requests ``server`` has started: uvicorn creates a
    request's task when its headers are parsed and forgets it when it is done, so a burst read
    in one loop turn is counted before the first of it runs. Call before the server starts."""
    app.state.dataplane.pending = server.server_state.tasks.__len__


def serve_app(app: ModelshipApp, settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """uvicorn over ``app`` with the SIGTERM drain; ``sockets``: already-bound listeners."""
    config = uvicorn_config(app, settings)
    dataplane = app.state.dataplane
    server = DrainingServer(config, dataplane.begin_drain, settings.shutdown_delay_s,
                            serving=lambda: dataplane.state == "ready")
    watch_requests(server, app)
    cli.serving_started()
    server.run(sockets=sockets)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = load_settings(argv)
    except pydantic.ValidationError as exc:
        raise SystemExit(f"modelship-server: invalid settings:\n{exc}") from None
    configure_logging(settings.log_level)
    code = serve(settings)
    if code:
        raise SystemExit(code)
