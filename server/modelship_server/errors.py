"""Domain errors and the one table that maps them to HTTP.

Each error class documents its status code; :data:`STATUS` is the only place the mapping
lives. Bodies are ``{"detail": ...}``; OIP v2 routes add ``"error"`` with the same text
because Triton/KServe v2 clients read that key.
"""

from __future__ import annotations


class ModelshipError(Exception):
    """Base of every error the server turns into an HTTP answer."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(ModelshipError):
    """400: the body parsed but does not fit the model (shape, datatype, names, values)."""


class MalformedRequest(ModelshipError):
    """400: the body is not JSON, or not the protocol's object shape."""


class ModelNotFound(ModelshipError):
    """404: no model of that name is served here."""


class PayloadTooLarge(ModelshipError):
    """413: the body exceeds ``max_body_bytes``."""


class BodyTimeout(ModelshipError):
    """408: the body did not arrive within ``request_timeout_s`` (a stalled or dripping
    client). The connection is closed with the answer: its unread bytes are not a request."""


class ModelNotReady(ModelshipError):
    """503: still loading, failed to load, missing GPU, or draining. Retry-After is set."""


class Overloaded(ModelshipError):
    """503: the batch queue is full; the caller should back off (Retry-After)."""


class InferenceTimeout(ModelshipError):
    """504: the model did not answer within ``request_timeout_s``."""


class InferenceFailed(ModelshipError):
    """500: the model itself raised on valid input. Only this batch's requests see it."""


STATUS: dict[type[ModelshipError], int] = {
    InvalidInput: 400,
    MalformedRequest: 400,
    ModelNotFound: 404,
    PayloadTooLarge: 413,
    BodyTimeout: 408,
    ModelNotReady: 503,
    Overloaded: 503,
    InferenceTimeout: 504,
    InferenceFailed: 500,
}
"""The one error → status table. 503s carry Retry-After."""

RETRYABLE = (ModelNotReady, Overloaded)

CLIENT_GONE = 499
"""Status the metrics record when the client went away before its body arrived (nginx's code).
Never sent: there is nobody to send it to."""

GRPC_CODE: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""The same errors on the gRPC service: HTTP status → ``grpc.StatusCode`` name (the message is
the REST answer's ``detail``)."""


def status_of(error: ModelshipError) -> int:
    """Status for an error, walking the class hierarchy (subclasses inherit their parent's)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500
