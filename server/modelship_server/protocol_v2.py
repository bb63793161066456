"""Open Inference Protocol v2 (KServe v2 / Triton HTTP) REST surface.

Typed tensors as JSON (``data`` flat row-major or nested) and the binary tensor data
extension (``Inference-Header-Content-Length``; what tritonclient sends by default), so
standard v2 clients work unchanged. Errors carry ``error`` (read by v2 clients) and
``detail`` (house style) with the same text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from . import __version__, errors, tensors
from .dataplane import DataPlane
from .loading import ServedModel
from .web import ERROR_RESPONSES, Reply, hand_read_operation, json_reply, json_response, parse_object

VERSIONS = ["1"]
EXTENSIONS = ["binary_tensor_data", "model_configuration"]
HEADER_LENGTH = "inference-header-content-length"


def check_version(version: str | None, name: str) -> None:
    if version is not None and version not in VERSIONS:
        raise errors.ModelNotFound(f"model {name!r} has no version {version!r} (versions: {VERSIONS})")


def parameters(holder: dict[str, Any], where: str) -> dict[str, Any]:
    """An object's ``parameters``: absent or null is none; anything but an object is a 400
    (ignoring it would drop what the caller asked for, e.g. binary outputs)."""
    params = holder.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise errors.InvalidInput(f"{where}: 'parameters' must be an object, got {type(params).__name__}")
    return params


def flag(params: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise errors.InvalidInput(f"{where}: parameter {key!r} must be true or false, got {value!r}")
    return value


def check_id(payload: dict[str, Any]) -> None:
    """OIP v2's ``id`` is a string, echoed back in the reply. Anything else is refused before
    the model runs: a list nested 500 deep made the reply's JSON encoder fail (a 500)."""
    if "id" in payload and not isinstance(payload["id"], str):
        raise errors.InvalidInput(f"'id' must be a string, got {type(payload['id']).__name__}")


def decode_inputs(model: ServedModel, payload: dict[str, Any], binary: bytes) -> list[np.ndarray]:
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise errors.InvalidInput("missing field 'inputs' (a non-empty list of tensors)")
    by_name: dict[str, np.ndarray] = {}
    offset = 0
    specs = {spec.name: spec for spec in model.inputs}
    for index, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise errors.InvalidInput(f"inputs[{index}] must be an object with name, shape, datatype, data")
        for key in ("name", "shape", "datatype"):
            if key not in item:
                raise errors.InvalidInput(f"inputs[{index}] is missing field {key!r}")
        name = item["name"]
        where = f"input {name!r}"
        spec = specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise errors.InvalidInput(
                f"{where} is not an input of model {model.name!r} (inputs: {sorted(specs)})"
            )
        if name in by_name:
            raise errors.InvalidInput(f"{where} given twice")
        dtype = tensors.dtype_named(item["datatype"], where)
        if dtype.name != spec.datatype:
            raise errors.InvalidInput(
                f"{where}: datatype {dtype.name} does not match the model's {spec.datatype}"
            )
        size = parameters(item, where).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise errors.InvalidInput(
                    f"{where}: binary_data_size must be a non-negative integer, got {size!r}"
                )
            if offset + size > len(binary):
                raise errors.InvalidInput(
                    f"{where}: binary_data_size {size!r} does not fit the {len(binary)}-byte body"
                )
            array = tensors.decode_binary(binary[offset : offset + size], dtype, item["shape"], where)
            offset += size
        elif "data" in item:
            array = tensors.decode_json(item["data"], dtype, item["shape"], where)
        else:
            raise errors.InvalidInput(f"inputs[{index}] is missing field 'data'")
        spec.check(array, where)
        by_name[name] = array
    missing = [spec.name for spec in model.inputs if spec.name not in by_name]
    if missing:
        raise errors.InvalidInput(f"missing input(s) {missing} for model {model.name!r}")
    arrays = [by_name[spec.name] for spec in model.inputs]
    if model.dynamic_batch and len({a.shape[0] for a in arrays}) > 1:
        raise errors.InvalidInput("all inputs must have the same batch size (first dimension)")
    return arrays


def requested_outputs(model: ServedModel, payload: dict[str, Any]) -> list[tuple[int, bool]]:
    """(output index, as binary) for each output to return, in request order."""
    binary_default = flag(parameters(payload, "request"), "binary_data_output", False, "request")
    index_of = {spec.name: i for i, spec in enumerate(model.outputs)}
    wanted = payload.get("outputs")
    if wanted is None:
        return [(i, binary_default) for i in range(len(model.outputs))]
    if not isinstance(wanted, list):
        raise errors.InvalidInput("'outputs' must be a list of {name, parameters}")
    result = []
    for item in wanted:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or name not in index_of:
            raise errors.InvalidInput(
                f"requested output {name!r} is not an output of model {model.name!r} "
                f"(outputs: {sorted(index_of)})"
            )
        where = f"output {name!r}"
        result.append((index_of[name], flag(parameters(item, where), "binary_data", binary_default, where)))
    return result


def _encode(
    model: ServedModel, payload: dict[str, Any], outputs: list[np.ndarray], wanted: list[tuple[int, bool]]
) -> Reply:
    entries = []
    blobs: list[bytes] = []
    for index, as_binary in wanted:
        array = outputs[index]
        entry: dict[str, Any] = {
            "name": model.outputs[index].name if index < len(model.outputs) else f"output__{index}",
            "datatype": tensors.dtype_of_array(array).name,
            "shape": list(array.shape),
        }
        if as_binary:
            blob = tensors.little_endian_bytes(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1)
        entries.append(entry)
    body: dict[str, Any] = {"model_name": model.name, "model_version": VERSIONS[-1], "outputs": entries}
    if "id" in payload:
        body["id"] = payload["id"]
    if not blobs:
        return json_reply(body)
    header = tensors.json_dumps(body)
    return Reply(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def _split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The binary tensor extension: the JSON header, then the raw tensors."""
    if header_length is None:
        return body, b""
    try:
        split = int(header_length)
    except ValueError:
        raise errors.MalformedRequest(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 < split <= len(body):
        raise errors.MalformedRequest(f"{HEADER_LENGTH} {split} is outside the {len(body)}-byte body")
    return body[:split], body[split:]


async def infer(
    dataplane: DataPlane, name: str, version: str | None, body: bytes, header_length: str | None
) -> Reply:
    """POST /v2/models/{name}[/versions/{version}]/infer, whichever transport carried it."""
    check_version(version, name)
    model = dataplane.model_named(name)
    header, binary = _split_binary(body, header_length)
    payload = parse_object(header)
    check_id(payload)
    arrays = decode_inputs(model, payload, binary)
    wanted = requested_outputs(model, payload)  # a bad output request is a 400 before the model runs
    outputs = await dataplane.infer(name, arrays)
    return _encode(model, payload, outputs, wanted)


TENSOR_PARAMETERS: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "binary_data_size": {
            "type": "integer",
            "minimum": 0,
            "description": "Binary tensor extension: this tensor's bytes follow the JSON header",
        }
    },
}
OUTPUT_PARAMETERS: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {"binary_data": {"type": "boolean", "description": "Return this output as raw bytes"}},
}
_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": sorted(tensors.BY_NAME)},
        "data": {"description": "Numbers, flat (row-major) or nested; absent with binary_data_size"},
        "parameters": TENSOR_PARAMETERS,
    },
}
INFER_OPENAPI = hand_read_operation(
    {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_SCHEMA},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "parameters": OUTPUT_PARAMETERS},
                },
            },
            "parameters": {
                "type": ["object", "null"],
                "properties": {"binary_data_output": {"type": "boolean"}},
            },
        },
    },
    "The outputs (JSON, or a JSON header followed by raw tensors)",
    {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": _TENSOR_SCHEMA},
        },
    },
    binary=True,
    parameters=[
        {
            "name": "Inference-Header-Content-Length",
            "in": "header",
            "required": False,
            "description": "Binary tensor extension: the length of the JSON header; raw tensors follow it",
            "schema": {"type": "integer", "minimum": 1},
        }
    ],
)
"""The body the infer route reads by hand, described for the OpenAPI document."""


def router(dataplane: DataPlane) -> APIRouter:
    api = APIRouter(tags=["Open Inference Protocol v2"])

    @api.get("/v2")
    async def server_metadata() -> Response:
        """Server name, version and protocol extensions."""
        return json_response({"name": "modelship", "version": __version__, "extensions": EXTENSIONS})

    @api.get("/v2/health/live")
    async def live() -> Response:
        """Liveness: the event loop answers. Never touches the model."""
        return json_response({"live": True})

    @api.get("/v2/health/ready", responses={"503": {"description": "Not ready; the body says why", "content": {
        "application/json": {"schema": {"type": "object", "required": ["ready", "detail"], "properties": {
            "ready": {"const": False}, "detail": {"type": "string"}, "error": {"type": "string"}}}}}}})  # fmt: skip
    async def ready() -> Response:
        """Readiness: 200 when the model serves (in every worker), else 503 with the reason."""
        if dataplane.ready:
            return json_response({"ready": True})
        reason = dataplane.not_ready_reason()
        return json_response({"ready": False, "detail": reason, "error": reason}, 503)

    async def metadata(name: str, version: str | None = None) -> Response:
        """Model metadata: platform, versions, input and output tensors."""
        check_version(version, name)
        model = dataplane.model_named(name)
        return json_response(
            {
                "name": name,
                "versions": VERSIONS,
                "platform": model.platform,
                "inputs": [spec.as_metadata() for spec in model.inputs],
                "outputs": [spec.as_metadata() for spec in model.outputs],
            }
        )

    async def model_config(name: str, version: str | None = None) -> Response:
        """Triton's model-configuration extension, read by tritonclient's ``get_model_config``
        and tools such as perf_analyzer: dims exclude the batch dim when batching is on."""
        check_version(version, name)
        model = dataplane.model_named(name)
        return json_response(model_configuration(dataplane, model))

    async def model_ready(name: str, version: str | None = None) -> Response:
        """Model readiness: 200 ready, 404 unknown, 503 not ready (with the reason)."""
        check_version(version, name)
        dataplane.model_named(name)  # 404 unknown, 503 not ready (with the reason)
        if dataplane.shutting_down:
            raise errors.ModelNotReady(dataplane.not_ready_reason())
        return json_response({"name": name, "ready": True})

    async def infer_route(request: Request, name: str, version: str | None = None) -> Response:
        """OIP v2 inference: typed tensors as JSON, or with the binary tensor data extension."""
        reply = await infer(dataplane, name, version, await request.body(), request.headers.get(HEADER_LENGTH))
        return reply.response()

    # The served model's infer paths never get here: hotpath.py answers them before FastAPI
    # routes (the same function, less framework). These routes serve other names and versions
    # (404) and document the endpoints in the OpenAPI schema.
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        api.add_api_route(prefix, metadata, methods=["GET"], responses=ERROR_RESPONSES)
        api.add_api_route(prefix + "/ready", model_ready, methods=["GET"], responses=ERROR_RESPONSES)
        api.add_api_route(prefix + "/config", model_config, methods=["GET"], responses=ERROR_RESPONSES)
        api.add_api_route(prefix + "/infer", infer_route, methods=["POST"], openapi_extra=INFER_OPENAPI)
    return api


def model_configuration(dataplane: DataPlane, model: ServedModel) -> dict[str, Any]:
    """Triton's model configuration (REST and gRPC answer the same)."""
    batching = model.dynamic_batch

    def dims(spec: tensors.TensorSpec) -> list[int]:
        return list(spec.shape[1:] if batching else spec.shape)

    return {
        "name": model.name,
        "platform": model.platform,
        "backend": "pytorch",
        "max_batch_size": model.batch_rows(dataplane.settings.max_batch_size) if batching else 0,
        "input": [{"name": i.name, "data_type": f"TYPE_{i.datatype}", "dims": dims(i)} for i in model.inputs],
        "output": [{"name": o.name, "data_type": f"TYPE_{o.datatype}", "dims": dims(o)} for o in model.outputs],
        "dynamic_batching": {"max_queue_delay_microseconds": int(dataplane.settings.max_latency_ms * 1000)}
        if batching
        else None,
    }
