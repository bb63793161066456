"""The server at saturation with a mixed good/bad stream, watched for leaks (issue 13, item 4).

A load generator (asyncio, raw keep-alive sockets, ``concurrency`` callers that never wait
between requests) sends a seeded mix: good v1/v2 inferences (JSON and binary), bad ones (shape,
datatype, JSON, unknown model, NaN), probes and scrapes, connections closed by the client
after a request, bodies abandoned half-way, declared bodies over the limit; a thread adds gRPC
calls, good and bad. Meanwhile the server's processes are sampled from /proc: resident memory,
open file descriptors, threads; and each window's client-side latencies give p50/p99.

Phases: warm-up under load, then idle (every client connection closed: the baseline of memory
and descriptors), then the measured load, then idle again. A leak shows as memory or
descriptors that the idle after the load holds beyond the idle before it.

``test_server_soak.py`` runs it short (and proves a leaking model fails it);
``bench/server/soak.py`` runs it ten minutes and more and draws the curves.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import hostile_grpc


@dataclass
class Sample:
    at_s: float
    phase: str
    rss_bytes: int
    fds: int
    threads: int
    requests: int
    """Answers received so far (all phases)."""
    rps: float
    p50_ms: float | None
    p99_ms: float | None


@dataclass
class Soak:
    seed: int
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    grpc_codes: collections.Counter[str] = field(default_factory=collections.Counter)
    idle: dict[str, dict[str, int]] = field(default_factory=dict)
    """Resident bytes and descriptors at rest: "before" (after warm-up) and "after" the load."""
    measured_requests: int = 0

    def growth(self) -> dict[str, float]:
        before, after = self.idle["before"], self.idle["after"]
        return {
            "rss_bytes": after["rss_bytes"] - before["rss_bytes"],
            "rss_percent": 100.0 * (after["rss_bytes"] - before["rss_bytes"]) / before["rss_bytes"],
            "fds": after["fds"] - before["fds"],
            "threads": after["threads"] - before["threads"],
            "bytes_per_request": (after["rss_bytes"] - before["rss_bytes"]) / max(1, self.measured_requests),
        }

    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def as_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "concurrency": self.concurrency,
            "measured_requests": self.measured_requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "grpc_codes": dict(sorted(self.grpc_codes.items())),
            "idle": self.idle,
            "growth": self.growth(),
            "samples": [asdict(sample) for sample in self.samples],
        }


# -- the server's processes -----------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor's front ends and model process)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            queue += [int(child) for child in task.read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def resources(pid: int) -> dict[str, int]:
    """Resident bytes, open descriptors and threads of ``pid``'s process tree, from /proc."""
    total = {"rss_bytes": 0, "fds": 0, "threads": 0}
    for each in process_tree(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
            total["fds"] += len(os.listdir(f"/proc/{each}/fd"))
        except FileNotFoundError:  # gone between the listing and the read
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        total["rss_bytes"] += int(fields["VmRSS"].split()[0]) * 1024
        total["threads"] += int(fields["Threads"])
    return total


# -- the request mix ----------------------------------------------------------------------------


def _http(method: str, path: str, body: bytes = b"", headers: str = "", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return f"{method} {path} HTTP/1.1\r\nhost: soak\r\ncontent-length: {size}\r\n{headers}\r\n".encode() + body


def request_mix(name: str, rows: int, features: int) -> list[tuple[str, bytes, int]]:
    """(kind, request bytes, weight). ``abandon`` and ``close`` also end their connection."""
    data = [round(0.01 * i, 2) for i in range(rows * features)]
    v1 = json.dumps({"instances": [data[i * features : (i + 1) * features] for i in range(rows)]}).encode()
    tensor = {"name": "input__0", "datatype": "FP32", "shape": [rows, features], "data": data}
    v2 = json.dumps({"inputs": [tensor]}).encode()
    header = json.dumps({"inputs": [{**{k: v for k, v in tensor.items() if k != "data"},
                                     "parameters": {"binary_data_size": 4 * rows * features}}],
                         "parameters": {"binary_data_output": True}}).encode()  # fmt: skip
    import struct

    binary = header + struct.pack(f"<{rows * features}f", *data)
    bad_shape = json.dumps({"inputs": [{**tensor, "shape": [rows, features + 1]}]}).encode()
    bad_type = json.dumps({"inputs": [{**tensor, "datatype": "INT64"}]}).encode()
    return [
        ("v1", _http("POST", f"/v1/models/{name}:predict", v1), 30),
        ("v2", _http("POST", f"/v2/models/{name}/infer", v2), 20),
        ("v2 binary", _http("POST", f"/v2/models/{name}/infer", binary,
                            f"inference-header-content-length: {len(header)}\r\n"), 15),  # fmt: skip
        ("v2 versioned", _http("POST", f"/v2/models/{name}/versions/1/infer", v2), 5),
        ("bad shape", _http("POST", f"/v2/models/{name}/infer", bad_shape), 6),
        ("bad datatype", _http("POST", f"/v2/models/{name}/infer", bad_type), 4),
        ("bad JSON", _http("POST", f"/v1/models/{name}:predict", v1[:-3]), 4),
        ("NaN", _http("POST", f"/v1/models/{name}:predict", b'{"instances": [[NaN]]}'), 2),
        ("unknown model", _http("POST", "/v2/models/nope/infer", v2), 3),
        ("unknown path", _http("GET", "/nope"), 2),
        ("probe", _http("GET", "/health"), 4),
        ("metadata", _http("GET", f"/v2/models/{name}"), 2),
        ("scrape", _http("GET", "/metrics"), 1),
        ("close", _http("POST", f"/v1/models/{name}:predict", v1, "connection: close\r\n"), 1),
        ("abandon", _http("POST", f"/v1/models/{name}:predict", v1[: len(v1) // 2], length=len(v1)), 1),
        ("over the limit", _http("POST", f"/v1/models/{name}:predict", b"{}", length=10**12), 1),
    ]


# -- the load ----------------------------------------------------------------------------------


class Load:
    """``concurrency`` callers on keep-alive connections, and a gRPC thread, until stopped."""

    def __init__(self, address: tuple[str, int], grpc_address: str | None, name: str,
                 mix: list[tuple[str, bytes, int]], seed: int, concurrency: int) -> None:  # fmt: skip
        self.address = address
        self.name = name
        self.grpc_address = grpc_address
        self.kinds = [(kind, raw) for kind, raw, _ in mix]
        self.weights = [weight for _, _, weight in mix]
        self.seed = seed
        self.concurrency = concurrency
        self.statuses: collections.Counter[int] = collections.Counter()
        self.grpc_codes: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []
        self.answers = 0
        self.done = False

    async def run(self, seconds: float, answers: int | None = None) -> None:
        """Load for ``seconds``, or until ``answers`` more answers came if that is sooner; every
        connection is closed when it returns."""
        self.done = False
        goal = None if answers is None else self.answers + answers
        stop = asyncio.get_running_loop().time() + seconds
        grpc_thread = threading.Thread(target=self._grpc, args=(time.monotonic() + seconds,), daemon=True)
        if self.grpc_address is not None:
            grpc_thread.start()
        await asyncio.gather(*(self._caller(index, stop, goal) for index in range(self.concurrency)))
        self.done = True
        if grpc_thread.is_alive():
            grpc_thread.join()

    async def _caller(self, index: int, stop: float, goal: int | None) -> None:
        rng = random.Random(f"{self.seed}-{index}-{self.answers}")
        loop = asyncio.get_running_loop()
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while loop.time() < stop and (goal is None or self.answers < goal):
                kind, raw = rng.choices(self.kinds, self.weights)[0]
                if writer is None:
                    reader, writer = await asyncio.open_connection(*self.address)
                started = time.perf_counter()
                writer.write(raw)
                if kind == "abandon":  # half a body, then hang up
                    await writer.drain()
                    writer.close()
                    reader = writer = None
                    continue
                status, closed = await _answer(reader)  # type: ignore[arg-type]
                self.latencies.append(time.perf_counter() - started)
                self.statuses[status] += 1
                self.answers += 1
                if closed:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    def _grpc(self, until: float) -> None:
        messages = hostile_grpc.messages()
        good = messages["ModelInferRequest"](model_name=self.name)
        tensor = good.inputs.add(name="input__0", datatype="FP32", shape=[1, 4])
        tensor.contents.fp32_contents.extend([0.1, 0.2, 0.3, 0.4])
        bad = messages["ModelInferRequest"]()
        bad.CopyFrom(good)
        bad.inputs[0].shape[:] = [1, 5]
        payloads = [good.SerializeToString()] * 6 + [bad.SerializeToString(), b"\xff\xff"]
        rng = random.Random(f"{self.seed}-grpc-{until}")
        with grpc.insecure_channel(self.grpc_address) as channel:  # type: ignore[arg-type]
            while time.monotonic() < until and not self.done:
                code, _ = hostile_grpc.call(channel, "ModelInfer", rng.choice(payloads), timeout_s=10)
                self.grpc_codes[code.name] += 1
                time.sleep(0.01)

    def window(self) -> tuple[int, float | None, float | None]:
        """(answers, p50 ms, p99 ms) since the last call."""
        latencies, self.latencies = self.latencies, []
        if not latencies:
            return 0, None, None
        latencies.sort()
        return len(latencies), 1000 * latencies[len(latencies) // 2], 1000 * latencies[int(0.99 * (len(latencies) - 1))]


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One response's status, and whether the server closes the connection after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line))
    await reader.readexactly(int(headers.get("content-length", 0)))
    return int(lines[0].split()[1]), headers.get("connection", "").lower() == "close"


# -- the soak ---------------------------------------------------------------------------------


async def soak(url: str, grpc_address: str | None, pid: int, *, seed: int, warmup_s: float, seconds: float,
               sample_s: float, concurrency: int, answers: int | None = None,
               log: Callable[[str], None] = print) -> Soak:  # fmt: skip
    """Warm up, rest, load for ``seconds`` (or ``answers`` answers, if sooner), rest; sample the
    server all along."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    name = await _model_name(url)
    load = Load((host, int(port)), grpc_address, name, request_mix(name, rows=2, features=4), seed, concurrency)
    result = Soak(seed, concurrency)
    started = time.monotonic()
    phase = ["warm-up"]

    async def sampler() -> None:
        while True:
            await asyncio.sleep(sample_s)
            answers, p50, p99 = load.window()
            used = resources(pid)
            result.samples.append(Sample(round(time.monotonic() - started, 2), phase[0], used["rss_bytes"],
                                         used["fds"], used["threads"], load.answers, round(answers / sample_s, 1),
                                         p50 and round(p50, 2), p99 and round(p99, 2)))  # fmt: skip

    async def rest(label: str) -> None:
        phase[0] = "idle"
        await asyncio.sleep(max(1.0, 2 * sample_s))  # the server sees every hang-up, finishes its work
        result.idle[label] = resources(pid)
        log(f"  idle {label}: {result.idle[label]}")

    sampling = asyncio.get_running_loop().create_task(sampler())
    try:
        log(f"soak seed {seed}: warm-up {warmup_s:g}s at c={concurrency}")
        await load.run(warmup_s)
        await rest("before")
        phase[0] = "load"
        first = load.answers
        log(f"  load {seconds:g}s")
        await load.run(seconds, answers)
        result.measured_requests = load.answers - first
        await rest("after")
    finally:
        sampling.cancel()
    result.statuses, result.grpc_codes = load.statuses, load.grpc_codes
    return result


async def _model_name(url: str) -> str:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(_http("GET", "/v1/models"))
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(":")[1] for line in head.decode().split("\r\n") if line.lower().startswith("content-length")))
    body = json.loads(await reader.readexactly(length))
    writer.close()
    return str(body["models"][0])


def p99_drift(result: Soak) -> float | None:
    """Median p99 of the last fifth of the load windows over that of the first fifth."""
    p99s = [s.p99_ms for s in result.samples if s.phase == "load" and s.p99_ms is not None]
    if len(p99s) < 10:
        return None
    fifth = max(2, len(p99s) // 5)
    return statistics.median(p99s[-fifth:]) / statistics.median(p99s[:fifth])


def leaks(result: Soak, rss_bytes: float, fds: int) -> list[str]:
    """What the idle after the load holds beyond the idle before it, past the tolerances."""
    growth = result.growth()
    found = []
    if growth["rss_bytes"] > rss_bytes:
        found.append(f"resident memory grew {growth['rss_bytes'] / 2**20:.1f} MiB over {result.measured_requests} "
                     f"requests ({growth['bytes_per_request']:.0f} B each; tolerance {rss_bytes / 2**20:.1f} MiB)")  # fmt: skip
    if growth["fds"] > fds:
        found.append(f"{growth['fds']} more open file descriptors at rest (tolerance {fds})")
    return found
