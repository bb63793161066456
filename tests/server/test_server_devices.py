"""The device paths, parametrized over the devices this machine has (CPU always, ``cuda:0``
where ``torch.cuda.is_available()``), so nothing skips: CI checks the CPU side of each rule and
the GPU machine checks both.

The rest of the tier pins the CPU where an answer depends on the device (``device="cpu"``) or
hides the GPU where a test is about its absence (``no_gpu`` in test_server_startup.py), so it
passes on both machines. Here: placement by ``auto``, GPU facts in /health and /metrics,
answers over JSON, binary and gRPC against reference.py's numpy models, half precision, the
shared model process that ``auto`` picks on a GPU, a device index that does not exist, and
``require_gpu``.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import reference
import torch
from server_support import ModelFiles, Running, free_port, serve, serve_subprocess

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", *(["cuda:0"] if HAS_CUDA else [])]
BEST = "cuda:0" if HAS_CUDA else "cpu"
"""What ``device=auto`` must pick on this machine."""

TOLERANCE = {
    "cpu": {"rtol": 1e-4, "atol": 1e-5},
    # cuDNN may run fp32 convolutions in TF32 (10-bit mantissa): ~1e-3 from the float64 reference
    "cuda:0": {"rtol": 2e-3, "atol": 2e-3},
}
FP16 = {"rtol": 3e-2, "atol": 3e-2}


def _images(rows: int, seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, 1, 12, 12)).astype(np.float32)


@pytest.fixture(scope="module", params=DEVICES)
def cnn_on(request: pytest.FixtureRequest, models: ModelFiles) -> Iterator[tuple[Running, str, str]]:
    """The CNN served on one device, with gRPC: (running, grpc address, device)."""
    port = free_port()
    with serve(model_name="cnn", model_uri=str(models.cnn_ts), grpc_port=port, device=request.param) as running:
        yield running, f"127.0.0.1:{port}", request.param


def test_auto_places_the_model_on_the_best_device_and_says_so(models: ModelFiles) -> None:
    with serve(model_name="cnn", model_uri=str(models.cnn_ts)) as running:  # device=auto
        health = running.http.get("/health").json()
        metrics = running.http.get("/metrics").text
    assert health["ready"] is True and health["device"]["device"] == BEST, health
    assert health["device"]["cuda_available"] is HAS_CUDA
    assert f'modelship_device_info{{device="{BEST}"' in metrics
    # GPU facts where there is a GPU, and none invented where there is not
    assert ("gpu_name" in health["device"]) is HAS_CUDA, health
    assert ("modelship_gpu_memory_total_bytes" in metrics) is HAS_CUDA
    if HAS_CUDA:
        assert health["device"]["gpu_name"] and health["device"]["gpu_memory_total_bytes"] > 0
        assert "modelship_gpu_memory_allocated_bytes" in metrics


def test_answers_match_the_reference_over_json_binary_and_grpc(
    cnn_on: tuple[Running, str, str], models: ModelFiles
) -> None:
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    running, grpc_address, device = cnn_on
    assert running.http.get("/health").json()["device"]["device"] == device
    images = _images(5)
    want = reference.cnn(models.cnn, images)  # numpy float64, not the module the server serves
    v1 = running.http.post("/v1/models/cnn:predict", json={"instances": images.tolist()})
    np.testing.assert_allclose(np.array(v1.json()["predictions"]), want, **TOLERANCE[device])
    http_client = triton_http.InferenceServerClient(running.url.removeprefix("http://"))
    grpc_client = triton_grpc.InferenceServerClient(grpc_address)
    try:
        for client, module in ((http_client, triton_http), (grpc_client, triton_grpc)):
            tensor = module.InferInput("input__0", list(images.shape), "FP32")
            tensor.set_data_from_numpy(images, **({"binary_data": True} if module is triton_http else {}))
            got = client.infer("cnn", [tensor]).as_numpy("output__0")
            np.testing.assert_allclose(got, want, **TOLERANCE[device])
    finally:
        http_client.close()
        grpc_client.close()


@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_runs_fp16_on_a_gpu_and_answers_fp32(models: ModelFiles, device: str) -> None:
    with serve(model_name="cnn", model_uri=str(models.cnn_ts), half_precision=True, device=device) as running:
        health = running.http.get("/health").json()
        images = _images(3, seed=12)
        body = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": list(images.shape),
                            "data": images.ravel().tolist()}]}  # fmt: skip
        (out,) = running.http.post("/v2/models/cnn/infer", json=body).json()["outputs"]
    if device == "cpu":  # CPU kernels for fp16 are slow or missing: ignored, and said so
        assert health["device"]["dtype"] == "float32", health
        assert "half_precision ignored on CPU" in health.get("notes", []), health
    else:
        assert health["device"]["dtype"] == "float16", health
    assert out["datatype"] == "FP32"  # clients see one datatype whatever the device computed in
    want = reference.cnn(models.cnn, images)
    np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), want, **FP16)


@pytest.mark.parametrize("device", DEVICES)
def test_auto_model_process_is_shared_on_a_gpu_and_per_worker_on_cpu(models: ModelFiles, device: str) -> None:
    args = ["--model-name", "cnn", "--model-uri", str(models.cnn_ts), "--workers", "2",
            "--num-threads", "1", "--device", device]  # fmt: skip  # --model-process auto
    with serve_subprocess({}, args) as (_, url):
        health = httpx.get(f"{url}/health", timeout=10).json()
        images = _images(4, seed=13)
        got = httpx.post(f"{url}/v1/models/cnn:predict", json={"instances": images.tolist()}, timeout=30)
    names = [p["name"] for p in health["processes"]]
    assert ("model process" in names) is device.startswith("cuda"), health
    assert health["device"]["device"] == device, health
    np.testing.assert_allclose(
        np.array(got.json()["predictions"]), reference.cnn(models.cnn, images), **TOLERANCE[device]
    )


def test_a_device_index_that_does_not_exist_is_not_ready_with_the_reason(models: ModelFiles) -> None:
    missing = f"cuda:{torch.cuda.device_count()}"  # cuda:0 on a machine without a GPU
    with serve(model_uri=str(models.mlp_ts), device=missing) as running:
        health = running.http.get("/health")
    assert health.status_code == 503, health.text
    reason = health.json()["reason"]
    assert missing in reason, reason
    if HAS_CUDA:
        assert f"only {torch.cuda.device_count()} CUDA device(s) visible" in reason, reason
    else:
        assert "torch.cuda.is_available() is False" in reason, reason


def test_require_gpu_serves_where_there_is_one_and_refuses_where_not(models: ModelFiles) -> None:
    with serve(model_uri=str(models.mlp_ts), require_gpu=True) as running:
        health = running.http.get("/health")
        rows = np.random.default_rng(14).normal(size=(2, 4)).astype(np.float32)
        got = running.http.post("/v1/models/model:predict", json={"instances": rows.tolist()})
    if not HAS_CUDA:
        assert health.status_code == 503 and "a GPU is required" in health.json()["reason"], health.text
        assert got.status_code == 503, got.text
        return
    assert health.json()["ready"] is True and health.json()["device"]["device"] == BEST, health.text
    np.testing.assert_allclose(
        np.array(got.json()["predictions"]), reference.mlp(models.mlp, rows), **TOLERANCE[BEST]
    )
