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
        else:
            field = _CONTENTS_FIELD.get(tensor.datatype)
            if field is not None and tensor.HasField("contents"):
                item["data"] = list(getattr(tensor.contents, field))
        inputs.append(item)
    payload: dict[str, Any] = {"inputs": inputs, "outputs": [{"name": out.name} for out in request.outputs]}
    if not request.outputs:
        del payload["outputs"]
    if request.id:
        payload["id"] = request.id
    return payload, b"".join(raw)


Rpc = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _guarded(method: str, rpc: Rpc, metrics: Metrics, retry_after_s: int) -> Rpc:
    """The error table for gRPC: a domain error aborts with the REST status's code and detail;
    anything else is INTERNAL. Counted in the request metrics like a REST call."""
    endpoint = f"/{SERVICE}/{method}"

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        metrics.in_flight += 1
        status = 500
        try:
            try:
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
        request_class = classes[f"{method}Request"]
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            _guarded(method, getattr(service, method), dataplane.metrics, settings.retry_after_s),
            request_deserializer=request_class.FromString,
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
