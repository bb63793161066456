"""Hostile HTTP for the protocol campaign (campaign.py): a raw HTTP/1.1 client (so nothing
tidies a request up on its way out: wrong lengths, broken chunks and bad bytes travel as
written), the verdict every answer gets, hypothesis strategies that build hostile requests
around valid ones, and the hand-made cases no generator is likely to hit (slow clients, huge
declared lengths, deep nesting).

The verdict, for every answer: never a 5xx (a 503 only when the caller allows overload); every
4xx says why (a JSON ``detail``, or the text uvicorn's parser and the request-head deadline
send before any route runs).
"""

from __future__ import annotations

import collections
import json
import math
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

# -- the client ------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    head_only: bool = False
    """The answer to a HEAD: headers only, by definition (its reason is in the GET's body)."""

    def text(self) -> str:
        return self.body[:300].decode("utf-8", "replace")


def exchange(address: tuple[str, int], request: bytes, timeout_s: float = 30.0) -> Answer:
    """Send ``request`` as is on a new connection and read one answer."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):  # answered (413) before it was all sent
            pass
        return read_answer(sock, head_only=request.startswith(b"HEAD "))


def drip(address: tuple[str, int], chunks: Sequence[bytes], pause_s: float, timeout_s: float = 30.0) -> Answer:
    """Send ``chunks`` ``pause_s`` apart (stopping once an answer is there), then read it."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        try:
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(chunk)
                time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_answer(sock)


def read_answer(sock: socket.socket, head_only: bool = False) -> Answer:
    """One HTTP/1.1 response: status line, headers, then Content-Length bytes (or until close).
    Interim answers (100 Continue) are skipped; ``head_only``: the request was a HEAD."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            data = _recv(sock)
            if not data:
                raise ConnectionError(f"connection closed before an answer (got {buffer[:200]!r})")
            buffer += data
        head, _, body = buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 1"):
            break
        buffer = body
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_only else int(headers.get("content-length", -1))
    while length < 0 or len(body) < length:
        data = _recv(sock)
        if not data:
            break
        body += data
    return Answer(int(status_line.split()[1]), headers, body if length < 0 else body[:length], head_only)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def request_bytes(
    method: str, path: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = (), length: int | None = None
) -> bytes:
    """An HTTP/1.1 request; ``length`` overrides the Content-Length (None: the body's own)."""
    lines = [f"{method} {path} HTTP/1.1", "host: fuzz"]
    lines += [f"{name}: {value}" for name, value in headers]
    if not any(name.lower() in ("content-length", "transfer-encoding") for name, _ in headers):
        lines.append(f"content-length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


# -- the verdict -------------------------------------------------------------------------------


def problem(answer: Answer, overload_ok: bool = False) -> str | None:
    """What is wrong with an answer, or None."""
    if answer.status >= 500:
        overloaded = answer.status == 503 and "queue is full" in answer.text() and "retry-after" in answer.headers
        if overloaded and overload_ok:
            return None
        return f"{answer.status} (a server error): {answer.text()}"
    if answer.status >= 400 and not has_reason(answer):
        return f"{answer.status} without a reason: {answer.text()!r}"
    return None


def has_reason(answer: Answer) -> bool:
    """A JSON ``detail`` that says something, or a plain-text sentence (the parser's 400, the
    request-head deadline's 408: both come before any route, where no JSON body is made)."""
    kind = answer.headers.get("content-type", "")
    if answer.head_only:
        return True
    if kind.startswith("application/json"):
        try:
            detail = json.loads(answer.body).get("detail")
        except (ValueError, AttributeError):
            return False
        return bool(detail)
    return kind.startswith("text/plain") and len(answer.body.strip()) > 8


@dataclass
class Tally:
    """What a campaign sent and got."""

    requests: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    problems: list[str] = field(default_factory=list)

    def judge(self, what: str, answer: Answer, overload_ok: bool = False) -> str | None:
        self.requests += 1
        self.statuses[answer.status] += 1
        found = problem(answer, overload_ok)
        if found is not None:
            self.problems.append(f"{what}: {found}")
        return found


# -- what is served ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The served model as the campaign sees it (from /v2/models/{name})."""

    name: str
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]  # name, datatype, shape
    outputs: tuple[str, ...]

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Target:
        inputs = tuple((i["name"], i["datatype"], tuple(i["shape"])) for i in meta["inputs"])
        return cls(meta["name"], inputs, tuple(o["name"] for o in meta["outputs"]))


DATATYPES = ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16",
             "UINT64", "fp32", "", "FLOAT", "FP32 "]  # fmt: skip
_PACK = {"BOOL": "?", "UINT8": "B", "INT8": "b", "INT16": "<h", "INT32": "<i", "INT64": "<q",
         "FP16": "<e", "FP32": "<f", "FP64": "<d"}  # fmt: skip

# -- strategies ----------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),  # NaN/Infinity tokens: not JSON at all
    st.floats(min_value=-1e40, max_value=1e40),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=24,
)


@st.composite
def shapes(draw: st.DrawFn, shape: tuple[int, ...]) -> list[int]:
    """The model's shape with -1 filled in, or a wrong one (rank, sizes, signs, magnitudes)."""
    fitting = [draw(st.integers(0, 3)) if size < 0 else size for size in shape]
    return draw(st.one_of(
        st.just(fitting),
        st.lists(st.integers(-3, 6), max_size=5),
        st.lists(st.sampled_from([0, 1, 2**31, 2**62, -(2**63), 2**64]), min_size=1, max_size=4),
    ))  # fmt: skip


@st.composite
def tensor_values(draw: st.DrawFn, datatype: str, count: int) -> list[Any]:
    """``count`` values (or a few more or fewer) of roughly the right kind, sometimes not."""
    count = min(count, 64) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    numbers = st.one_of(
        st.floats(width=32, allow_nan=False, allow_infinity=False),
        st.integers(-300, 300),
        st.sampled_from([0, 1, -1, 65504.5, 1e39, -1e39, 2**63, 3.4028235e38]),
    )
    element = st.booleans() if datatype == "BOOL" else numbers
    values = draw(st.lists(element | scalars if draw(st.booleans()) else element,
                           min_size=max(0, count), max_size=max(0, count)))  # fmt: skip
    return values


@st.composite
def v2_bodies(draw: st.DrawFn, target: Target) -> tuple[bytes, list[tuple[str, str]]]:
    """A v2 infer body (JSON, or JSON header + raw tensors) and the headers it travels with."""
    binary = draw(st.booleans())
    inputs, blobs = [], []
    for name, datatype, shape in target.inputs:
        dims = draw(shapes(shape))
        wanted = draw(st.sampled_from([datatype, datatype, *DATATYPES]))
        count = math.prod(d for d in dims if d >= 0) if len(dims) < 6 else 1
        entry: dict[str, Any] = {"name": draw(st.sampled_from([name, name, "x", "", "input__1"])),
                                 "shape": dims, "datatype": wanted}  # fmt: skip
        values = draw(tensor_values(wanted if wanted in _PACK else datatype, count))
        if binary:
            blob = _pack(values, wanted) if wanted in _PACK else draw(st.binary(max_size=64))
            blob = draw(st.sampled_from([blob, blob, blob[:-1], blob + b"\0"]))
            entry["parameters"] = {"binary_data_size": draw(st.sampled_from([len(blob), len(blob), -1, 10**9, True, "4"]))}
            blobs.append(blob)
        else:
            entry["data"] = draw(st.sampled_from([values, _nest(values, dims), values]))
        inputs.append(entry)
    body: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=10) | json_values)
    if draw(st.booleans()):
        body["outputs"] = [{"name": draw(st.sampled_from([*target.outputs, "nope"])),
                            "parameters": draw(st.none() | st.fixed_dictionaries({"binary_data": st.booleans()}) | json_values)}]  # fmt: skip
    if draw(st.booleans()):
        body["parameters"] = draw(st.fixed_dictionaries({"binary_data_output": st.booleans()}) | json_values)
    body = draw(mutated(body))
    header = json.dumps(body, allow_nan=True).encode()
    if not binary:
        return header, [("content-type", "application/json")]
    split = draw(st.sampled_from([str(len(header))] * 3 + ["0", "-5", "abc", str(len(header) + 10**6), " 12", "1e3"]))
    return header + b"".join(blobs), [("inference-header-content-length", split)]


@st.composite
def v1_bodies(draw: st.DrawFn, target: Target) -> bytes:
    _, datatype, shape = target.inputs[0]
    rows = draw(st.integers(0, 4))
    row = [size if size >= 0 else draw(st.integers(0, 3)) for size in shape[1:]]
    values = draw(tensor_values(datatype, rows * math.prod(row)))
    body: dict[str, Any] = {draw(st.sampled_from(["instances", "instances", "inputs", "rows"])): _nest(values, [rows, *row])}
    return json.dumps(draw(mutated(body)), allow_nan=True).encode()


@st.composite
def mutated(draw: st.DrawFn, body: Any) -> Any:
    """``body`` with up to three spots replaced, deleted or buried under nesting."""
    for _ in range(draw(st.integers(0, 3))):
        body = _mutate_at(draw, body)
    return body


def _mutate_at(draw: st.DrawFn, node: Any) -> Any:
    if isinstance(node, (dict, list)) and node and draw(st.integers(0, 2)):  # go deeper
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = draw(st.sampled_from(keys))
        copy: Any = dict(node) if isinstance(node, dict) else list(node)
        copy[key] = _mutate_at(draw, node[key])
        return copy
    how = draw(st.sampled_from(["replace", "replace", "nest", "drop"]))
    if how == "nest":
        depth = draw(st.sampled_from([2, 70, 250]))  # deeper: the hand-made cases (json.dumps recurses)
        for _ in range(depth):
            node = [node]
        return node
    if how == "drop":
        return {} if isinstance(node, dict) else []
    return draw(json_values)


def _pack(values: list[Any], datatype: str) -> bytes:
    import struct

    out = b""
    for value in values:
        try:
            out += struct.pack(_PACK[datatype], value)
        except (struct.error, TypeError, OverflowError):
            out += b"\xff" * struct.calcsize(_PACK[datatype])
    return out


def _nest(values: list[Any], dims: Sequence[int]) -> Any:
    """``values`` as nested lists of ``dims`` when they fit exactly, else as they are."""
    if len(dims) < 2 or any(d <= 0 for d in dims) or math.prod(dims) != len(values):
        return values
    step = len(values) // dims[0]
    return [_nest(values[i * step : (i + 1) * step], dims[1:]) for i in range(dims[0])]


@st.composite
def requests(draw: st.DrawFn, target: Target) -> tuple[str, bytes]:
    """(what, raw request bytes): an inference call more often than not, hostile in some part."""
    name = draw(st.sampled_from([target.name] * 18 + ["nope", "", "a:b", "%2e%2e", "x" * 300, "ü"]))
    kind = draw(st.sampled_from(["v2", "v2", "v2", "v1", "v1", "other"]))
    headers: list[tuple[str, str]] = []
    method = "POST"
    if kind == "v2":
        version = draw(st.sampled_from(["", "", "", "", "/versions/1", "/versions/1", "/versions/2", "/versions/"]))
        path = f"/v2/models/{name}{version}/infer"
        body, headers = draw(v2_bodies(target))
    elif kind == "v1":
        path = f"/v1/models/{name}:predict"
        body = draw(v1_bodies(target))
    else:
        path = draw(st.sampled_from([f"/v2/models/{name}", f"/v2/models/{name}/ready", f"/v2/models/{name}/config",
                                     f"/v1/models/{name}", "/health", "/v2/health/ready", "/metrics", "/v2", "/nope",
                                     "/openapi.json", "/health/", "//health", "/v2/models/" + name + "/infer?x=1"]))  # fmt: skip
        method = draw(st.sampled_from(["GET", "GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"]))
        body = draw(st.sampled_from([b"", b"{}", b"\xff\xfe"]))
    method = draw(st.sampled_from([method] * 8 + ["GET", "PUT"]))
    headers += draw(st.lists(st.sampled_from([("content-type", "text/plain"), ("content-type", "application/octet-stream"),
                                              ("accept", "application/xml"), ("inference-header-content-length", "7"),
                                              ("x-ümlaut", "ü"), ("expect", "100-continue")]), max_size=2))  # fmt: skip
    path = path.replace("ü", "%C3%BC").replace(" ", "%20")
    framing = draw(st.sampled_from(["length"] * 6 + ["chunked", "broken chunks", "short length"]))
    if framing == "chunked":
        return f"{method} {path} (chunked)", request_bytes(method, path, _chunked(body), [*headers, ("transfer-encoding", "chunked")])
    if framing == "broken chunks":
        return f"{method} {path} (broken chunks)", request_bytes(
            method, path, b"zz\r\n" + body, [*headers, ("transfer-encoding", "chunked")])  # fmt: skip
    if framing == "short length" and body:
        return f"{method} {path} (short length)", request_bytes(method, path, body, headers, length=len(body) // 2)
    return f"{method} {path}", request_bytes(method, path, body, headers)


def _chunked(body: bytes) -> bytes:
    parts = [body[i : i + 7] for i in range(0, len(body), 7)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


# -- hand-made cases -----------------------------------------------------------------------------

Case = Callable[[tuple[str, int], Target, float], Answer]
"""(address, target, the server's request_timeout_s) → the answer to one hostile request."""


def _v2_path(target: Target) -> str:
    return f"/v2/models/{target.name}/infer"


def _good_v2(target: Target) -> dict[str, Any]:
    inputs = []
    for name, datatype, shape in target.inputs:
        dims = [1 if size < 0 else size for size in shape]
        inputs.append({"name": name, "datatype": datatype, "shape": dims, "data": [0] * math.prod(dims)})
    return {"inputs": inputs}


def _post(path: str, body: bytes, headers: Sequence[tuple[str, str]] = (), length: int | None = None) -> Case:
    return lambda address, target, timeout_s: exchange(
        address, request_bytes("POST", path.format(name=target.name), body, headers, length)
    )


def _deep_data(target: Target, levels: int) -> bytes:
    name, datatype, shape = target.inputs[0]
    head = json.dumps({"name": name, "datatype": datatype, "shape": [1 if d < 0 else d for d in shape]})
    return b'{"inputs": [' + head[:-1].encode() + b', "data": ' + b"[" * levels + b"0" + b"]" * levels + b"}]}"


def _stalled(address: tuple[str, int], target: Target, timeout_s: float) -> Answer:
    return exchange(address, request_bytes("POST", _v2_path(target), b'{"inputs": ', length=4096))


def _dripped(address: tuple[str, int], target: Target, timeout_s: float) -> Answer:
    head = request_bytes("POST", _v2_path(target), length=10_000)
    return drip(address, [head, *[b" "] * int(timeout_s * 8 + 8)], pause_s=0.2)


def _silent(address: tuple[str, int], target: Target, timeout_s: float) -> Answer:
    return drip(address, [b""], pause_s=0.0)


def _half_head(address: tuple[str, int], target: Target, timeout_s: float) -> Answer:
    return drip(address, [b"POST /v2/models/", b"x/infer HTTP/1.1\r\nhost: x\r\n"], pause_s=0.1)


def _binary(target: Target, header_length: str, blob: bytes, size: Any = None) -> Case:
    body = _good_v2(target)
    body["inputs"][0].pop("data")
    body["inputs"][0]["parameters"] = {"binary_data_size": len(blob) if size is None else size}
    header = json.dumps(body).encode()
    length = str(len(header)) if header_length == "right" else header_length
    return _post(_v2_path(target), header + blob, [("inference-header-content-length", length)])


def hand_made(target: Target) -> dict[str, Case]:
    """The cases by name: what the issue lists, and what generators rarely build."""
    good = _good_v2(target)
    first = good["inputs"][0]
    count = len(first["data"])
    v2 = _v2_path(target)

    def body(**changes: Any) -> bytes:
        return json.dumps({"inputs": [{**first, **changes}, *good["inputs"][1:]]}, allow_nan=True).encode()

    return {
        "JSON nested 100,000 deep": _post(v2, b"[" * 100_000),
        "data nested 1,000 deep": _post(v2, _deep_data(target, 1000)),
        "data nested 70 deep (past numpy's 64 dimensions)": _post(v2, _deep_data(target, 70)),
        "id nested 600 deep": _post(v2, json.dumps({**good, "id": json.loads(b"[" * 600 + b"]" * 600)}).encode()),
        "Content-Length of 10^15": _post(v2, b"{}", length=10**15),
        "Content-Length past the body, then silence": _stalled,
        "a body dripped one byte at a time": _dripped,
        "a connection that sends nothing": _silent,
        "half a request head, then silence": _half_head,
        "a negative Content-Length": _post(v2, b"{}", length=-1),
        "NaN in the data": _post(v2, body(data=[math.nan] * count)),
        "Infinity in the data": _post(v2, body(data=[math.inf] * count)),
        "1e400 in the data": _post(v2, body(data=[0] * (count - 1)).replace(b"[0", b"[1e400, 0", 1)),
        "a value beyond FP32": _post(v2, body(data=[1e39] * count)),
        "shape holding fewer values than data": _post(v2, body(shape=[1])),
        "shape of 2^62 rows": _post(v2, body(shape=[2**62, *first["shape"][1:]])),
        "an empty tensor of 2^62 columns": _post(v2, body(shape=[0, 2**62], data=[])),  # was a 500
        "an empty tensor of 65 dimensions": _post(v2, body(shape=[0] * 65, data=[])),  # was a 500
        "a negative dimension": _post(v2, body(shape=[-1, *first["shape"][1:]])),
        "datatype BYTES": _post(v2, body(datatype="BYTES")),
        "datatype of the wrong width": _post(v2, body(datatype="FP64")),
        "true/false among the numbers": _post(v2, body(data=[True] + [0] * (count - 1))),
        "binary: header length past the body": _binary(target, "99999", b"\0" * 4 * count),
        "binary: header length 0": _binary(target, "0", b"\0" * 4 * count),
        "binary: header length negative": _binary(target, "-3", b"\0" * 4 * count),
        "binary: header length not a number": _binary(target, "twelve", b"\0" * 4 * count),
        "binary: header length inside the JSON": _binary(target, "5", b"\0" * 4 * count),
        "binary: fewer bytes than the shape needs": _binary(target, "right", b"\0" * (4 * count - 1)),
        "binary: binary_data_size past the body": _binary(target, "right", b"\0" * 4 * count, 10**12),
        "binary: binary_data_size negative": _binary(target, "right", b"\0" * 4 * count, -4),
        "binary: NaN and Infinity bytes": _binary(target, "right", (b"\x00\x00\xc0\x7f\x00\x00\x80\x7f" * count)[: 4 * count]),
        "body of invalid UTF-8": _post(v2, b'{"inputs": "\xff\xfe"}'),
        "body with a BOM": _post(v2, b"\xef\xbb\xbf" + json.dumps(good).encode()),
        "duplicate keys": _post(v2, b'{"inputs": [], "inputs": ' + json.dumps(good["inputs"]).encode() + b"}"),
        "chunked body over the limit": lambda address, target, timeout_s: exchange(address, request_bytes(
            "POST", v2, (b"100000\r\n" + b" " * 0x100000 + b"\r\n") * 17 + b"0\r\n\r\n", [("transfer-encoding", "chunked")])),
        "Content-Length and chunked at once": _post(v2, b"0\r\n\r\n", [("transfer-encoding", "chunked"),
                                                                      ("content-length", "5")]),
        "HTTP/1.0 without a host": lambda address, target, timeout_s: exchange(
            address, b"POST " + v2.encode() + b" HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}"),
        "not HTTP at all": lambda address, target, timeout_s: exchange(address, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc"),
        "a 10 kB header": _post(v2, json.dumps(good).encode(), [("x-big", "a" * 10_000)]),
        "a path of 60 kB": lambda address, target, timeout_s: exchange(address, request_bytes("GET", "/" + "a" * 60_000)),
    }  # fmt: skip
