"""HTTP plumbing shared by the routes: replies, JSON responses, body parsing, the error table's
exception handlers, and the request-body size limit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from . import errors
from .tensors import JSONDecodeError, json_dumps, json_loads

JSON = "application/json"


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"description": "What went wrong, for a human"},
        "error": {"type": "string", "description": "The same text (OIP v2 routes only; v2 clients read it)"},
    },
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again (retry_after_s)",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    str(code): {
        "description": why,
        "content": {JSON: {"schema": _ERROR_SCHEMA}},
        **({"headers": _RETRY_AFTER} if code == 503 else {}),
    }
    for code, why in [
        (400, "The body is not valid JSON, not the protocol's shape, or does not fit the model"),
        (404, "No model (or version) of that name is served here"),
        (408, "The body did not arrive within request_timeout_s; the connection is closed"),
        (413, "The body exceeds max_body_bytes"),
        (500, "The model raised on valid input"),
        (503, "Not ready (loading, failed, no GPU, draining) or overloaded; Retry-After is set"),
        (504, "The model did not answer within request_timeout_s"),
    ]
}
"""The error table (``errors.STATUS``) as OpenAPI responses, for the routes that use it."""


def hand_read_operation(
    request_schema: dict[str, Any],
    ok_description: str,
    ok_schema: dict[str, Any],
    binary: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """OpenAPI for a route that reads its body by hand (no pydantic model on the hot path):
    the request and 200 bodies (plus raw bytes when ``binary``) and the error table."""
    raw = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}} if binary else {}
    operation: dict[str, Any] = {
        "requestBody": {"required": True, "content": {JSON: {"schema": request_schema}, **raw}},
        "responses": {
            "200": {"description": ok_description, "content": {JSON: {"schema": ok_schema}, **raw}},
            **ERROR_RESPONSES,
        },
    }
    if parameters:
        operation["parameters"] = parameters
    return operation


@dataclass(slots=True)
class Reply:
    """What a protocol function answers, independent of the transport that carries it (the
    hot ASGI path, a FastAPI route, or gRPC's error mapping)."""

    body: bytes
    status: int = 200
    media_type: str = JSON
    headers: dict[str, str] | None = None

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type=self.media_type, headers=self.headers)


def json_reply(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(json_dumps(obj), status, JSON, headers)


def error_reply(path: str, exc: Exception, retry_after_s: int) -> Reply:
    """The error table applied: a domain error's status (Retry-After on 503s), anything else 500."""
    if isinstance(exc, errors.ModelshipError):
        headers = {"Retry-After": str(retry_after_s)} if isinstance(exc, errors.RETRYABLE) else None
        if isinstance(exc, errors.BodyTimeout):
            headers = {"Connection": "close"}
        return json_reply(error_body(path, exc.detail), errors.status_of(exc), headers)
    return json_reply(error_body(path, f"internal error: {type(exc).__name__}: {exc}"), 500)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson-encoded response (numpy arrays serialize natively, no ``tolist()``)."""
    return Response(json_dumps(obj), status_code=status, media_type=JSON, headers=headers)


def parse_json(body: bytes) -> Any:
    if not body:
        raise errors.MalformedRequest("request body is empty; expected a JSON object")
    try:
        return json_loads(body)
    except (JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
        raise errors.MalformedRequest(f"request body is not valid JSON: {exc}") from None


def parse_object(body: bytes) -> dict[str, Any]:
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise errors.MalformedRequest(f"request body must be a JSON object, got {type(payload).__name__}")
    return payload


def error_body(path: str, detail: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": detail}
    if path.startswith("/v2"):
        body["error"] = detail if isinstance(detail, str) else str(detail)  # what v2 clients read
    return body


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    """The only place domain errors become HTTP responses (see ``errors.STATUS``)."""

    async def on_domain_error(request: Request, exc: errors.ModelshipError) -> Response:
        return error_reply(request.url.path, exc, retry_after_s).response()

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return json_response(error_body(request.url.path, exc.detail), exc.status_code, exc.headers)

    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return json_response(error_body(request.url.path, exc.errors()), 422)

    async def on_client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client left before its body arrived (or its framing was broken and uvicorn hung
        # up): nobody reads this answer, and the metrics count a 499, not a 500 with a traceback.
        return Response(status_code=errors.CLIENT_GONE)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return error_reply(request.url.path, exc, retry_after_s).response()

    app.add_exception_handler(errors.ModelshipError, on_domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, on_client_gone)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_unexpected)


class BodyLimitMiddleware:
    """413 for bodies over the limit: by Content-Length before reading anything, and by
    counting for chunked uploads (which have no Content-Length). 408 for a body that has not
    arrived ``timeout_s`` after the request began (uvicorn waits for a stalled body forever)."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await reject_declared(send, scope["path"], declared, self.max_bytes)
                    return
                break
        seen = 0
        limit = self.max_bytes
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def counting_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive_by(receive, deadline)
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise errors.PayloadTooLarge(f"request body exceeds {limit} bytes")
            return message

        await self.app(scope, counting_receive, send)


async def receive_by(receive: Any, deadline: float) -> dict[str, Any]:
    """The next ASGI message, or :class:`errors.BodyTimeout` once ``deadline`` (loop time) passed.

    When uvicorn already holds the message (a small body arrives with its headers), receiving
    cannot wait, so no timer is armed: arming and cancelling one cost more than the rest of
    the body's handling on a one-row request. uvicorn's ``receive`` is its request cycle's
    method, which waits on the cycle's ``message_event`` (set when body bytes, the body's end
    or a disconnect arrived); ``test_receive_by_knows_uvicorn_has_the_body`` keeps that true
    for the pinned uvicorn."""
    if _has_message(receive):
        return await receive()  # type: ignore[no-any-return]
    try:
        async with asyncio.timeout_at(deadline):
            return await receive()
    except TimeoutError:
        raise errors.BodyTimeout("the request body did not arrive in time (request_timeout_s)") from None


def _has_message(receive: Any) -> bool:
    event = getattr(getattr(receive, "__self__", None), "message_event", None)
    return isinstance(event, asyncio.Event) and event.is_set()


async def reject_declared(send: Any, path: str, declared: int, limit: int) -> int:
    """413 for a Content-Length over the limit, before reading anything; the connection is
    closed so the unread body is never parsed as the next request. Returns the status."""
    detail = f"request body of {declared} bytes exceeds the limit of {limit} bytes"
    status = errors.STATUS[errors.PayloadTooLarge]
    await send_reply(send, Reply(json_dumps(error_body(path, detail)), status), close=True)
    return status


_CONTENT_TYPES = {JSON: JSON.encode(), "application/octet-stream": b"application/octet-stream"}


async def send_reply(send: Any, reply: Reply, close: bool = False) -> None:
    """A reply as raw ASGI messages (no Response object: the hot path's way)."""
    media = _CONTENT_TYPES.get(reply.media_type) or reply.media_type.encode()
    headers = [(b"content-type", media), (b"content-length", str(len(reply.body)).encode())]
    if reply.headers:
        headers += [(key.lower().encode(), value.encode()) for key, value in reply.headers.items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})
