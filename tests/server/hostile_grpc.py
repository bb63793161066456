"""Hostile gRPC for the protocol campaign (campaign.py): bytes that are no message for every
method, ModelInferRequests built by hypothesis (datatypes the model does not take, shapes that
disagree with the values, raw contents that do not fit, typed contents in the wrong field,
unknown names, versions and outputs, parameters of every kind), and a message over the size
limit.

The verdict: OK, or INVALID_ARGUMENT / NOT_FOUND / RESOURCE_EXHAUSTED with a message
(UNAVAILABLE only when the caller allows overload); never INTERNAL or UNKNOWN.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import grpc
from hostile import DATATYPES, Target
from hypothesis import strategies as st

from modelship_server import grpc_service

SERVICE = "/inference.GRPCInferenceService/"
METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
FINE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED}  # fmt: skip
CONTENTS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),  # NaN and infinities included
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=8),
}


@dataclass
class GrpcTally:
    requests: int = 0
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    problems: list[str] = field(default_factory=list)

    def judge(self, what: str, code: grpc.StatusCode, details: str, overload_ok: bool = False) -> str | None:
        self.requests += 1
        self.codes[code.name] += 1
        found = None
        if code not in FINE and not (overload_ok and code == grpc.StatusCode.UNAVAILABLE):
            found = f"{code.name}: {details}"
        elif code != grpc.StatusCode.OK and not details.strip():
            found = f"{code.name} without a message"
        if found is not None:
            self.problems.append(f"{what}: {found}")
        return found


def call(channel: grpc.Channel, method: str, payload: bytes, timeout_s: float = 30.0) -> tuple[grpc.StatusCode, str]:
    """One unary call with ``payload`` as the serialized request: (status code, message)."""
    stub = channel.unary_unary(SERVICE + method)
    try:
        stub(payload, timeout=timeout_s)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


_MESSAGES: dict[str, Any] = {}


def messages() -> dict[str, Any]:
    """The service's message classes (the server's own private descriptor pool)."""
    if not _MESSAGES:
        _MESSAGES.update(grpc_service.message_classes())
    return _MESSAGES


@st.composite
def infer_requests(draw: st.DrawFn, target: Target) -> bytes:
    """A serialized ModelInferRequest, hostile in one part or several."""
    request = messages()["ModelInferRequest"](
        model_name=draw(st.sampled_from([target.name] * 12 + ["", "nope", "ü" * 3])),
        model_version=draw(st.sampled_from(["", "", "", "", "1", "1", "2", "-1"])),
        id=draw(st.text(max_size=8)),
    )
    raw = draw(st.booleans())
    for index in range(draw(st.sampled_from([len(target.inputs)] * 4 + [0, len(target.inputs) + 1]))):
        name, datatype, shape = target.inputs[index % len(target.inputs)]
        dims = [draw(st.integers(0, 3)) if size < 0 else size for size in shape]
        tensor = request.inputs.add(
            name=draw(st.sampled_from([name, name, "x"])),
            datatype=draw(st.sampled_from([datatype, datatype, *DATATYPES])),
            shape=draw(st.sampled_from([dims, dims]) | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)),
        )
        count = 1
        for size in dims:
            count *= size
        if raw:
            width = draw(st.sampled_from([4, 4, 1, 2, 8]))
            request.raw_input_contents.append(draw(st.binary(min_size=count * width, max_size=count * width + 3)))
        else:
            field_name = draw(st.sampled_from(sorted(CONTENTS)))
            values = draw(st.lists(CONTENTS[field_name], min_size=max(0, count - 1), max_size=count + 1))
            getattr(tensor.contents, field_name).extend(values)
        for key, value in draw(st.dictionaries(st.sampled_from(["binary_data_size", "x", ""]), st.integers(-5, 5),
                                               max_size=2)).items():  # fmt: skip
            tensor.parameters[key].int64_param = value
    if raw and draw(st.booleans()):
        request.raw_input_contents.append(b"\0" * draw(st.integers(0, 16)))  # one more than inputs
    for name in draw(st.lists(st.sampled_from([*target.outputs, "nope", ""]), max_size=2)):
        request.outputs.add(name=name)
    for key in draw(st.lists(st.sampled_from(["binary_data_output", "priority", "timeout"]), max_size=2)):
        kind = draw(st.sampled_from(["bool_param", "int64_param", "string_param"]))
        setattr(request.parameters[key], kind, draw({"bool_param": st.booleans(), "int64_param": st.integers(-9, 9),
                                                     "string_param": st.text(max_size=4)}[kind]))  # fmt: skip
    return bytes(request.SerializeToString())


@st.composite
def calls(draw: st.DrawFn, target: Target) -> tuple[str, bytes]:
    """(method, payload): mostly hostile inferences, sometimes bytes that are no message at all,
    or a valid message with some of its bytes flipped."""
    kind = draw(st.sampled_from(["infer"] * 6 + ["garbage", "flipped"]))
    if kind == "infer":
        return "ModelInfer", draw(infer_requests(target))
    method = draw(st.sampled_from(METHODS))
    if kind == "garbage":
        return method, draw(st.binary(min_size=1, max_size=64))
    payload = bytearray(draw(infer_requests(target)))
    for _ in range(draw(st.integers(1, 4))):
        if payload:
            payload[draw(st.integers(0, len(payload) - 1))] = draw(st.integers(0, 255))
    return method, bytes(payload)


def oversized(max_bytes: int) -> bytes:
    """A ModelInferRequest past the server's ``max_body_bytes`` (its receive limit)."""
    request = messages()["ModelInferRequest"](model_name="x")
    request.raw_input_contents.append(b"\0" * (max_bytes + 1024))
    return bytes(request.SerializeToString())
