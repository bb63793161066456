"""KServe V1 protocol: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out.

A thin adapter: rows → one array → the data plane → rows. Only single-input models fit
this shape; others use v2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from . import errors, tensors
from .dataplane import DataPlane
from .web import ERROR_RESPONSES, Reply, hand_read_operation, json_reply, json_response, parse_object


def _predictions(outputs: list[np.ndarray], names: list[str]) -> Any:
    if len(outputs) == 1:
        return outputs[0]
    return [{name: out[i] for name, out in zip(names, outputs, strict=False)} for i in range(len(outputs[0]))]


async def predict(dataplane: DataPlane, name: str, body: bytes) -> Reply:
    """POST /v1/models/{name}:predict, whichever transport carried it."""
    model = dataplane.model_named(name)  # unknown model: 404 before parsing the body
    payload = parse_object(body)
    if "instances" in payload and "inputs" in payload:
        raise errors.InvalidInput("give the rows as 'instances' or as 'inputs', not both")
    instances = payload.get("instances", payload.get("inputs"))
    if instances is None:
        raise errors.InvalidInput("missing field 'instances' (a list with one entry per input row)")
    if len(model.inputs) != 1:
        raise errors.InvalidInput(f"model {name!r} takes {len(model.inputs)} inputs; use the v2 infer endpoint")
    array = tensors.decode_rows(instances, model.inputs[0], "instances")
    outputs = await dataplane.infer(name, [array])
    return json_reply({"predictions": _predictions(outputs, model.output_names)})


PREDICT_OPENAPI = hand_read_operation(
    {
        "type": "object",
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "description": "One entry per input row, shaped like the model's input "
                "without the batch dimension (numbers, nested lists).",
                "items": {},
            },
            "inputs": {"type": "array", "minItems": 1, "items": {}, "description": "instances, by another name"},
        },
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
    },
    "One prediction per instance",
    {
        "type": "object",
        "required": ["predictions"],
        "properties": {"predictions": {"type": "array", "items": {}}},
    },
)
"""The body this route reads by hand (no pydantic model on the hot path), described for the
OpenAPI document all the same."""


class ModelNameConvertor(Convertor[str]):
    """A path segment without ``:``, so ``/v1/models/{name}`` (GET) does not also match
    ``/v1/models/m:predict``: a GET there answered 404 "model 'm:predict' is not served" and an
    OPTIONS a 405 allowing GET, where the path's one method is POST. Model names have no ``:``
    (``Settings.model_name``'s pattern)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def router(dataplane: DataPlane) -> APIRouter:
    register_url_convertor("model", ModelNameConvertor())
    api = APIRouter(tags=["KServe v1"])

    @api.get("/v1/models")
    async def list_models() -> Response:
        """The names of the served models (one)."""
        return json_response({"models": [dataplane.settings.model_name]})

    @api.get("/v1/models/{name:model}", responses=ERROR_RESPONSES)
    async def model_ready(name: str) -> Response:
        """Whether the model serves: 200 ready, 404 unknown name, 503 not ready (with the reason)."""
        ready = dataplane.model_named(name) is not None  # raises 404 / 503 with the reason
        return json_response({"name": name, "ready": ready})

    # The served model's path never gets here: hotpath.py answers it before FastAPI routes
    # (the same function, less framework). This route serves other names (404) and documents
    # the endpoint in the OpenAPI schema.
    @api.post("/v1/models/{name}:predict", openapi_extra=PREDICT_OPENAPI)
    async def predict_route(name: str, request: Request) -> Response:
        """KServe v1 predict: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out."""
        reply = await predict(dataplane, name, await request.body())
        return reply.response()

    return api
