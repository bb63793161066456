"""The OpenAPI document at ``/openapi.json``: FastAPI's, completed with what the framework
cannot see, and, once the model is loaded, narrowed to the model this server serves.

What FastAPI cannot see: the statuses every route may answer outside its own code (413 for a
declared body over the limit, before any route runs), that no route ever answers 422 (every
body is read by hand, every path parameter is a string), and the rules for paths and methods
no operation lists (404, 405). What the loaded model adds: its name and version as the only
values of ``{name}`` and ``{version}``, and its tensors (names, datatypes, ranks, the row shape
and value range of a v1 instance), so a schema-driven client or fuzzer builds requests this
server can answer. What no schema can say: that a v2 tensor's ``shape`` and its ``data`` must
hold the same number of values; a body valid by the document may still get a 400 naming that.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.responses import Response

from . import protocol_v2, tensors
from .dataplane import DataPlane
from .loading import ServedModel
from .web import ERROR_RESPONSES, json_response

DESCRIPTION = """\
Serves one PyTorch model (KServe v1, Open Inference Protocol v2). Once the model is loaded this
document names it and describes its tensors.

Besides the responses each operation lists, any path answers:
* 404 `{"detail": ...}` for a path no operation lists (a model or version this server does not
  serve is a 404 with the same body on the listed paths);
* 405 `{"detail": ...}` with an `Allow` header for a method its path does not list;
* 413 for a `Content-Length` over `max_body_bytes`, before anything is read;
* 408 when a request's head, or its body, has not arrived within `request_timeout_s` (the
  connection is then closed);
* 400 `text/plain` for bytes that are not an HTTP/1.1 request (uvicorn's parser refuses them
  before any route).
"""

_UNUSED_SCHEMAS = ("HTTPValidationError", "ValidationError")
"""FastAPI's 422 body: no route here validates a request with pydantic, so none answers 422."""


def install(app: FastAPI, dataplane: DataPlane) -> None:
    """Serve the document at ``/openapi.json`` (an operation of its own) and as ``app.openapi()``.

    The FastAPI app must be made with ``openapi_url=None``; the document is built on first use
    and again once per loaded model."""
    cache: dict[int, dict[str, Any]] = {}

    def document() -> dict[str, Any]:
        model = dataplane.model if dataplane.state == "ready" else None
        key = id(model)
        if key not in cache:
            if not cache:
                cache[id(None)] = _completed(app)
            cache[key] = _narrowed(cache[id(None)], model, dataplane.settings.max_batch_size) if model else cache[id(None)]
        return cache[key]

    app.openapi = document  # type: ignore[method-assign]

    @app.get(
        "/openapi.json",
        tags=["meta"],
        responses={200: {"description": "This document", "content": {"application/json": {"schema": {
            "type": "object", "required": ["openapi", "info", "paths"]}}}}},
    )  # fmt: skip
    async def openapi_document() -> Response:
        """This document (OpenAPI 3.1). It names the served model and describes its tensors once
        the model is loaded."""
        return json_response(document())


def _completed(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with the statuses it cannot see and without the 422 it invents."""
    doc = get_openapi(title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes)
    for operations in doc["paths"].values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses.setdefault("413", ERROR_RESPONSES["413"])
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _UNUSED_SCHEMAS:
        schemas.pop(name, None)
    if "components" in doc and not schemas:
        doc["components"].pop("schemas", None)
        if not doc["components"]:
            del doc["components"]
    return doc


def _narrowed(base: dict[str, Any], model: ServedModel, max_batch_size: int) -> dict[str, Any]:
    """``base`` for exactly this model: its name, its version, its tensors."""
    doc = copy.deepcopy(base)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "name":
                    parameter["schema"] = {"type": "string", "enum": [model.name]}
                elif parameter["in"] == "path" and parameter["name"] == "version":
                    parameter["schema"] = {"type": "string", "enum": list(protocol_v2.VERSIONS)}
            if method != "post":
                continue
            body = operation["requestBody"]["content"]["application/json"]
            if path.endswith(":predict"):
                body["schema"] = _v1_request(model)
                if len(model.inputs) == 1:
                    body["example"] = {"instances": _zeros(model.inputs[0]).tolist()}
            elif path.endswith("/infer"):
                body["schema"]["properties"].update(_v2_tensors(model))
                body["example"] = {"inputs": [
                    {**spec.as_metadata(), "shape": list(_zeros(spec).shape), "data": _zeros(spec).ravel().tolist()}
                    for spec in model.inputs
                ]}  # fmt: skip
    return doc


def _zeros(spec: tensors.TensorSpec) -> np.ndarray:
    """One row of zeros (the smallest size each -1 dimension allows) for the examples."""
    dims = [size if size >= 0 else max(1, spec.fit(axis, 1)) for axis, size in enumerate(spec.shape)]
    return np.zeros(dims, dtype=tensors.BY_NAME[spec.datatype].numpy)


def _element(datatype: str) -> dict[str, Any]:
    """One value of ``datatype`` in JSON, with the range it must fit."""
    dtype = tensors.BY_NAME[datatype].numpy
    if dtype.kind == "b":
        return {"type": "boolean"}
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max)}
    limit = float(np.finfo(dtype).max)
    return {"type": "number", "minimum": -limit, "maximum": limit}


def _nested(spec: tensors.TensorSpec) -> dict[str, Any]:
    """Nested arrays shaped like ``spec`` (a -1 dimension: any length within its range)."""
    schema = _element(spec.datatype)
    for axis in reversed(range(len(spec.shape))):
        size = spec.shape[axis]
        if size >= 0:
            bounds: dict[str, int] = {"minItems": size, "maxItems": size}
        else:
            low, high = spec.fit(axis, 0), spec.fit(axis, 2**62)
            bounds = {"minItems": low} | ({"maxItems": high} if high < 2**62 else {})
        schema = {"type": "array", "items": schema, **bounds}
    return schema


def _v1_request(model: ServedModel) -> dict[str, Any]:
    if len(model.inputs) != 1:  # v1 carries one tensor; such a model answers v1 with a 400
        return {"type": "object", "description": f"model {model.name} takes {len(model.inputs)} inputs: use v2"}
    rows = _nested(model.inputs[0])
    rows["minItems"] = max(1, rows.get("minItems", 0))
    rows["description"] = "One entry per input row, shaped like the model's input without the batch dimension."
    return {
        "type": "object",
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],  # one of them, not both
        "properties": {"instances": rows, "inputs": {**rows, "description": "instances, by another name"}},
    }


def _v2_tensors(model: ServedModel) -> dict[str, Any]:
    """The ``inputs`` and ``outputs`` properties of a v2 request for this model."""

    def tensor(spec: tensors.TensorSpec) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string", "enum": [spec.name]},
                "datatype": {"type": "string", "enum": [spec.datatype]},
                "shape": {
                    "type": "array",
                    "minItems": len(spec.shape),
                    "maxItems": len(spec.shape),
                    "items": {"type": "integer", "minimum": 0},
                    "description": f"The model takes {list(spec.shape)} (-1: any size)",
                },
                "data": {
                    "description": "Values, flat (row-major) or nested; as many as the shape holds",
                    "anyOf": [_nested(spec), {"type": "array", "items": _element(spec.datatype)}],
                },
                "parameters": protocol_v2.TENSOR_PARAMETERS,
            },
        }

    items = [tensor(spec) for spec in model.inputs]
    return {
        "inputs": {
            "type": "array",
            "minItems": len(items),
            "maxItems": len(items),
            "items": items[0] if len(items) == 1 else {"anyOf": items},
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "enum": model.output_names},
                    "parameters": protocol_v2.OUTPUT_PARAMETERS,
                },
            },
        },
    }
