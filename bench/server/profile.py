#!/usr/bin/env python3
"""Where a server's CPU time goes per request: py-spy samples under wrk load, grouped by layer.

    .venv/bin/python bench/server/profile.py --concurrency 8 --seconds 8   # modelship, tiny MLP
    .venv/bin/python bench/server/profile.py --target floor

The server is pinned to one core and wrk to another (as in run.py). py-spy (in the benchmark's
tools venv) samples every non-idle thread; each sample is charged to the innermost frame that
belongs to a known layer (see LAYERS). CPU time per request comes from /proc (the server's
user+system time over the wrk run, divided by the requests wrk completed), so a layer's share
times that is its cost in microseconds per request. Garbage-collector pauses are timed inside
the server by profile_hook/sitecustomize.py (gc.callbacks). Not a test; numbers are noisy on a
shared machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402  (the benchmark's server/wrk helpers)
import venvs  # noqa: E402

LAYERS: list[tuple[str, re.Pattern[str]]] = [
    ("model call (torch)", re.compile(r"/torch/|ServedModel\.run|_timed \(")),
    ("metrics", re.compile(r"prometheus_client/|modelship_server/metrics\.py")),
    ("thread hand-off", re.compile(r"concurrent/futures/|/threading\.py|/queue\.py|run_in_executor|call_soon_threadsafe")),
    ("decode, validate, encode", re.compile(r"modelship_server/(tensors|web|protocol_v1|protocol_v2|grpc_service)\.py|/numpy/|orjson")),
    ("batcher (queue, gather, scatter)", re.compile(r"modelship_server/batching\.py")),
    ("framework (routing, middleware, request/response objects)", re.compile(r"/starlette/|/fastapi/|/anyio/|/pydantic|modelship_server/(app|hotpath|dataplane)\.py")),
    ("HTTP server (uvicorn + uvloop + httptools)", re.compile(r"/uvicorn/|uvloop|httptools")),
    ("asyncio (tasks, futures, loop)", re.compile(r"/asyncio/")),
    # Samples whose innermost Python frame is the loop itself: uvloop's C code (epoll, socket
    # reads and writes, httptools' parser callbacks before they reach Python).
    ("HTTP server (uvicorn + uvloop + httptools)", re.compile(r"Runner\.run|asyncio_run|Server\.run")),
]


def categorize(raw: str) -> dict[str, int]:
    """py-spy --format raw: ``frame;frame;... count`` (root first). Innermost known layer wins."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        layer = "other"
        for frame in reversed(frames):
            match = next((name for name, pattern in LAYERS if pattern.search(frame)), None)
            if match:
                layer = match
                break
        counts[layer] += int(count)
    return dict(counts)


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def profile(args: argparse.Namespace) -> dict:
    tools = venvs.ensure("tools", with_torch=False)
    args.source = getattr(args, "source", "")
    py_spy = tools.path / "bin" / "py-spy"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = bench.build_models(folder)
        body = folder / "tiny.json"
        body.write_text(json.dumps({"instances": [[0.1, -0.2, 0.3, 0.4]]}))
        gc_out = folder / "gc.json"
        port = bench.free_port()
        spec = bench.target(args.target, models["tiny"], port, 32, folder, args.server_args.split())
        path = [args.source] if args.source else []
        spec.env.update(PYTHONPATH=os.pathsep.join([*path, str(HERE / "profile_hook")]), BENCH_GC_OUT=str(gc_out))
        with bench.Server(spec, port, str(args.server_core), folder / "server.log") as server:
            url = server.url + bench.V1_PATH
            bench.wrk(url, body, args.concurrency, 2, args.load_core)  # warm-up
            raw = folder / "stacks.txt"
            spy = subprocess.Popen(
                [str(py_spy), "record", "--pid", str(server.proc.pid), "--rate", str(args.rate),
                 "--format", "raw", *(["--native"] if args.native else ["--nonblocking"]), "--subprocesses", "--output", str(raw),
                 "--duration", str(int(args.seconds))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            before = cpu_seconds(server.proc.pid)
            os.kill(server.proc.pid, signal.SIGUSR1)  # GC pauses: count from here
            result = bench.wrk(url, body, args.concurrency, args.seconds, args.load_core)
            os.kill(server.proc.pid, signal.SIGUSR2)  # ... to here
            used = cpu_seconds(server.proc.pid) - before
            spy.wait()
        stacks = raw.read_text() if raw.exists() else ""
        if args.keep_stacks:
            Path(args.keep_stacks).write_text(stacks)
        gc_stats = json.loads(gc_out.read_text()) if gc_out.exists() else None
    layers = categorize(stacks)
    total = sum(layers.values()) or 1
    requests = result["rps"] * args.seconds
    per_request_us = used / requests * 1e6 if requests else 0.0
    return {
        "target": args.target,
        "concurrency": args.concurrency,
        "wrk": result,
        "cpu_us_per_request": round(per_request_us, 1),
        "layers_us_per_request": {
            name: round(per_request_us * count / total, 1)
            for name, count in sorted(layers.items(), key=lambda kv: -kv[1])
        },
        "samples": total,
        "gc": gc_stats,
        "loadavg": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="modelship", help="modelship, floor, plain (see run.py)")
    parser.add_argument("--server-args", default="", help="extra flags for the server")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--source", help="serve modelship_server from this folder (e.g. an older commit's server/)")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C/C++ frames too)")
    parser.add_argument("--keep-stacks", metavar="FILE", help="also write py-spy's raw stacks here")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(profile(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
