"""Issue item 6: bad input is a 4xx naming the problem, never a 500, never a dead worker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from server_support import ModelFiles, Running, serve, wait_until

from modelship_server import connections, errors, tensors, web


@pytest.fixture(scope="module")
def server(models: ModelFiles) -> Iterator[Running]:
    with serve(model_name="tiny", model_uri=str(models.mlp_ts), max_body_bytes=4096) as running:
        yield running


def v2(data: Any = None, **fields: Any) -> dict[str, Any]:
    tensor = {
        "name": "input__0",
        "shape": [1, 4],
        "datatype": "FP32",
        "data": [1, 2, 3, 4] if data is None else data,
    }
    tensor.update(fields)
    return {"inputs": [{k: v for k, v in tensor.items() if v is not ...}]}


V1 = "/v1/models/tiny:predict"
V2 = "/v2/models/tiny/infer"

# (case, path, body (dict → JSON, bytes → raw), status, words the detail must contain)
CASES: list[tuple[str, str, Any, int, str]] = [
    ("v1 wrong shape", V1, {"instances": [[1, 2, 3]]}, 400, "shape [1, 3]"),
    ("v1 wrong rank", V1, {"instances": [1, 2, 3, 4]}, 400, "shape [4]"),
    ("v1 ragged rows", V1, {"instances": [[1, 2, 3, 4], [1, 2]]}, 400, "rectangular"),
    ("v1 non-numeric", V1, {"instances": [["a", "b", "c", "d"]]}, 400, "non-numeric"),
    ("v1 numbers as strings", V1, {"instances": [["1", "2", "3", "4"]]}, 400, "non-numeric"),
    ("v1 null inside", V1, {"instances": [[1, None, 3, 4]]}, 400, "non-numeric"),
    ("v1 booleans", V1, {"instances": [[True, False, True, False]]}, 400, "FP32"),
    ("v1 nan", V1, b'{"instances": [[NaN, 1, 2, 3]]}', 400, "JSON"),
    ("v1 missing instances", V1, {"rows": [[1, 2, 3, 4]]}, 400, "instances"),
    ("v1 empty instances", V1, {"instances": []}, 400, "non-empty"),
    ("v1 instances not a list", V1, {"instances": "x"}, 400, "non-empty list"),
    ("v1 body is a list", V1, [[1, 2, 3, 4]], 400, "JSON object"),
    ("v1 malformed JSON", V1, b'{"instances": [[1, 2', 400, "not valid JSON"),
    ("v1 empty body", V1, b"", 400, "empty"),
    ("v1 unknown model", "/v1/models/nope:predict", {"instances": [[1, 2, 3, 4]]}, 404, "'nope'"),
    ("v2 wrong shape", V2, v2(shape=[1, 3], data=[1, 2, 3]), 400, "shape [1, 3]"),
    ("v2 shape/data mismatch", V2, v2(shape=[2, 4]), 400, "needs 8 values"),
    ("v2 negative dim", V2, v2(shape=[-1, 4]), 400, "non-negative"),
    ("v2 wrong datatype", V2, v2(datatype="INT64"), 400, "INT64 does not match"),
    ("v2 unknown datatype", V2, v2(datatype="FLOAT"), 400, "unknown datatype"),
    ("v2 BYTES datatype", V2, v2(datatype="BYTES"), 400, "not supported"),
    ("v2 non-numeric", V2, v2(data=["a", "b", "c", "d"]), 400, "non-numeric"),
    ("v2 data is an object", V2, v2(data={"a": 1}), 400, "list of numbers"),
    ("v2 missing data", V2, v2(data=...), 400, "'data'"),
    ("v2 missing datatype", V2, v2(datatype=...), 400, "'datatype'"),
    ("v2 missing shape", V2, v2(shape=...), 400, "'shape'"),
    ("v2 missing name", V2, v2(name=...), 400, "'name'"),
    ("v2 unknown input name", V2, v2(name="pixels"), 400, "'pixels' is not an input"),
    ("v2 missing inputs", V2, {"id": "1"}, 400, "'inputs'"),
    ("v2 inputs not objects", V2, {"inputs": [1]}, 400, "must be an object"),
    ("v2 unknown output", V2, {**v2(), "outputs": [{"name": "logits"}]}, 400, "'logits'"),
    ("v2 malformed JSON", V2, b"{nope", 400, "not valid JSON"),
    ("v2 unknown model", "/v2/models/nope/infer", v2(), 404, "'nope'"),
    ("v2 unknown version", "/v2/models/tiny/versions/9/infer", v2(), 404, "version '9'"),
    ("v2 metadata unknown model", "/v2/models/nope", None, 404, "'nope'"),
    ("v2 ready unknown model", "/v2/models/nope/ready", None, 404, "'nope'"),
    ("body over the limit", V1, {"instances": [[1.0, 2.0, 3.0, 4.0]] * 400}, 413, "exceeds the limit"),
    # found by the fuzzing campaign (test_server_fuzz.py): numpy's cast made these infinity
    ("v1 value beyond FP32", V1, {"instances": [[1e39, 1, 2, 3]]}, 400, "1e+39 does not fit FP32"),
    ("v2 value beyond FP32", V2, v2(data=[1, 2, 3, -1e39]), 400, "1e+39 does not fit FP32"),
    ("v1 a boolean among numbers", V1, {"instances": [[False, 0.0, 0.0, 0.0]]}, 400, "true/false among numbers"),
    ("v2 a boolean among numbers", V2, v2(data=[1, 2, True, 4]), 400, "true/false among numbers"),
    ("v2 id nested 500 deep", V2, {**v2(), "id": functools.reduce(lambda x, _: [x], range(500), 1)}, 400,
     "'id' must be a string"),  # was a 500: the reply's encoder gave up on it
    ("v2 id a number", V2, {**v2(), "id": 7}, 400, "'id' must be a string"),
    ("v2 parameters a list", V2, {**v2(), "parameters": [1]}, 400, "'parameters' must be an object"),
    ("v2 binary_data_output a string", V2, {**v2(), "parameters": {"binary_data_output": "yes"}}, 400,
     "'binary_data_output' must be true or false"),
    ("v2 input parameters a list", V2, v2(parameters=[1]), 400, "'parameters' must be an object"),
    ("v2 binary_data_size true", V2, v2(data=..., parameters={"binary_data_size": True}), 400,
     "binary_data_size must be a non-negative integer"),
    ("v2 output binary_data a number", V2, {**v2(), "outputs": [{"name": "output__0", "parameters": {
        "binary_data": 1}}]}, 400, "'binary_data' must be true or false"),
    # an empty tensor numpy cannot shape: was a 500 "array is too big" / "maximum supported dimension"
    ("v2 empty but too large", V2, v2(shape=[0, 2**62], data=[]), 400, "too large for any array"),
    ("v2 more than 64 dimensions", V2, v2(shape=[0] * 65, data=[]), 400, "65 dimensions, at most 64"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "path", "body", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_4xx_with_detail(
    server: Running, case: str, path: str, body: Any, status: int, words: str
) -> None:
    with server.client() as client:
        if body is None:
            response = client.get(path)
        else:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            response = client.post(path, content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert words in str(detail), detail
        if path.startswith("/v2"):
            assert response.json()["error"] == str(detail)  # what Triton/KServe v2 clients read
        # the worker survived: a good request still works
        good = client.post(V1, json={"instances": [[1, 2, 3, 4]]})
        assert good.status_code == 200


def test_binary_extension_errors_are_4xx(server: Running) -> None:
    header = json.dumps(v2(data=..., parameters={"binary_data_size": 16})).encode()
    with server.client() as client:
        short = client.post(
            V2, content=header + b"\0" * 8, headers={"Inference-Header-Content-Length": str(len(header))}
        )
        assert short.status_code == 400 and "binary_data_size" in short.json()["detail"]
        wrong = client.post(
            V2, content=header + b"\0" * 16, headers={"Inference-Header-Content-Length": "99999"}
        )
        assert wrong.status_code == 400 and "outside" in wrong.json()["detail"]
        garbage = client.post(V2, content=header, headers={"Inference-Header-Content-Length": "abc"})
        assert garbage.status_code == 400
        empty = json.dumps(v2(data=..., shape=[0, 2**62], parameters={"binary_data_size": 0})).encode()
        huge = client.post(V2, content=empty, headers={"Inference-Header-Content-Length": str(len(empty))})
        assert huge.status_code == 400 and "too large for any array" in huge.json()["detail"], huge.text


def test_request_larger_than_max_batch_size_runs_alone(server: Running) -> None:
    response = server.http.post(V1, json={"instances": [[1, 2, 3, 4]] * 40})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 40


def test_chunked_body_over_the_limit_is_413(server: Running) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"instances": ['
        for _ in range(600):
            yield b"[1.0, 2.0, 3.0, 4.0],"
        yield b"[1, 2, 3, 4]]}"

    with server.client() as client:
        response = client.post(V1, content=chunks())
        assert response.status_code == 413, response.text
        assert "exceeds" in response.json()["detail"]


@pytest.mark.parametrize(
    ("data", "datatype", "words"),
    [
        ([300, 1], "INT8", "from 1 to 300 do not fit INT8 (-128 to 127)"),
        ([-1], "UINT8", "do not fit UINT8 (0 to 255)"),
        ([2**40], "INT32", "do not fit INT32"),
        ([70000.0], "FP16", "70000 does not fit FP16 (at most 65504)"),
        ([1e39], "FP32", "does not fit FP32"),
    ],
)
def test_values_the_datatype_cannot_hold_are_refused(data: list[Any], datatype: str, words: str) -> None:
    """numpy's cast wraps integers (300 as INT8 is 44) and makes large floats infinite: the
    model would have computed on numbers nobody sent."""
    with pytest.raises(errors.InvalidInput, match=words.replace("(", r"\(").replace(")", r"\)")):
        tensors.decode_json(data, tensors.BY_NAME[datatype], [len(data)], "x")
    edge = tensors.decode_json([127, -128], tensors.BY_NAME["INT8"], [2], "x")
    assert edge.tolist() == [127, -128] and edge.dtype == np.int8
    assert tensors.decode_json([65504.0], tensors.BY_NAME["FP16"], [1], "x").tolist() == [65504.0]


def test_a_float_a_hair_above_the_largest_is_refused() -> None:
    """Found by schemathesis against the fast float path: 3.402823466385289e+38 rounds down to
    FP32's largest value, so numpy's cast raises nothing, but the schema's maximum (and the
    full path) refuse it."""
    spec = tensors.TensorSpec("input__0", "FP32", (-1, 4))
    for rows in ([[3.402823466385289e38, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, -3.402823466385289e38]] * 20):
        with pytest.raises(errors.InvalidInput, match="does not fit FP32"):
            tensors.decode_rows(rows, spec, "instances")
    largest = float(np.finfo(np.float32).max)
    assert tensors.decode_rows([[largest, 0, 0, -largest]], spec, "instances").tolist() == [[largest, 0, 0, -largest]]


_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([3.402823466385289e38, -3.4028234663852886e38, 65504.0, 65520.0, 1e-50, 0.0]),
    st.booleans(),
    st.none(),
    st.sampled_from(["1.5", "x", ""]),
)
_NESTED = st.recursive(_VALUES, lambda inner: st.lists(inner, max_size=5), max_leaves=150)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(data=_NESTED, datatype=st.sampled_from(["FP16", "FP32", "FP64"]))
def test_the_float_fast_path_agrees_with_the_full_check(data: Any, datatype: str) -> None:
    """``_as_array`` tries one numpy call first; whatever it accepts must be exactly what the
    full check makes of the same data, and whatever the full check refuses it must not accept."""
    dtype = tensors.BY_NAME[datatype]
    try:
        full: np.ndarray | None = tensors._as_array_checked(data, dtype, "x")
    except errors.InvalidInput:
        full = None
    quick = tensors._floats_at_once(data, dtype.numpy)
    if quick is None:
        return
    assert full is not None, f"the fast path accepted {data!r}, which the full check refuses"
    assert quick.dtype == full.dtype and quick.shape == full.shape
    np.testing.assert_array_equal(quick, full)


def test_receive_by_knows_uvicorn_has_the_body() -> None:
    """``web.receive_by`` arms no timer when uvicorn already holds the body, by reading the
    request cycle's ``message_event``: an internal of the pinned uvicorn, checked here on a
    real server, for a body that came with its headers and for one that had not."""
    seen: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(web._has_message(receive))
        message = await web.receive_by(receive, asyncio.get_running_loop().time() + 5)
        body = message.get("body", b"")
        while message.get("more_body"):
            message = await web.receive_by(receive, asyncio.get_running_loop().time() + 5)
            body += message.get("body", b"")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning",
                            http=connections.protocol(5.0))  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
            assert sock.recv(4096).endswith(b"hello")
            sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n")
            time.sleep(0.3)
            sock.sendall(b"world")
            assert sock.recv(4096).endswith(b"world")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert seen == [True, False]


# -- slow clients: found by the campaign's hand-made cases (uvicorn waits for a stalled client forever)


@pytest.fixture(scope="module")
def impatient(models: ModelFiles) -> Iterator[Running]:
    with serve(model_name="tiny", model_uri=str(models.mlp_ts), request_timeout_s=1.0) as running:
        yield running


def _exchange(running: Running, chunks: list[bytes], pause_s: float = 0.0) -> tuple[float, bytes]:
    """Send ``chunks`` (``pause_s`` apart), then read until the server closes: (seconds, answer)."""
    host, port = running.url.removeprefix("http://").split(":")
    started = time.monotonic()
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:  # answered: more bytes would only reset it
                    break
                sock.sendall(chunk)
                time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):  # answered and closed while we dripped
            pass
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):  # b"" once the server closed the connection
                answer += data
    return time.monotonic() - started, answer


@pytest.mark.parametrize("path", [V2, "/v2/models/other/infer"])  # the hot path, and FastAPI's
def test_a_stalled_body_is_408_and_the_connection_closed(impatient: Running, path: str) -> None:
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n".encode()
    took, answer = _exchange(impatient, [head + b'{"inputs": '])
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in answer.lower() and b"did not arrive in time" in answer
    assert took < 8, took


def test_a_dripping_body_is_408_even_while_bytes_keep_coming(impatient: Running) -> None:
    head = f"POST {V2} HTTP/1.1\r\nhost: x\r\ncontent-length: 400\r\n\r\n".encode()
    took, answer = _exchange(impatient, [head, *[b" "] * 12], pause_s=0.2)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in answer, answer


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nhost: x\r\n"], ids=["nothing", "half a head"])
def test_a_late_request_head_is_408_and_the_connection_closed(impatient: Running, sent: bytes) -> None:
    took, answer = _exchange(impatient, [sent])
    assert answer.startswith(b"HTTP/1.1 408") and b"request head" in answer, answer
    assert took < 8, took
    assert impatient.http.get("/health").status_code == 200  # the server is none the worse


def test_a_kept_alive_connection_still_serves_request_after_request(impatient: Running) -> None:
    body = json.dumps(v2()).encode()
    request = f"POST {V2} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body
    host, port = impatient.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(request)
            time.sleep(0.6)  # well within the deadline each time, 1.8 s in all
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(("path", "endpoint"), [(V1, "/v1/models/{name}:predict"), ("/v1/models/other:predict",
                                                "/v1/models/{name}:predict")])  # fmt: skip
def test_a_client_gone_before_its_body_is_499_not_500(impatient: Running, path: str, endpoint: str) -> None:
    """Broken chunked framing: uvicorn answers 400 and hangs up while the route waits for the
    body. FastAPI's routes raised ClientDisconnect: a traceback and a 500 in the metrics."""
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".encode()
    _, answer = _exchange(impatient, [head + b"5\r\n{\"ins\r\nzz\r\n"])
    assert answer.startswith(b"HTTP/1.1 400"), answer

    def counted(status: int) -> float:
        line = f'modelship_requests_total{{endpoint="{endpoint}",method="POST",status="{status}"}}'
        text = impatient.http.get("/metrics").text
        return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))

    wait_until(lambda: counted(499) >= 1, timeout=10, what="the 499 to be counted")
    assert counted(500) == 0
