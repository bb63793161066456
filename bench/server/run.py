#!/usr/bin/env python3
"""Server benchmark (not a test): modelship vs a plain FastAPI app, and batching on a CNN.

    .venv/bin/python bench/server/run.py              # ~2 minutes, prints a markdown table
    .venv/bin/python bench/server/run.py --duration 5 --rounds 2

Both servers run the same TorchScript file, one after the other in this run, pinned to one
core with taskset (``--server-core``); wrk runs pinned to another (``--load-core``), over
loopback, with a Lua script POSTing a fixed JSON body. Results (rps, p50, p99 from wrk's
latency distribution) go to stdout and bench/results/server-<time>.json. With ``--rounds``
> 1 every cell is the median over rounds (the machine may be shared: report the noise).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
warnings.simplefilter("ignore", FutureWarning)


def build_models(folder: Path) -> dict[str, Path]:
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    class SmallCNN(torch.nn.Module):
        """LeNet/AlexNet-shaped: two conv blocks on a 1×16×16 image, then a 2048-wide fully
        connected head (5.3M parameters, 21 MB). One image is memory-bound on the head's
        weights; a batch reuses each weight row for every image - what batching buys on CPU
        and GPU alike."""

        def __init__(self, hidden: int = 2048) -> None:
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(1, 16, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
                torch.nn.Conv2d(16, 32, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            )
            self.head = torch.nn.Sequential(
                torch.nn.Linear(32 * 4 * 4, hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, 10),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.flatten(self.features(x), 1))

    torch.manual_seed(0)

    def meta(shape: list[int]) -> dict[str, str]:
        return {
            "modelship.json": json.dumps(
                {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": shape}]}
            )
        }

    paths = {"tiny": folder / "tiny.pt", "cnn": folder / "cnn.pt"}
    with torch.no_grad():
        torch.jit.save(torch.jit.script(Tiny().eval()), str(paths["tiny"]), _extra_files=meta([-1, 4]))
        cnn = torch.jit.freeze(torch.jit.script(SmallCNN().eval()))
        torch.jit.save(cnn, str(paths["cnn"]), _extra_files=meta([-1, 1, 16, 16]))
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready after {timeout}s")


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], core: int) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_")},
            **env,
            "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore",
        }
        cmd = [
            "taskset",
            "-c",
            str(core),
            sys.executable,
            *[a.replace("{port}", str(self.port)) for a in argv],
        ]
        self.proc = subprocess.Popen(
            cmd, env=full_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def __enter__(self) -> Server:
        wait_ready(self.url, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNIT[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if not (pct and rps):
        raise SystemExit(f"cannot parse wrk output:\n{output}")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _ms(pct["50"]),
        "p99_ms": _ms(pct["99"]),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def wrk(url: str, body: Path, connections: int, seconds: float, core: int) -> dict[str, Any]:
    cmd = [
        "taskset",
        "-c",
        str(core),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(HERE / "post.lua"),
        url,
    ]
    out = subprocess.run(
        cmd, env={**os.environ, "BODY_FILE": str(body)}, capture_output=True, text=True, check=True
    )
    return parse_wrk(out.stdout)


def run_once(
    args: argparse.Namespace, models: dict[str, Path], bodies: dict[str, Path]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    serve_ms = [
        "-m",
        "modelship_server",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--num-threads",
        "1",
        "--model-name",
        "tiny",
        "--max-queue",
        "4096",
    ]
    targets = [
        (
            "plain FastAPI",
            [
                "-m",
                "uvicorn",
                "plain_app:app",
                "--app-dir",
                str(HERE),
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            {"PLAIN_MODEL": str(models["tiny"])},
        ),
        ("modelship", [*serve_ms, "--model-uri", str(models["tiny"])], {}),
    ]
    for name, argv, env in targets:
        with Server(name, argv, env, args.server_core) as server:
            url = server.url + "/v1/models/tiny:predict"
            wrk(url, bodies["tiny"], 8, args.warmup, args.load_core)  # warm-up, discarded
            for conns in (1, 8, 32):
                result = wrk(url, bodies["tiny"], conns, args.duration, args.load_core)
                rows.append({"model": "tiny MLP", "server": name, "concurrency": conns, **result})
                print(json.dumps(rows[-1]), flush=True)
    for name, batch in (("modelship unbatched", 1), ("modelship batched", 32)):
        argv = [
            *serve_ms,
            "--model-uri",
            str(models["cnn"]),
            "--max-batch-size",
            str(batch),
            "--max-latency-ms",
            "5",
        ]
        with Server(name, argv, {}, args.server_core) as server:
            url = server.url + "/v1/models/tiny:predict"
            wrk(url, bodies["cnn"], 32, args.warmup, args.load_core)
            result = wrk(url, bodies["cnn"], 32, args.duration, args.load_core)
            rows.append({"model": "small CNN", "server": name, "concurrency": 32, **result})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def median_rows(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    merged = []
    for cells in zip(*rounds, strict=True):
        row = dict(cells[0])
        for key in ("rps", "p50_ms", "p99_ms"):
            values = [c[key] for c in cells]
            row[key] = statistics.median(values)
            row[key + "_spread"] = [min(values), max(values)]
        row["non2xx"] = sum(c["non2xx"] for c in cells)
        row["socket_errors"] = sum(c["socket_errors"] for c in cells)
        merged.append(row)
    return merged


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| model | server | c | rps | p50 ms | p99 ms | ratio vs baseline |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    base: dict[tuple[str, int], float] = {}
    for row in rows:
        if row["server"] in ("plain FastAPI", "modelship unbatched"):
            base[(row["model"], row["concurrency"])] = row["rps"]
    for row in rows:
        ref = base.get((row["model"], row["concurrency"]))
        is_base = row["server"] in ("plain FastAPI", "modelship unbatched")
        ratio = "1.00 (baseline)" if is_base else (f"{row['rps'] / ref:.2f}x" if ref else "")
        errs = f" ({row['non2xx']} non-2xx)" if row["non2xx"] else ""
        out.append(
            f"| {row['model']} | {row['server']} | {row['concurrency']} | {row['rps']:.0f}{errs} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {ratio} |"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded load per server")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; cells are medians")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument(
        "--export-models", metavar="DIR", help="only write tiny.pt and cnn.pt to DIR and exit"
    )
    args = parser.parse_args()
    if args.export_models:
        Path(args.export_models).mkdir(parents=True, exist_ok=True)
        for name, path in build_models(Path(args.export_models)).items():
            print(f"{name}: {path}")
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (hack/setup.sh installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = build_models(folder)
        bodies = {"tiny": folder / "tiny.json", "cnn": folder / "cnn.json"}
        bodies["tiny"].write_text(json.dumps({"instances": [[0.1, -0.2, 0.3, 0.4]]}))
        import numpy as np

        image = np.random.default_rng(0).normal(size=(1, 1, 16, 16)).round(4)
        bodies["cnn"].write_text(json.dumps({"instances": image.tolist()}))
        load = os.getloadavg()
        rounds = [run_once(args, models, bodies) for _ in range(args.rounds)]
    rows = median_rows(rounds) if args.rounds > 1 else rounds[0]
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_before": load,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "rows": rows,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"server-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(table(rows))
    print(f"\nloadavg before {load}, after {report['loadavg_after']}; raw: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
