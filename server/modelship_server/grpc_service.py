"""The Open Inference Protocol v2 gRPC service (``inference.GRPCInferenceService``) on its own
port (``grpc_port``), on the same event loop and data plane as the REST routes.

Requests are translated into the REST protocol's own shapes and go through the same
validation (``protocol_v2.decode_inputs``), so a bad input gets the same sentence as over REST,
with the HTTP status mapped to a gRPC status code (``errors.GRPC_CODE``). Outputs are returned
as ``raw_output_contents`` (what Triton does and tritonclient reads). The message classes come
from the committed descriptor set (``grpc_predict_v2.desc``, built from
``grpc_predict_v2.proto``), in a private descriptor pool: a client library in the same process
(tritonclient registers its own ``inference`` package) never clashes with ours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from . import __version__, errors, protocol_v2, tensors
from .dataplane import DataPlane
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("modelship.grpc")

SERVICE = "inference.GRPCInferenceService"
DESCRIPTOR_SET = Path(__file__).with_name("grpc_predict_v2.desc")

_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Which typed field of InferTensorContents carries a datatype's values."""


def message_classes() -> dict[str, Any]:
    """Every message of the service, by short name, from a private descriptor pool."""
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file:
        pool.Add(proto)
    service = pool.FindServiceByName(SERVICE)
    classes: dict[str, Any] = {}
    for method in service.methods:
        for desc in (method.input_type, method.output_type):
            classes[desc.name] = message_factory.GetMessageClass(desc)
    return classes


class InferenceService:
    """The six RPCs over one data plane; every answer is built by the REST code's functions."""

    def __init__(self, dataplane: DataPlane, metrics: Metrics, classes: dict[str, Any]) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.m = classes

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.m["ServerLiveResponse"](live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.m["ServerReadyResponse"](ready=self.dataplane.ready)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        protocol_v2.check_version(request.version or None, request.name)
        try:
            self.dataplane.model_named(request.name)
        except errors.ModelNotReady:
            return self.m["ModelReadyResponse"](ready=False)
        return self.m["ModelReadyResponse"](ready=not self.dataplane.shutting_down)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.m["ServerMetadataResponse"](
            name="modelship", version=__version__, extensions=protocol_v2.EXTENSIONS
        )

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        protocol_v2.check_version(request.version or None, request.name)
        model = self.dataplane.model_named(request.name)
        tensor = self.m["ModelMetadataResponse"].TensorMetadata
        return self.m["ModelMetadataResponse"](
            name=request.name,
            versions=protocol_v2.VERSIONS,
            platform=model.platform,
            inputs=[tensor(**spec.as_metadata()) for spec in model.inputs],
            outputs=[tensor(**spec.as_metadata()) for spec in model.outputs],
        )

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        name = request.model_name
        protocol_v2.check_version(request.model_version or None, name)
        model = self.dataplane.model_named(name)
        payload, binary = _as_rest_payload(request)
        arrays = protocol_v2.decode_inputs(model, payload, binary)
        wanted = protocol_v2.requested_outputs(model, payload)
        outputs = await self.dataplane.infer(name, arrays)
        response = self.m["ModelInferResponse"](
            model_name=name, model_version=protocol_v2.VERSIONS[-1], id=request.id
        )
        for index, _ in wanted:
            array = outputs[index]
            response.outputs.add(
                name=model.outputs[index].name if index < len(model.outputs) else f"output__{index}",
                datatype=tensors.dtype_of_array(array).name,
                shape=list(array.shape),
            )
            response.raw_output_contents.append(tensors.little_endian_bytes(array))
        return response


def _as_rest_payload(request: Any) -> tuple[dict[str, Any], bytes]:
    """A ModelInferRequest as the REST body it stands for (typed contents → ``data``, raw
    contents → the binary extension), so both protocols share one validation."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise errors.InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        item: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if raw:
            item["parameters"] = {"binary_data_size": len(raw[index])}
        elif tensor.HasField("contents"):
            item["data"] = _typed_contents(tensor)
        else:
            raise errors.InvalidInput(
                f"input {tensor.name!r} has no values: set its contents or raw_input_contents"
            )
        inputs.append(item)
    payload: dict[str, Any] = {"inputs": inputs, "outputs": [{"name": out.name} for out in request.outputs]}
    if not request.outputs:
        del payload["outputs"]
    if request.id:
        payload["id"] = request.id
    return payload, b"".join(raw)


def _typed_contents(tensor: Any) -> list[Any]:
    """The values of a tensor's typed contents: the field its datatype uses. Values in another
    field are named in the error (the REST check alone would say "data has 0 values")."""
    field = _CONTENTS_FIELD.get(tensor.datatype)
    given = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
    if field is None and given:
        raise errors.InvalidInput(
            f"input {tensor.name!r}: datatype {tensor.datatype} has no typed contents field; "
            "send its bytes in raw_input_contents"
        )
    if field is not None and field not in given and given:
        raise errors.InvalidInput(
            f"input {tensor.name!r}: {tensor.datatype} values go in contents.{field}, "
            f"not contents.{given[0]}"
        )
    return list(getattr(tensor.contents, field)) if field is not None else []


Rpc = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _guarded(method: str, rpc: Rpc, request_class: Any, metrics: Metrics, retry_after_s: int) -> Rpc:
    """The error table for gRPC: a domain error aborts with the REST status's code and detail;
    anything else is INTERNAL. Counted in the request metrics like a REST call.

    The request arrives as bytes and is parsed here: grpc's own deserializer hook answers a
    malformed message with UNKNOWN, and this is the caller's fault (INVALID_ARGUMENT)."""
    endpoint = f"/{SERVICE}/{method}"

    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        metrics.in_flight += 1
        status = 500
        try:
            try:
                try:
                    request = request_class.FromString(raw)
                except DecodeError as exc:
                    raise errors.MalformedRequest(
                        f"the request is not a valid {request_class.DESCRIPTOR.full_name} message: {exc}"
                    ) from None
                response = await rpc(request, context)
            except errors.ModelshipError as exc:
                status = errors.status_of(exc)
                retry = (("retry-after", str(retry_after_s)),) if isinstance(exc, errors.RETRYABLE) else ()
                code = grpc.StatusCode[errors.GRPC_CODE.get(status, "INTERNAL")]
                await context.abort(code, exc.detail, trailing_metadata=retry)
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                log.exception("gRPC %s failed", method)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
            status = 200
            return response
        finally:
            metrics.in_flight -= 1
            metrics.observe_request(endpoint, "GRPC", status, time.perf_counter() - started)

    return call


async def start(settings: Settings, dataplane: DataPlane) -> grpc.aio.Server:
    """Serve the gRPC service on ``grpc_port`` (same host as REST) on the running loop."""
    classes = message_classes()
    service = InferenceService(dataplane, dataplane.metrics, classes)
    handlers = {}
    for method in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"):
        rpc = getattr(service, method)
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            _guarded(method, rpc, classes[f"{method}Request"], dataplane.metrics, settings.retry_after_s),
            response_serializer=lambda message: message.SerializeToString(),
        )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
        ]
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    address = f"[{settings.host}]:{settings.grpc_port}" if ":" in settings.host else f"{settings.host}:{settings.grpc_port}"
    server.add_insecure_port(address)
    await server.start()
    log.info("OIP v2 gRPC service on %s", address)
    return server
