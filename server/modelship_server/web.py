"""HTTP plumbing shared by the routes: JSON responses, body parsing, the error table's
exception handlers, and the request-body size limit."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from . import errors
from .tensors import JSONDecodeError, json_dumps, json_loads

JSON = "application/json"


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


def _error_body(path: str, detail: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": detail}
    if path.startswith("/v2"):
        body["error"] = detail if isinstance(detail, str) else str(detail)  # what v2 clients read
    return body


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    """The only place domain errors become HTTP responses (see ``errors.STATUS``)."""

    async def on_domain_error(request: Request, exc: errors.ModelshipError) -> Response:
        headers = {"Retry-After": str(retry_after_s)} if isinstance(exc, errors.RETRYABLE) else None
        return json_response(_error_body(request.url.path, exc.detail), errors.status_of(exc), headers)

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return json_response(_error_body(request.url.path, exc.detail), exc.status_code, exc.headers)

    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return json_response(_error_body(request.url.path, exc.errors()), 422)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return json_response(
            _error_body(request.url.path, f"internal error: {type(exc).__name__}: {exc}"), 500
        )

    app.add_exception_handler(errors.ModelshipError, on_domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_unexpected)


class BodyLimitMiddleware:
    """413 for bodies over the limit: by Content-Length before reading anything, and by
    counting for chunked uploads (which have no Content-Length)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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
                    await self._reject(scope, send, declared)
                    return
                break
        seen = 0
        limit = self.max_bytes

        async def counting_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise errors.PayloadTooLarge(f"request body exceeds {limit} bytes")
            return message

        await self.app(scope, counting_receive, send)

    async def _reject(self, scope: dict[str, Any], send: Any, declared: int) -> None:
        detail = f"request body of {declared} bytes exceeds the limit of {self.max_bytes} bytes"
        body = json_dumps(_error_body(scope["path"], detail))
        await send(
            {
                "type": "http.response.start",
                "status": errors.STATUS[errors.PayloadTooLarge],
                "headers": [
                    (b"content-type", JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),  # the unread body must not be parsed as a request
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
