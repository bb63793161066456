"""KServe V1 protocol: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out.

A thin adapter: rows → one array → the data plane → rows. Only single-input models fit
this shape; others use v2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from . import errors, tensors
from .dataplane import DataPlane
from .web import json_response, parse_object


def _predictions(outputs: list[np.ndarray], names: list[str]) -> Any:
    if len(outputs) == 1:
        return outputs[0]
    return [{name: out[i] for name, out in zip(names, outputs, strict=False)} for i in range(len(outputs[0]))]


def router(dataplane: DataPlane) -> APIRouter:
    api = APIRouter(tags=["KServe v1"])

    @api.get("/v1/models")
    async def list_models() -> Response:
        return json_response({"models": [dataplane.settings.model_name]})

    @api.get("/v1/models/{name}")
    async def model_ready(name: str) -> Response:
        ready = dataplane.model_named(name) is not None  # raises 404 / 503 with the reason
        return json_response({"name": name, "ready": ready})

    async def predict(request: Request) -> Response:
        name = request.path_params["name"]
        model = dataplane.model_named(name)  # unknown model: 404 before reading the body
        payload = parse_object(await request.body())
        instances = payload.get("instances", payload.get("inputs"))
        if instances is None:
            raise errors.InvalidInput("missing field 'instances' (a list with one entry per input row)")
        if len(model.inputs) != 1:
            raise errors.InvalidInput(
                f"model {name!r} takes {len(model.inputs)} inputs; use the v2 infer endpoint"
            )
        array = tensors.decode_rows(instances, model.inputs[0], "instances")
        outputs = await dataplane.infer(name, [array])
        return json_response({"predictions": _predictions(outputs, [o.name for o in model.outputs])})

    # A plain Starlette route: the hot path skips FastAPI's dependency solving (~1/3 of the
    # per-request CPU for a tiny model); the body is parsed and validated by tensors.py anyway.
    api.add_route("/v1/models/{name}:predict", predict, methods=["POST"])
    return api
