"""The app factory: routes, middleware, error table, and the lifespan that owns the model."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import PlainTextResponse, Response

from . import __version__, board, openapi, protocol_v1, protocol_v2
from .dataplane import DataPlane
from .hotpath import HotPath
from .metrics import Metrics, MetricsMiddleware
from .settings import Settings
from .web import BodyLimitMiddleware, install_error_handlers, json_response


HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "ready", "reason", "model", "device", "batching", "uptime_seconds"],
    "properties": {
        "status": {"enum": ["loading", "ready", "failed", "unavailable", "draining", "stopped"]},
        "ready": {"type": "boolean"},
        "reason": {"type": ["string", "null"], "description": "Why not ready; null when ready"},
        "model": {"type": "object"},
        "device": {"type": "object"},
        "batching": {"type": "object"},
        "uptime_seconds": {"type": "number"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "processes": {"type": "array", "items": {"type": "object"}},
    },
}
"""The body of /health, ready or not (dataplane.health())."""


class ModelshipApp(FastAPI):
    """FastAPI, except that the served model's inference paths are answered first by
    :class:`HotPath` (same functions, same errors, same metrics, less framework)."""

    hot: HotPath | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.hot is not None and scope["method"] == "POST":
            route = self.hot.routes.get(scope["path"])
            if route is not None:
                await self.hot.serve(scope, receive, send, route)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, dataplane: DataPlane | None = None, snapshot_socket: Path | None = None
) -> ModelshipApp:
    """Build the ASGI app. Nothing heavy happens here: the model loads in the lifespan hook.

    A front end of several (``workers.py``) passes its ``dataplane`` (readiness and metrics
    shared with the other processes, or inference in the model process) and the socket where
    it answers the others' metrics requests."""
    if dataplane is None:
        dataplane = DataPlane(settings, Metrics())
    metrics = dataplane.metrics

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await dataplane.start()
        snapshots = await board.serve_snapshots(snapshot_socket, metrics) if snapshot_socket else None
        grpc_server = None
        if settings.grpc_port:
            from . import grpc_service  # grpc only loads when the service is on

            grpc_server = await grpc_service.start(settings, dataplane)
        try:
            yield
        finally:
            if grpc_server is not None:  # refuse new calls, let running ones finish
                await grpc_server.stop(settings.graceful_timeout_s)
            await dataplane.stop()
            if snapshots is not None:
                snapshots.close()

    app = ModelshipApp(
        title="modelship inference server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # openapi.py serves it, completed and narrowed to the served model
        redirect_slashes=False,  # /health/ is a 404 like any unlisted path, not a 307 to /health
    )
    app.state.dataplane = dataplane
    app.state.metrics = metrics
    app.hot = HotPath(settings, dataplane, metrics)

    health_body = {"application/json": {"schema": HEALTH_SCHEMA}}

    @app.get("/health", tags=["probes"], responses={
        200: {"description": "Ready", "content": health_body},
        503: {"description": "Not ready; the body says why", "content": health_body},
    })  # fmt: skip
    async def health() -> Response:
        """Readiness/startup probe: 200 only when the model is loaded and warmed up (in every
        worker process), 503 with the reason otherwise."""
        return json_response(dataplane.health(), 200 if dataplane.ready else 503)

    @app.get("/health/live", tags=["probes"])
    async def live() -> Response:
        """Liveness: the event loop answers. Never touches the model."""
        return json_response({"live": True})

    @app.get("/metrics", tags=["metrics"], response_class=PlainTextResponse, responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
    })  # fmt: skip
    async def prometheus() -> Response:
        """Prometheus text exposition, added up over every worker process."""
        return Response(await dataplane.render_metrics(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(protocol_v1.router(dataplane))
    app.include_router(protocol_v2.router(dataplane))
    openapi.install(app, dataplane)
    install_error_handlers(app, settings.retry_after_s)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.request_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last = outermost: sees 413s too
    return app
