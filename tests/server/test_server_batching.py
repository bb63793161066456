"""Dynamic batching, overload, timeouts, failure isolation, and the SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import reference
from server_support import ModelFiles, Running, free_port, serve, serve_subprocess, wait_until

from modelship_server.batching import Batcher


def _post_many(
    running: Running, bodies: list[dict], path: str = "/v1/models/m:predict"
) -> list[httpx.Response]:
    clients = [httpx.Client(base_url=running.url, timeout=30) for _ in bodies]  # built up front: slow
    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            return list(
                pool.map(lambda pair: pair[0].post(path, json=pair[1]), zip(clients, bodies, strict=True))
            )
    finally:
        for client in clients:
            client.close()


def test_batched_results_equal_unbatched(models: ModelFiles) -> None:
    rng = np.random.default_rng(3)
    images = [rng.normal(size=(1 + i % 3, 1, 12, 12)).astype(np.float32) for i in range(12)]
    with serve(
        model_name="m",
        model_uri=str(models.handlers / "test_handlers.py"),
        model_format="handler",
        model_handler="test_handlers:SlowCNN",
        max_batch_size=16,
        max_latency_ms=20,
        device="cpu",  # the reference is float64 numpy; CUDA convolutions may use TF32
    ) as running:
        responses = _post_many(running, [{"instances": img.tolist()} for img in images])
        batches = running.dataplane.model.predict_fn.__self__.batches
        metrics = running.http.get("/metrics").text
    for img, response in zip(images, responses, strict=True):
        assert response.status_code == 200, response.text
        alone = reference.cnn(models.cnn, img)  # this request alone, computed without torch
        np.testing.assert_allclose(np.array(response.json()["predictions"]), alone, rtol=1e-4, atol=1e-5)
    assert max(batches) > 3, f"requests were never batched together: {batches}"
    assert sum(batches) >= sum(len(img) for img in images)
    assert "modelship_batch_size_count" in metrics


def test_overload_is_503_with_retry_after(models: ModelFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MS_TEST_DELAY_S", "0.3")
    with serve(
        model_name="m",
        model_uri=str(models.handlers),
        model_format="handler",
        model_handler="test_handlers:Doubler",
        max_batch_size=1,
        max_queue=2,
        retry_after_s=3,
    ) as running:
        responses = _post_many(running, [{"instances": [[i, 0, 0]]} for i in range(10)])
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 503}, codes
    for response in responses:
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "3"
            assert "queue is full" in response.json()["detail"]
        else:
            (row,) = response.json()["predictions"]
            assert row[1:] == [0, 0] and row[0] % 2 == 0


def test_request_timeout_is_504(models: ModelFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MS_TEST_DELAY_S", "0.6")
    with serve(
        model_name="m",
        model_uri=str(models.handlers),
        model_format="handler",
        model_handler="test_handlers:Doubler",
        request_timeout_s=0.2,
        warmup=False,
    ) as running:
        response = running.http.post("/v1/models/m:predict", json={"instances": [[1, 2, 3]]})
    assert response.status_code == 504
    assert "0.2s" in response.json()["detail"]


def test_failing_batch_fails_only_its_own_request(
    models: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MS_TEST_DELAY_S", "0.1")
    with serve(
        model_name="m",
        model_uri=str(models.handlers),
        model_format="handler",
        model_handler="test_handlers:Doubler",
        max_batch_size=32,
        max_latency_ms=50,
    ) as running:
        bodies = [{"instances": [[i, 1, 1]]} for i in range(8)] + [{"instances": [[-999, 1, 1]]}]
        responses = _post_many(running, bodies)
    *good, poisoned = responses
    assert poisoned.status_code == 500 and "poisoned row" in poisoned.json()["detail"]
    for i, response in enumerate(good):
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == [[2 * i, 2, 2]]


def test_sigterm_drains_in_flight_and_queued_requests(models: ModelFiles) -> None:
    env = {"MS_TEST_DELAY_S": "1.0", "MODELSHIP_MODEL_NAME": "m"}  # 5 calls outlast the 3 s delay
    args = [
        "--model-uri",
        str(models.handlers),
        "--model-format",
        "handler",
        "--model-handler",
        "test_handlers:Doubler",
        "--max-batch-size",
        "1",
        "--shutdown-delay-s",
        "3",
        "--graceful-timeout-s",
        "20",
    ]
    with serve_subprocess(env, args) as (proc, url):
        count = 5
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(count)]  # built up front: slow
        with ThreadPoolExecutor(count) as pool:

            def call(i: int) -> httpx.Response:
                return clients[i].post("/v1/models/m:predict", json={"instances": [[i, 0, 0]]})

            futures = [pool.submit(call, i) for i in range(count)]

            def all_in() -> bool:  # every caller is inside the server (in flight or queued)
                text = httpx.get(f"{url}/metrics", timeout=5).text
                line = next(ln for ln in text.splitlines() if ln.startswith("modelship_requests_in_flight "))
                return float(line.split()[1]) >= count + 1  # + this scrape

            wait_until(all_in, timeout=60, what="all requests in flight")
            proc.send_signal(signal.SIGTERM)
            health = httpx.get(f"{url}/health", timeout=5)
            assert health.status_code == 503
            assert "shutting down" in health.json()["reason"]
            results = [f.result(timeout=30) for f in futures]
        for client in clients:
            client.close()
        assert [r.status_code for r in results] == [200] * count
        assert [r.json()["predictions"] for r in results] == [[[2 * i, 0, 0]] for i in range(count)]
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.returncode in (0, -signal.SIGTERM), proc.returncode
        log = proc.stdout.read().decode() if proc.stdout else ""
        assert "draining" in log and "Traceback" not in log, log


def test_sigterm_while_loading_exits_at_once(models: ModelFiles) -> None:
    """Never ready = never routed to: no shutdown delay, and the load thread does not hold the
    exit (a rollback of a slow model must not keep its pod for the whole grace period)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_")}
    env.update({"MS_TEST_LOAD_S": "120", "MODELSHIP_MODEL_NAME": "m"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelship_server", "--host", "127.0.0.1", "--port", str(port),
         "--model-uri", str(models.handlers), "--model-format", "handler", "--model-handler",
         "test_handlers:SlowLoad", "--shutdown-delay-s", "10", "--graceful-timeout-s", "20"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        def loading() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()["status"] == "loading"
            except httpx.HTTPError:
                return False

        wait_until(loading, timeout=60, what="the server answering while it loads")
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    log = proc.stdout.read().decode() if proc.stdout else ""
    assert took < 10, f"exit took {took:.1f}s (the 10 s shutdown delay or the 120 s load held it):\n{log}"
    assert proc.returncode in (0, -signal.SIGTERM), (proc.returncode, log)


def test_sigterm_during_startup_ends_the_server_as_pid_1(models: ModelFiles) -> None:
    """In a pod the server is PID 1, and the kernel drops signals PID 1 has no handler for: a
    SIGTERM that arrives while torch is still importing must still end it (the kubelet sends
    it once). `unshare --pid` makes the server PID 1 of its own namespace, as in a pod."""
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is needed to run the server as PID 1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_")}
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "modelship_server",
         "--host", "127.0.0.1", "--port", str(free_port()), "--model-uri", str(models.mlp_ts)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(0.5)  # inside `import torch` (seconds)
        child = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert child, "the server did not start under unshare"
        os.kill(int(child[0]), signal.SIGTERM)
        code = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert code == 128 + signal.SIGTERM, (code, proc.stdout.read().decode() if proc.stdout else "")


def test_lone_caller_does_not_wait_for_max_latency(models: ModelFiles) -> None:
    with serve(model_name="m", model_uri=str(models.mlp_ts), max_latency_ms=5000) as running:
        for _ in range(5):
            started = time.perf_counter()
            response = running.http.post("/v1/models/m:predict", json={"instances": [[1, 2, 3, 4]]})
            assert response.status_code == 200
            assert time.perf_counter() - started < 2.5, "a lone request waited for companions"


class _CountingModel:
    """A model cheap enough for the loop: it records the rows of every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, arrays: Any) -> list[np.ndarray]:
        self.calls.append(int(arrays[0].shape[0]))
        return [arrays[0] * 2]


async def _lone_then_burst(pending: Any, burst: int) -> list[int]:
    model = _CountingModel()
    batcher = Batcher(model, max_batch_size=32, max_latency_s=0.005, max_queue=4096, run_on_loop="always",
                      pending=pending)  # fmt: skip
    batcher.start()
    one = np.ones((1, 4), dtype=np.float32)
    for _ in range(5):  # a quiet spell: each a batch of one, run by its own caller
        np.testing.assert_array_equal((await batcher.submit([one], 5))[0], one * 2)
    assert model.calls == [1] * 5
    model.calls.clear()
    answers = await asyncio.gather(*(batcher.submit([one * i], 5) for i in range(burst)))
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer[0], one * i * 2)
    await batcher.close()
    return model.calls


def test_a_burst_after_a_quiet_spell_is_batched_with_the_servers_count() -> None:
    """Found by the benchmark: every direct call is a batch of one, so after a c=1 phase a c=32
    load ran one request per model call for good (5.6k requests/s against 14k batched). With
    the server's count of started requests the first of a burst already queues."""
    calls = asyncio.run(_lone_then_burst(lambda: 32, 32))
    assert sum(calls) == 32 and max(calls) > 1 and len(calls) < 32, calls


def test_a_burst_the_server_cannot_count_still_ends_up_batched() -> None:
    """Without a count (gRPC calls are not uvicorn's tasks) one direct call in a few dozen goes
    through the queue, so a burst stops running one request per call within that many."""
    calls = asyncio.run(_lone_then_burst(None, 200))
    assert sum(calls) == 200 and max(calls) > 1, calls
    assert len(calls) < 100, f"{len(calls)} model calls for 200 concurrent requests"


def test_the_model_leaves_the_loop_only_for_calls_worth_two_hand_offs() -> None:
    """Calls and hand-offs of a tiny model overlap (20-150 µs both): with one line between them
    the c=1 load flipped to the thread and back every few hundred requests, each thread spell a
    millisecond of tail. One interrupted call must not flip it either."""
    batcher = Batcher(_CountingModel(), max_batch_size=32, max_latency_s=0.005, max_queue=16)
    for _ in range(8):  # the probe: threaded calls of 40 µs, hand-offs of 100 µs
        batcher._measured(1, 40e-6, 100e-6)
    assert batcher.on_loop
    for _ in range(50):
        batcher._measured(1, 150e-6, None)  # 1.5 hand-offs: not worth leaving for
    assert batcher.on_loop
    batcher._measured(1, 0.05, None)  # one call the kernel interrupted
    assert batcher.on_loop
    for _ in range(50):
        batcher._measured(1, 300e-6, None)  # three hand-offs: the thread it is
    assert not batcher.on_loop
    for _ in range(50):
        batcher._measured(1, 150e-6, 100e-6)  # in the thread, back below one hand-off ...
    assert not batcher.on_loop
    for _ in range(50):
        batcher._measured(1, 60e-6, 100e-6)  # ... only now
    assert batcher.on_loop


def test_with_one_cpu_a_cpu_model_stays_on_the_loop_until_its_calls_grow_long() -> None:
    """A thread overlaps nothing on one CPU: a batch of 32 rows of the tiny MLP (~150 µs, two
    hand-offs) still runs on the loop there; a call of several milliseconds does not."""
    batcher = Batcher(_CountingModel(), max_batch_size=32, max_latency_s=0.005, max_queue=16, one_cpu=True)
    for _ in range(8):
        batcher._measured(32, 150e-6, 50e-6)
    assert batcher.on_loop
    for _ in range(50):
        batcher._measured(32, 0.008, None)
    assert not batcher.on_loop
