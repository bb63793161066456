"""The inference routes of the served model, answered before FastAPI sees the request.

Why: for a tiny model, FastAPI's middleware stack, router, ``Request``/``Response`` objects
and exception middleware cost as much CPU as the model call itself (see bench/README.md's
profile). This is a plain ASGI handler for the few exact paths that carry inference for the
served model (``/v1/models/{name}:predict``, ``/v2/models/{name}[/versions/1]/infer``); it
runs the very same protocol functions as the FastAPI routes, applies the same body limit and
the same error table, and records the same metrics. Everything else (other model names,
metadata, probes, 404/405) goes to FastAPI, whose routes also describe these endpoints in the
OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import errors, protocol_v1, protocol_v2
from .dataplane import DataPlane
from .metrics import Metrics
from .settings import Settings
from .web import Reply, error_reply, receive_by, reject_declared, send_reply

Handler = Callable[[bytes, dict[bytes, bytes]], Awaitable[Reply]]
"""(body, the headers it needs) → reply."""

_WANTED = (b"content-length", protocol_v2.HEADER_LENGTH.encode())


class HotPath:
    """Exact path → handler for the served model's inference routes."""

    def __init__(self, settings: Settings, dataplane: DataPlane, metrics: Metrics) -> None:
        self.metrics = metrics
        self.max_bytes = settings.max_body_bytes
        self.body_timeout_s = settings.request_timeout_s
        self.retry_after_s = settings.retry_after_s
        name = settings.model_name

        async def v1(body: bytes, headers: dict[bytes, bytes]) -> Reply:
            return await protocol_v1.predict(dataplane, name, body)

        def v2(version: str | None) -> Handler:
            async def handler(body: bytes, headers: dict[bytes, bytes]) -> Reply:
                split = headers.get(_WANTED[1])
                return await protocol_v2.infer(
                    dataplane, name, version, body, split.decode("latin-1") if split is not None else None
                )

            return handler

        self.routes: dict[str, tuple[Handler, str]] = {
            f"/v1/models/{name}:predict": (v1, "/v1/models/{name}:predict"),
            f"/v2/models/{name}/infer": (v2(None), "/v2/models/{name}/infer"),
        }
        for version in protocol_v2.VERSIONS:
            self.routes[f"/v2/models/{name}/versions/{version}/infer"] = (v2(version), "/v2/models/{name}/infer")

    async def serve(
        self, scope: dict[str, Any], receive: Any, send: Any, route: tuple[Handler, str]
    ) -> None:
        handler, endpoint = route
        metrics = self.metrics
        started = time.perf_counter()
        metrics.in_flight += 1
        status = 500
        try:
            headers = {key: value for key, value in scope["headers"] if key in _WANTED}
            declared = _int_or(headers.get(_WANTED[0]), -1)
            if declared > self.max_bytes:
                status = await reject_declared(send, scope["path"], declared, self.max_bytes)
                return
            try:
                body = await self._read(receive)
                if body is None:
                    status = errors.CLIENT_GONE
                    return
                reply = await handler(body, headers)
            except Exception as exc:  # the error table, as FastAPI's handlers apply it
                reply = error_reply(scope["path"], exc, self.retry_after_s)
            status = reply.status
            await send_reply(send, reply)
        finally:
            metrics.in_flight -= 1
            metrics.observe_request(endpoint, "POST", status, time.perf_counter() - started)

    async def _read(self, receive: Any) -> bytes | None:
        """The whole body, counted against the limit (chunked uploads carry no length), within
        ``request_timeout_s`` of the request's start (a stalled body gets a 408)."""
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        message = await receive_by(receive, deadline)
        if message["type"] != "http.request":
            return None
        body = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self.max_bytes:
                raise errors.PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")
            return body
        chunks = [body]
        seen = len(body)
        while message.get("more_body", False):
            message = await receive_by(receive, deadline)
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                raise errors.PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _int_or(value: bytes | None, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return default
