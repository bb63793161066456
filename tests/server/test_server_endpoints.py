"""Every endpoint against real TorchScript and torch.export models (MLP and CNN), on the CPU
(test_server_devices.py covers each device present), answers checked against reference.py's numpy models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import reference
import torch
from server_support import ModelFiles, Running, serve


def expected(module: torch.nn.Module, rows: np.ndarray) -> np.ndarray:
    """The answer computed without torch (reference.py), not by the module the server serves."""
    return reference.predict(module, rows)


VARIANTS = {
    "mlp-torchscript": ("mlp", "mlp_ts", "torchscript", "input__0", (4,)),
    "mlp-export": ("mlp", "mlp_export", "torch-export", "x", (4,)),
    "cnn-torchscript": ("cnn", "cnn_ts", "torchscript", "input__0", (1, 12, 12)),
    "cnn-export": ("cnn", "cnn_export", "torch-export", "x", (1, 12, 12)),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(
    request: pytest.FixtureRequest, models: ModelFiles
) -> Iterator[tuple[Running, torch.nn.Module, str, tuple]]:
    module_attr, file_attr, fmt, input_name, row_shape = VARIANTS[request.param]
    with serve(model_name="tiny", model_uri=str(getattr(models, file_attr)), model_format=fmt, device="cpu") as running:
        yield running, getattr(models, module_attr), input_name, row_shape


@pytest.fixture(scope="module")
def mlp_server(models: ModelFiles) -> Iterator[Running]:
    with serve(model_name="tiny", model_uri=str(models.mlp_ts), device="cpu") as running:
        yield running


def test_v1_predict_matches_the_eager_model(variant: tuple) -> None:
    running, module, _, row_shape = variant
    rows = np.random.default_rng(0).normal(size=(3, *row_shape)).astype(np.float32)
    with running.client() as client:
        response = client.post("/v1/models/tiny:predict", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        np.array(response.json()["predictions"]), expected(module, rows), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("nested", [False, True])
def test_v2_infer_with_flat_or_nested_data(variant: tuple, nested: bool) -> None:
    running, module, input_name, row_shape = variant
    rows = np.random.default_rng(1).normal(size=(2, *row_shape)).astype(np.float32)
    data = rows.tolist() if nested else rows.reshape(-1).tolist()
    request = {
        "id": "req-7",
        "inputs": [{"name": input_name, "shape": list(rows.shape), "datatype": "FP32", "data": data}],
    }
    with running.client() as client:
        response = client.post("/v2/models/tiny/infer", json=request)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_name"] == "tiny" and body["id"] == "req-7"
        (out,) = body["outputs"]
        assert out["name"] == "output__0" and out["datatype"] == "FP32"
        want = expected(module, rows)
        assert out["shape"] == list(want.shape)
        np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), want, rtol=1e-5, atol=1e-5)
        # the versioned path is routed to the same model
        versioned = client.post("/v2/models/tiny/versions/1/infer", json=request).json()["outputs"][0]
        np.testing.assert_allclose(np.array(versioned["data"]).reshape(want.shape), want, rtol=1e-5, atol=1e-5)


def test_v2_metadata_describes_inputs_and_outputs(variant: tuple) -> None:
    running, _, input_name, row_shape = variant
    with running.client() as client:
        meta = client.get("/v2/models/tiny").json()
        assert meta["name"] == "tiny" and meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": input_name, "datatype": "FP32", "shape": [-1, *row_shape]}]
        assert meta["outputs"][0]["datatype"] == "FP32" and meta["outputs"][0]["shape"][0] == -1
        assert client.get("/v2/models/tiny/versions/1").json() == meta


def test_health_live_and_readiness_endpoints(mlp_server: Running) -> None:
    with mlp_server.client() as client:
        health = client.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["ready"] is True and body["status"] == "ready" and body["reason"] is None
        assert body["device"]["device"] == "cpu" and body["device"]["threads"] >= 1
        assert body["model"]["load_seconds"] is not None
        assert client.get("/health/live").json() == {"live": True}
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/tiny/ready").json() == {"name": "tiny", "ready": True}
        assert client.get("/v1/models/tiny").json() == {"name": "tiny", "ready": True}
        assert client.get("/v1/models").json() == {"models": ["tiny"]}
        server_meta = client.get("/v2").json()
        assert server_meta["name"] == "modelship" and "binary_tensor_data" in server_meta["extensions"]


def test_v2_binary_tensor_extension(mlp_server: Running, models: ModelFiles) -> None:
    rows = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input__0",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 32},
                }
            ],
            "outputs": [{"name": "output__0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    with mlp_server.client() as client:
        response = client.post(
            "/v2/models/tiny/infer",
            content=header + rows.tobytes(),
            headers={
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
            },
        )
    assert response.status_code == 200, response.text
    split = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:split])
    (out,) = meta["outputs"]
    assert out["parameters"]["binary_data_size"] == 2 * 3 * 4
    got = np.frombuffer(response.content[split:], dtype="<f4").reshape(out["shape"])
    np.testing.assert_allclose(got, expected(models.mlp, rows), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_works_unchanged(mlp_server: Running, models: ModelFiles, binary: bool) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(mlp_server.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
        meta = client.get_model_metadata("tiny")
        assert meta["inputs"][0]["name"] == "input__0"
        config = client.get_model_config("tiny")
        assert config["max_batch_size"] == 32
        assert config["input"] == [{"name": "input__0", "data_type": "TYPE_FP32", "dims": [4]}]
        rows = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
        tensor = triton.InferInput("input__0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        result = client.infer(
            "tiny", [tensor], outputs=[triton.InferRequestedOutput("output__0", binary_data=binary)]
        )
        np.testing.assert_allclose(
            result.as_numpy("output__0"), expected(models.mlp, rows), rtol=1e-5, atol=1e-5
        )
        with pytest.raises(triton.InferenceServerException, match="does not match"):
            client.infer(
                "tiny", [triton.InferInput("input__0", [1, 4], "FP64").set_data_from_numpy(np.zeros((1, 4)))]
            )
    finally:
        client.close()


def test_metrics_expose_requests_latency_batches_queue_device(mlp_server: Running) -> None:
    with mlp_server.client() as client:
        client.post("/v1/models/tiny:predict", json={"instances": [[0, 0, 0, 0]]})
        client.post("/v1/models/tiny:predict", json={"instances": [[0, 0, 0]]})
        client.get("/openapi.json")
        text = client.get("/metrics").text
    for needle in [
        'modelship_requests_total{endpoint="/v1/models/{name}:predict",method="POST",status="200"}',
        'modelship_requests_total{endpoint="/v1/models/{name}:predict",method="POST",status="400"}',
        'modelship_request_duration_seconds_bucket{endpoint="/v1/models/{name}:predict"',
        "modelship_batch_size_bucket",
        "modelship_batch_duration_seconds_bucket",
        "modelship_queue_depth 0.0",
        "modelship_requests_in_flight",
        'modelship_model_load_seconds{model="tiny"}',
        'modelship_model_ready{model="tiny"} 1.0',
        'modelship_device_info{device="cpu",dtype="float32"',
        # its own label: under "other" it was a route no OpenAPI operation lists (the campaign's check)
        'modelship_requests_total{endpoint="/openapi.json",method="GET",status="200"}',
    ]:
        assert needle in text, f"{needle} missing from /metrics"


def test_unknown_routes_and_methods_answer_with_detail(mlp_server: Running) -> None:
    with mlp_server.client() as client:
        assert client.get("/nope").json() == {"detail": "Not Found"}
        trailing = client.get("/health/")  # was a 307 to /health: a status no document listed
        assert trailing.status_code == 404 and trailing.json() == {"detail": "Not Found"}
        response = client.get("/v2/models/tiny/infer")
        assert response.status_code == 405 and "detail" in response.json()


def test_openapi_describes_every_route_and_the_inference_bodies(mlp_server: Running) -> None:
    from fastapi.routing import APIRoute

    spec = mlp_server.http.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("description") or operation.get("summary"), f"{method} {path}"
            assert "422" not in operation["responses"], f"{method} {path}: no route answers 422"
            assert "413" in operation["responses"], f"{method} {path}: any declared body over the limit is a 413"
    routes = [*mlp_server.app.routes]
    for route in routes:  # FastAPI keeps an included router's routes behind one entry (no prefix here)
        routes += getattr(route, "original_router", None) and route.original_router.routes or []
    served = {(r.path_format, m.lower()) for r in routes if isinstance(r, APIRoute) for m in r.methods}
    described = {(path, method) for path, operations in spec["paths"].items() for method in operations}
    assert served == described  # the document itself included: GET /openapi.json
    assert {template for _, template in mlp_server.app.hot.routes.values()} <= {p for p, _ in described}
    for path in ("/v1/models/{name}:predict", "/v2/models/{name}/infer"):
        operation = spec["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]
        assert {"400", "404", "408", "413", "503"} <= set(operation["responses"])
        assert "Retry-After" in operation["responses"]["503"]["headers"]
        # narrowed to the loaded model: its name, its tensors, an example that works
        name = next(p for p in operation["parameters"] if p["name"] == "name")
        assert name["schema"]["enum"] == ["tiny"]
        assert mlp_server.http.post(path.replace("{name}", "tiny"), json=body["example"]).status_code == 200
    v1 = spec["paths"]["/v1/models/{name}:predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    row = v1["properties"]["instances"]["items"]
    assert (row["minItems"], row["maxItems"], row["items"]["type"]) == (4, 4, "number")
    v2 = spec["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    tensor = v2["properties"]["inputs"]["items"]["properties"]
    assert tensor["name"]["enum"] == ["input__0"] and tensor["datatype"]["enum"] == ["FP32"]
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]  # what /metrics answers, not JSON
    assert "404" in spec["info"]["description"] and "405" in spec["info"]["description"]


def test_predict_path_answers_405_to_other_methods(mlp_server: Running) -> None:
    """GET /v1/models/tiny:predict matched GET /v1/models/{name} (404 "model 'tiny:predict' is
    not served") and OPTIONS a 405 allowing GET: the path's one method is POST."""
    for method in ("GET", "OPTIONS", "PUT"):
        response = mlp_server.http.request(method, "/v1/models/tiny:predict")
        assert response.status_code == 405 and response.headers["allow"] == "POST", (method, response.text)
    assert mlp_server.http.get("/v1/models/tiny").json() == {"name": "tiny", "ready": True}


def test_v1_rows_under_two_names_at_once_are_refused(mlp_server: Running) -> None:
    body = {"instances": [[1, 2, 3, 4]], "inputs": []}
    response = mlp_server.http.post("/v1/models/tiny:predict", json=body)
    assert response.status_code == 400 and "not both" in response.json()["detail"]
    assert mlp_server.http.post("/v1/models/tiny:predict", json={"inputs": [[1, 2, 3, 4]]}).status_code == 200


def test_an_exported_batch_range_is_honoured(models: ModelFiles, tmp_path: Path) -> None:
    """A program exported for 2 to 8 rows: requests outside that range were a 500 ("Guard
    failed") and, with the default max_batch_size of 32, so was the warm-up (the model never
    loaded) and every batch of more than 8 rows. Now: a 400 naming the range, batches of at
    most 8, warm-up inside the range, and the model configuration says 8."""
    path = tmp_path / "mlp-2-8.pt2"
    batch = torch.export.Dim("batch", min=2, max=8)
    torch.export.save(
        torch.export.export(models.mlp, (torch.zeros(4, 4),), dynamic_shapes={"x": {0: batch}}), str(path)
    )
    rows = np.random.default_rng(5).normal(size=(8, 4)).astype(np.float32)
    with serve(model_name="tiny", model_uri=str(path), model_format="torch-export", device="cpu") as running:
        assert running.http.get("/health").status_code == 200, running.http.get("/health").text
        assert running.http.get("/v2/models/tiny/config").json()["max_batch_size"] == 8
        for count, status in [(1, 400), (2, 200), (8, 200), (9, 400)]:
            body = {"instances": np.resize(rows, (count, 4)).tolist()}
            response = running.http.post("/v1/models/tiny:predict", json=body)
            assert response.status_code == status, response.text
            if status == 400:
                assert "dimension 0" in response.json()["detail"] and "2 to 8" in response.json()["detail"]
        assert running.dataplane.batcher._max_rows == 8
