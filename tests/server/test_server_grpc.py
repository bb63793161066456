"""The OIP v2 gRPC service, driven by tritonclient.grpc unchanged: health, metadata, inference,
and bad inputs answered with the REST detail under the matching gRPC status code."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import reference
from server_support import ModelFiles, Running, free_port, serve

SERVER_DIR = Path(__file__).resolve().parents[2] / "server" / "modelship_server"


@pytest.fixture(scope="module")
def grpc_server(models: ModelFiles) -> Iterator[tuple[Running, str]]:
    port = free_port()
    with serve(model_name="tiny", model_uri=str(models.mlp_ts), grpc_port=port, device="cpu") as running:
        yield running, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def client(grpc_server: tuple[Running, str]) -> Iterator[Any]:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(grpc_server[1])
    yield client
    client.close()


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    assert client.get_server_metadata().name == "modelship"
    meta = client.get_model_metadata("tiny", as_json=True)
    assert meta["name"] == "tiny" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert client.is_model_ready("tiny", "1")


def test_infer_matches_the_eager_model(client: Any, models: ModelFiles) -> None:
    import tritonclient.grpc as triton

    rows = np.random.default_rng(4).normal(size=(6, 4)).astype(np.float32)
    tensor = triton.InferInput("input__0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer("tiny", [tensor], request_id="r1")
    expected = reference.mlp(models.mlp, rows)  # numpy, not the torch module the server serves
    np.testing.assert_allclose(result.as_numpy("output__0"), expected, rtol=1e-5, atol=1e-5)
    assert result.get_response().id == "r1"


def _rest_detail(running: Running, path: str, body: dict[str, Any]) -> tuple[int, str]:
    response = running.http.post(path, content=json.dumps(body).encode())
    return response.status_code, response.json()["detail"]


@pytest.mark.parametrize(
    ("case", "datatype", "shape", "model", "version", "output", "code", "http"),
    [
        ("wrong datatype", "FP64", [1, 4], "tiny", "", None, "INVALID_ARGUMENT", 400),
        ("wrong shape", "FP32", [1, 3], "tiny", "", None, "INVALID_ARGUMENT", 400),
        ("unknown output", "FP32", [1, 4], "tiny", "", "logits", "INVALID_ARGUMENT", 400),
        ("unknown model", "FP32", [1, 4], "nope", "", None, "NOT_FOUND", 404),
        ("unknown version", "FP32", [1, 4], "tiny", "9", None, "NOT_FOUND", 404),
    ],
)
def test_bad_input_gets_the_rest_detail_as_a_grpc_status(
    grpc_server: tuple[Running, str], client: Any, case: str, datatype: str, shape: list[int],
    model: str, version: str, output: str | None, code: str, http: int,
) -> None:  # fmt: skip
    import tritonclient.grpc as triton

    data = np.zeros(shape, dtype=np.float64 if datatype == "FP64" else np.float32)
    tensor = triton.InferInput("input__0", shape, datatype)
    tensor.set_data_from_numpy(data)
    outputs = [triton.InferRequestedOutput(output)] if output else None
    with pytest.raises(triton.InferenceServerException) as raised:
        client.infer(model, [tensor], model_version=version, outputs=outputs)
    assert raised.value.status() == f"StatusCode.{code}", raised.value
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    body: dict[str, Any] = {"inputs": [{"name": "input__0", "datatype": datatype, "shape": shape,
                                        "data": data.reshape(-1).tolist()}]}  # fmt: skip
    if output:
        body["outputs"] = [{"name": output}]
    status, detail = _rest_detail(grpc_server[0], path, body)
    assert status == http and raised.value.message() == detail, (case, detail)


METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")


@pytest.mark.parametrize("method", METHODS)
def test_a_malformed_message_is_invalid_argument(grpc_server: tuple[Running, str], method: str) -> None:
    """Bytes that are no protobuf message: grpc's deserializer hook answered UNKNOWN; the
    caller's mistake is INVALID_ARGUMENT, with the parser's reason."""
    import grpc

    with grpc.insecure_channel(grpc_server[1]) as channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
        with pytest.raises(grpc.RpcError) as raised:
            call(b"\xff\xff\xff\xff", timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
    assert f"not a valid inference.{method}Request message" in raised.value.details()
    assert grpc_server[0].http.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("datatype", "contents", "words"),
    [
        ("FP32", {"int_contents": [1, 2, 3, 4]}, "FP32 values go in contents.fp32_contents, not contents.int_contents"),
        ("FP16", {"fp32_contents": [1, 2, 3, 4]}, "FP16 has no typed contents field"),
        ("FP32", None, "has no values: set its contents or raw_input_contents"),
    ],
)
def test_values_in_the_wrong_contents_field_are_named(
    grpc_server: tuple[Running, str], datatype: str, contents: dict[str, list[int]] | None, words: str
) -> None:
    """The REST check alone said "shape [1, 4] needs 4 values, data has 0": true, but not why."""
    import grpc

    from modelship_server import grpc_service

    messages = grpc_service.message_classes()
    request = messages["ModelInferRequest"](model_name="tiny")
    tensor = request.inputs.add(name="input__0", datatype=datatype, shape=[1, 4])
    for field, values in (contents or {}).items():
        getattr(tensor.contents, field).extend(values)
    with grpc.insecure_channel(grpc_server[1]) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=lambda m: m.SerializeToString())  # fmt: skip
        with pytest.raises(grpc.RpcError) as raised:
            call(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in raised.value.details()


def test_grpc_calls_are_counted_in_metrics(grpc_server: tuple[Running, str], client: Any) -> None:
    client.is_server_ready()
    text = grpc_server[0].http.get("/metrics").text
    assert 'endpoint="/inference.GRPCInferenceService/ServerReady",method="GRPC",status="200"' in text


def test_committed_descriptor_set_matches_the_proto(tmp_path: Path) -> None:
    out = tmp_path / "grpc_predict_v2.desc"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{SERVER_DIR}", f"--descriptor_set_out={out}",
         str(SERVER_DIR / "grpc_predict_v2.proto")],
        check=True,
    )  # fmt: skip
    assert out.read_bytes() == (SERVER_DIR / "grpc_predict_v2.desc").read_bytes(), (
        "grpc_predict_v2.desc is out of date: regenerate it (see grpc_predict_v2.proto's header)"
    )
