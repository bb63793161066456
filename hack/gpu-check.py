#!/usr/bin/env python3
"""One short check of the server's CUDA path, for a machine with an NVIDIA GPU.

    python3 hack/gpu-check.py                 # device=cuda: fails loudly without a GPU
    python3 hack/gpu-check.py --device cpu    # dry run of the same steps on CPU
    python3 hack/gpu-check.py --json out.json # also write the summary to a file

Needs torch, numpy, httpx and the server's deps (fastapi, uvicorn, pydantic-settings,
prometheus-client; orjson optional); imports the server from ./server in this checkout.
Builds a tiny MLP and CNN (TorchScript and torch.export) in a temp dir, serves each with
the real app under uvicorn on 127.0.0.1 (fp32, and fp16 on GPU), and checks: /health
reports the device, GPU name and memory; v1 and v2 predictions match CPU eager results
(tolerance per precision); /metrics carries the GPU series; require_gpu is satisfied.
Then a quick batched throughput comparison, CPU vs the device, on the CNN. Prints one
compact JSON summary; exits 1 on any mismatch. Runs in well under 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "server"))
warnings.simplefilter("ignore", FutureWarning)

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402

from modelship_server.app import create_app  # noqa: E402
from modelship_server.settings import Settings  # noqa: E402

FAILURES: list[str] = []


def check(condition: bool, what: str) -> bool:
    if not condition:
        FAILURES.append(what)
        print(f"FAIL: {what}", file=sys.stderr, flush=True)
    return condition


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2),
        )
        self.head = torch.nn.Linear(32 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def build(folder: Path) -> dict[str, Any]:
    torch.manual_seed(7)
    mlp, cnn = MLP().eval(), CNN().eval()

    def meta(shape: list[int]) -> dict[str, str]:
        spec = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": shape}]}
        return {"modelship.json": json.dumps(spec)}

    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        torch.jit.save(
            torch.jit.trace(cnn, torch.zeros(2, 3, 32, 32)),
            str(folder / "cnn.pt"),
            _extra_files=meta([-1, 3, 32, 32]),
        )
        torch.jit.save(torch.jit.script(mlp), str(folder / "mlp.pt"), _extra_files=meta([-1, 16]))
        torch.export.save(
            torch.export.export(mlp, (torch.zeros(2, 16),), dynamic_shapes={"x": {0: batch}}),
            str(folder / "mlp.pt2"),
        )
        torch.export.save(
            torch.export.export(cnn, (torch.zeros(2, 3, 32, 32),), dynamic_shapes={"x": {0: batch}}),
            str(folder / "cnn.pt2"),
        )
    return {"mlp": mlp, "cnn": cnn}


@contextlib.contextmanager
def serve(**settings: Any) -> Iterator[tuple[str, Any]]:
    app = create_app(Settings(host="127.0.0.1", **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise SystemExit("uvicorn did not start")
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    while app.state.dataplane.state == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield url, app
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def serve_and_compare(
    device: str, name: str, fmt: str, half: bool, refs: dict[str, Any], folder: Path
) -> dict[str, Any]:
    kind = "cnn" if name.startswith("cnn") else "mlp"
    module = refs[kind]
    on_gpu = device.startswith("cuda")
    rows = (
        np.random.default_rng(11).normal(size=(6, 3, 32, 32) if kind == "cnn" else (6, 16)).astype(np.float32)
    )
    with torch.no_grad():
        want = module(torch.from_numpy(rows)).numpy()  # CPU float32 eager reference
    tol = 3e-2 if (half and on_gpu) else 2e-4
    label = f"{name}/{'fp16' if half else 'fp32'}"
    result: dict[str, Any] = {"case": label}
    with (
        serve(
            model_name="m",
            model_uri=str(folder / name),
            model_format=fmt,
            device=device,
            half_precision=half,
            require_gpu=on_gpu,
            max_batch_size=64,
        ) as (url, _app),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        health = client.get("/health")
        body = health.json()
        check(health.status_code == 200, f"{label}: /health {health.status_code} {body.get('reason')}")
        dev = body["device"]
        result["device"] = dev["device"]
        result["dtype"] = dev["dtype"]
        if on_gpu:
            check(dev["device"].startswith("cuda"), f"{label}: device {dev['device']} is not cuda")
            check(bool(dev.get("gpu_name")), f"{label}: no gpu_name in /health")
            check(dev.get("gpu_memory_total_bytes", 0) > 0, f"{label}: no GPU memory in /health")
            check(dev["dtype"] == ("float16" if half else "float32"), f"{label}: dtype {dev['dtype']}")
            result["gpu_name"] = dev.get("gpu_name")
            result["gpu_memory_allocated_bytes"] = dev.get("gpu_memory_allocated_bytes")
        v1 = client.post("/v1/models/m:predict", json={"instances": rows.tolist()})
        check(v1.status_code == 200, f"{label}: v1 {v1.status_code} {v1.text[:200]}")
        got = np.asarray(v1.json().get("predictions", []), dtype=np.float32)
        err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        check(err <= tol * max(1.0, float(np.abs(want).max())), f"{label}: v1 max error {err} > {tol}")
        meta = client.get("/v2/models/m").json()
        v2 = client.post(
            "/v2/models/m/infer",
            json={
                "inputs": [
                    {
                        "name": meta["inputs"][0]["name"],
                        "shape": list(rows.shape),
                        "datatype": "FP32",
                        "data": rows.reshape(-1).tolist(),
                    }
                ]
            },
        )
        out = v2.json()["outputs"][0] if v2.status_code == 200 else {"data": [], "shape": [0]}
        got2 = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        err2 = float(np.abs(got2 - want).max()) if got2.shape == want.shape else float("inf")
        check(out.get("datatype") == "FP32", f"{label}: v2 output datatype {out.get('datatype')}")
        check(err2 <= tol * max(1.0, float(np.abs(want).max())), f"{label}: v2 max error {err2} > {tol}")
        result["max_abs_error"] = round(max(err, err2), 6)
        metrics = client.get("/metrics").text
        if on_gpu:
            check("modelship_gpu_memory_total_bytes{" in metrics, f"{label}: no GPU memory metric")
            check(
                f'gpu_name="{dev.get("gpu_name")}"' in metrics, f"{label}: no gpu_name label in device_info"
            )
    return result


async def _blast(
    url: str, path: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float
) -> tuple[int, int, list[float]]:
    latencies: list[float] = []
    done = failed = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal done, failed
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                response = await client.post(path, content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                if response.status_code == 200:
                    done += 1
                else:
                    failed += 1
                    return

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, failed, latencies


def _load_process(args: tuple[str, str, bytes, dict[str, str], int, float]) -> tuple[int, int, list[float]]:
    return asyncio.run(_blast(*args))


def _load(url: str, path: str, body: bytes, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    """c=32 from 4 load processes × 8 connections (one Python client tops out near 1k req/s)."""
    import multiprocessing

    procs = 4
    with multiprocessing.get_context("fork").Pool(procs) as pool:  # children never touch CUDA
        t0 = time.perf_counter()
        parts = pool.map(_load_process, [(url, path, body, headers, 32 // procs, seconds)] * procs)
        elapsed = time.perf_counter() - t0
    done = sum(p[0] for p in parts)
    failed = sum(p[1] for p in parts)
    latencies = sorted(x for p in parts for x in p[2])
    check(failed == 0, f"throughput: {failed} failed requests on {path}")
    p50 = round(1000 * latencies[len(latencies) // 2], 2) if latencies else None
    return {"requests_per_s": round(done / elapsed), "p50_ms": p50}


@contextlib.contextmanager
def server_process(model: Path, device: str) -> Iterator[str]:
    """The server as its own process, as in a pod: the load generator must not share its GIL."""
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "server"), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "modelship_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-name",
        "m",
        "--model-uri",
        str(model),
        "--device",
        device,
        "--max-batch-size",
        "512",
        "--max-latency-ms",
        "5",
        "--max-queue",
        "4096",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server process exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError("server process not ready after 90s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def throughput(device: str, folder: Path, seconds: float) -> dict[str, Any]:
    """c=32 over HTTP against a separate server process: v1 JSON (4 images a request) and v2
    binary tensors (16 images a request, the way tritonclient sends them); plus the model alone
    at batch 256 (in this process)."""
    rows = np.random.default_rng(5).normal(size=(4, 3, 32, 32)).astype(np.float32)
    json_body = json.dumps({"instances": rows.tolist()}).encode()
    images = np.random.default_rng(6).normal(size=(16, 3, 32, 32)).astype(np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input__0",
                    "shape": list(images.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": images.nbytes},
                }
            ],
            "outputs": [{"name": "output__0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    binary_headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    result: dict[str, Any] = {"device": device}
    with serve(model_name="m", model_uri=str(folder / "cnn.pt"), device=device, max_batch_size=256) as (
        _,
        app,
    ):
        model = app.state.dataplane.model
        big = np.random.default_rng(7).normal(size=(256, 3, 32, 32)).astype(np.float32)
        model.run([big])
        t0 = time.perf_counter()
        calls = 0
        while time.perf_counter() - t0 < 1.0:
            model.run([big])
            calls += 1
        result["direct_batch256_rows_per_s"] = round(calls * 256 / (time.perf_counter() - t0))
    with server_process(folder / "cnn.pt", device) as url:
        for label, path, body, headers, per_request in (
            ("v1_json_4", "/v1/models/m:predict", json_body, {"Content-Type": "application/json"}, 4),
            ("v2_binary_16", "/v2/models/m/infer", header + images.tobytes(), binary_headers, 16),
        ):
            stats = _load(url, path, body, headers, seconds / 2)
            result[f"{label}_rows_per_s"] = stats["requests_per_s"] * per_request
            result[f"{label}_p50_ms"] = stats["p50_ms"]
        metrics = httpx.get(url + "/metrics", timeout=10).text
        for line in metrics.splitlines():
            if line.startswith(("modelship_batch_size_sum", "modelship_batch_size_count")):
                result[line.split()[0]] = float(line.split()[1])
    if result.get("modelship_batch_size_count"):
        result["mean_batch_rows"] = round(
            result["modelship_batch_size_sum"] / result["modelship_batch_size_count"], 1
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (dry run)")
    parser.add_argument("--seconds", type=float, default=4.0, help="load per throughput run")
    parser.add_argument("--json", help="also write the summary here")
    args = parser.parse_args()
    started = time.perf_counter()
    summary: dict[str, Any] = {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "device_requested": args.device,
        "cuda_available": torch.cuda.is_available(),
    }
    if args.device.startswith("cuda"):
        if not check(torch.cuda.is_available(), "torch.cuda.is_available() is False"):
            print(json.dumps({**summary, "ok": False, "failures": FAILURES}))
            return 1
        summary["gpu"] = torch.cuda.get_device_name(0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            refs = build(folder)
            cases = [
                ("cnn.pt", "torchscript", False),
                ("cnn.pt", "torchscript", True),
                ("cnn.pt2", "torch-export", False),
                ("cnn.pt2", "torch-export", True),
                ("mlp.pt", "torchscript", True),
                ("mlp.pt2", "torch-export", False),
            ]
            summary["cases"] = [serve_and_compare(args.device, n, f, h, refs, folder) for n, f, h in cases]
            summary["throughput_c32"] = [throughput("cpu", folder, args.seconds)]
            if args.device != "cpu":
                summary["throughput_c32"].append(throughput(args.device, folder, args.seconds))
    except Exception as exc:  # noqa: BLE001 - a crash is a failure too, with its traceback on stderr
        traceback.print_exc()
        FAILURES.append(f"crashed: {type(exc).__name__}: {exc}")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["cpu_threads"] = torch.get_num_threads()
    summary["ok"] = not FAILURES
    summary["failures"] = FAILURES
    text = json.dumps(summary, separators=(",", ":"))
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0 if not FAILURES else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
