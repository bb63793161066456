"""Several front-end processes (``--workers``), with a model per front end or one shared model
process: one readiness answer, the same predictions, metrics added up, a clean SIGTERM."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import reference
from server_support import ModelFiles, free_port, serve_subprocess, wait_until
from soaking import alive, process_tree


@pytest.mark.parametrize("mode", ["per-worker", "shared"])
def test_workers_serve_as_one(models: ModelFiles, mode: str) -> None:
    grpc_port = free_port()
    args = ["--model-name", "tiny", "--model-uri", str(models.cnn_ts), "--workers", "2",
            "--model-process", mode, "--num-threads", "1", "--device", "cpu", "--grpc-port", str(grpc_port)]  # fmt: skip
    images = np.random.default_rng(7).normal(size=(24, 1, 12, 12)).astype(np.float32)
    expected = reference.cnn(models.cnn, images)  # numpy, not the torch module the server serves
    with serve_subprocess({}, args) as (proc, url):
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["ready"] is True
        names = [p["name"] for p in health["processes"]]
        assert names[:2] == ["front end 1/2", "front end 2/2"]
        assert ("model process" in names) == (mode == "shared")
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(8)]  # many connections:
        try:  # the kernel spreads them over both front ends

            def call(i: int) -> np.ndarray:
                response = clients[i % 8].post(
                    "/v1/models/tiny:predict", json={"instances": images[i : i + 1].tolist()}
                )
                assert response.status_code == 200, response.text
                return np.asarray(response.json()["predictions"], dtype=np.float32)

            with ThreadPoolExecutor(8) as pool:
                got = np.concatenate(list(pool.map(call, range(len(images)))))
        finally:
            for client in clients:
                client.close()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        v2 = httpx.post(f"{url}/v2/models/tiny/infer", json={"inputs": [
            {"name": "input__0", "datatype": "FP32", "shape": [1, 1, 12, 12], "data": images[0].ravel().tolist()}
        ]}, timeout=10)  # fmt: skip
        assert v2.status_code == 200, v2.text
        bad = httpx.post(f"{url}/v1/models/tiny:predict", json={"instances": [[1, 2]]}, timeout=10)
        assert bad.status_code == 400 and "shape" in bad.json()["detail"]
        import tritonclient.grpc as triton  # every front end serves gRPC on the shared port too

        grpc_client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        tensor = triton.InferInput("input__0", [2, 1, 12, 12], "FP32")
        tensor.set_data_from_numpy(images[:2])
        np.testing.assert_allclose(
            grpc_client.infer("tiny", [tensor]).as_numpy("output__0"), expected[:2], rtol=1e-4, atol=1e-5
        )
        grpc_client.close()

        def counted() -> bool:  # every process's numbers in one answer, whichever front end answers
            text = httpx.get(f"{url}/metrics", timeout=10).text
            lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
            ok = 'modelship_requests_total{endpoint="/v1/models/{name}:predict",method="POST",status="200"}'
            grpc = 'modelship_requests_total{endpoint="/inference.GRPCInferenceService/ModelInfer",method="GRPC",status="200"}'
            return (
                float(lines.get(ok, 0)) == len(images)
                and float(lines.get(grpc, 0)) == 1
                and float(lines["modelship_processes"]) == (3 if mode == "shared" else 2)
                and float(lines["modelship_batch_size_sum"]) >= len(images) + 3
            )

        wait_until(counted, timeout=20, what="metrics added up over the processes")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log = proc.stdout.read().decode() if proc.stdout else ""
        assert "Traceback" not in log, log


@pytest.mark.parametrize("mode", ["per-worker", "shared"])
def test_children_do_not_outlive_a_killed_supervisor(models: ModelFiles, mode: str, tmp_path: Path) -> None:
    """Found as orphans of this suite (its cleanup SIGKILLs the server): front ends and the
    model process went on holding the port and a model each, with nobody to stop them; and
    the supervisor's run directory (its sockets) stayed in /tmp, five more per server tier."""
    args = ["--model-name", "tiny", "--model-uri", str(models.mlp_ts), "--workers", "2", "--model-process", mode,
            "--num-threads", "1", "--device", "cpu"]  # fmt: skip
    with serve_subprocess({"TMPDIR": str(tmp_path)}, args) as (proc, _url):
        assert [p.name[:10] for p in tmp_path.iterdir()] == ["modelship-"]
        children = [p for p in process_tree(proc.pid)[1:] if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(children) == (3 if mode == "shared" else 2), children
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        try:
            wait_until(lambda: not any(map(alive, children)), timeout=30, what="the orphaned children to exit")
        finally:  # a failure must not leave them running
            for pid in filter(alive, children):
                os.kill(pid, signal.SIGKILL)
        assert not list(tmp_path.iterdir()), "the run directory outlived the processes that used it"
