"""The app factory: routes, middleware, error table, and the lifespan that owns the model."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from . import __version__, protocol_v1, protocol_v2
from .dataplane import DataPlane
from .metrics import Metrics, MetricsMiddleware
from .settings import Settings
from .web import BodyLimitMiddleware, install_error_handlers, json_response


def create_app(settings: Settings) -> FastAPI:
    """Build the ASGI app. Nothing heavy happens here: the model loads in the lifespan hook."""
    metrics = Metrics()
    dataplane = DataPlane(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await dataplane.start()
        try:
            yield
        finally:
            await dataplane.stop()

    app = FastAPI(
        title="modelship inference server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.dataplane = dataplane
    app.state.metrics = metrics

    @app.get("/health", tags=["probes"])
    async def health() -> Response:
        """Readiness/startup probe: 200 only when the model is loaded and warmed up."""
        return json_response(dataplane.health(), 200 if dataplane.ready else 503)

    @app.get("/health/live", tags=["probes"])
    async def live() -> Response:
        """Liveness: the event loop answers. Never touches the model."""
        return json_response({"live": True})

    @app.get("/metrics", tags=["metrics"])
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(protocol_v1.router(dataplane))
    app.include_router(protocol_v2.router(dataplane))
    install_error_handlers(app, settings.retry_after_s)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last = outermost: sees 413s too
    return app
