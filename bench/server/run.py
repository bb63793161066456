#!/usr/bin/env python3
"""Server benchmark (not a test): modelship against its peers and the raw floor, one run.

    .venv/bin/python bench/server/run.py                     # ~15 minutes; table, plot, JSON
    .venv/bin/python bench/server/run.py --only modelship,floor --duration 3 --rounds 1

Every server serves the same TorchScript files (a tiny MLP and a small CNN, built here) on the
KServe v1 path with the same JSON body, one after the other, pinned to one core with taskset
(``--server-core``); wrk runs pinned to another (``--load-core``), over loopback, POSTing the
body from a Lua script. Peers run in their own venvs (``venvs.py``, created on first use) so
their pins never touch the project's. Before a server is measured, its answer to the body is
checked against the model called directly: a server that predicts something else is not
measured. Results (rps, p50, p99 from wrk's latency distribution; with ``--rounds`` > 1 the
median over rounds, the spread kept) go to ``bench/server/results/<date>.json`` with the load
average around each server, a markdown table (``.md``) and a plot (``.png``).

Sections (``--sections``): ``mlp`` (every server at c = 1, 8, 32 with its defaults: batching is on by default
only in modelship), ``cnn`` (the small CNN at c = 32, batching on where the server has it:
modelship, LitServe, MLServer; max 32 rows, 5 ms), ``workers`` (the CNN on two cores: one process against two
front-end processes, with per-worker and shared models), ``profile`` (``profile.py``: modelship's
CPU per request by layer at c = 1, 8, 32; with ``--profile-before DIR`` also the server in DIR),
and, not by default, ``scaling`` (the GPU check: served rows/s of the CNN over the binary OIP v2
path with 1/2/4/8 front ends and one shared model process, every core, ``--scaling-device``).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
import report as report_md  # noqa: E402
import venvs  # noqa: E402

warnings.simplefilter("ignore", FutureWarning)
MODEL_NAME = "tiny"
V1_PATH = f"/v1/models/{MODEL_NAME}:predict"


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


@dataclass
class Target:
    """How to start one server: interpreter, arguments, environment, where to ask if ready."""

    name: str
    python: Path
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health: str = "/health"


def target(key: str, model: Path, port: int, batch: int, workdir: Path, extra: list[str] = ()) -> Target:
    """The server ``key`` serving ``model`` on ``port``; ``batch`` > 1 turns batching on where
    the server has it."""
    env = {"BENCH_MODEL": str(model), "BENCH_PORT": str(port), "BENCH_MAX_BATCH": str(batch)}
    uvicorn = ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]
    if key == "modelship":
        argv = [
            "-m", "modelship_server", "--host", "127.0.0.1", "--port", str(port), "--num-threads", "1",
            "--model-name", MODEL_NAME, "--model-uri", str(model), "--max-queue", "4096",
            "--max-batch-size", str(batch), "--log-level", "warning", *extra,
        ]
        return Target("modelship", Path(sys.executable), argv)
    if key == "plain":
        argv = ["-m", "uvicorn", "plain_app:app", "--app-dir", str(HERE), *uvicorn]
        rank = "4" if model.stem == "cnn" else "2"
        return Target("plain FastAPI", Path(sys.executable), argv, {"PLAIN_MODEL": str(model), "PLAIN_RANK": rank})
    if key == "floor":
        python = venvs.ensure("floor").python
        argv = ["-m", "uvicorn", "floor_app:app", "--app-dir", str(PEERS), "--loop", "uvloop",
                "--http", "httptools", *uvicorn]
        return Target("raw ASGI floor", python, argv, env)
    if key == "litserve":
        venv = venvs.ensure("litserve")
        return Target(f"LitServe {venv.version}", venv.python, [str(PEERS / "litserve_app.py")], env)
    if key == "kserve":
        venv = venvs.ensure("kserve")
        return Target(f"KServe {venv.version}", venv.python, [str(PEERS / "kserve_app.py")], env,
                      health=f"/v1/models/{MODEL_NAME}")
    if key == "mlserver":
        venv = venvs.ensure("mlserver")
        folder = workdir / f"mlserver-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "settings.json").write_text(json.dumps({
            "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
            "parallel_workers": 0, "debug": False,
        }))
        (folder / "model-settings.json").write_text(json.dumps({
            "name": MODEL_NAME, "implementation": "mlserver_app.TorchScriptRuntime",
            "parameters": {"uri": str(model)},
            **({"max_batch_size": batch, "max_batch_time": 0.005} if batch > 1 else {}),
        }))
        shutil.copy(PEERS / "mlserver_app.py", folder / "mlserver_app.py")
        mlserver = str(venv.path / "bin" / "mlserver")
        return Target(f"MLServer {venv.version}", venv.python, ["-c", _MLSERVER_MAIN, mlserver, "start",
                      str(folder)], {**env, "PYTHONPATH": str(folder)}, health="/v2/health/ready")
    raise SystemExit(f"unknown server {key!r}")


_MLSERVER_MAIN = "import sys, runpy; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"

SERVERS = ["modelship", "plain", "floor", "litserve", "kserve", "mlserver"]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


class Server:
    """A target running under taskset; SIGTERM (then SIGKILL) on exit, children included."""

    def __init__(self, spec: Target, port: int, cores: str, log: Path) -> None:
        self.spec = spec
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_")},
            **spec.env,
            "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore",
        }
        cmd = ["taskset", "-c", cores, str(spec.python), *spec.argv]
        with log.open("wb") as out:  # a file, never a pipe: a chatty server must not block on it
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def __enter__(self) -> Server:
        try:
            wait_ready(self.url + self.spec.health, self.proc)
        except BaseException:
            self.__exit__()
            print(self.log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        try:  # peers that spawn workers: nothing of this session may outlive the run
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def check_predictions(url: str, body: bytes, expected: np.ndarray) -> None:
    """The server must answer the body with the model's own output before it is measured."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        got = np.asarray(json.loads(resp.read())["predictions"], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


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


def wrk(
    url: str, body: Path, connections: int, seconds: float, core: int | str, threads: int = 1,
    header_length: int | None = None,
) -> dict[str, Any]:
    cmd = [
        "taskset",
        "-c",
        str(core),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(HERE / "post.lua"),
        url,
    ]
    env = {**os.environ, "BODY_FILE": str(body), "HEADER_LENGTH": str(header_length or "")}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return parse_wrk(out.stdout)


def measure(
    key: str, model: Path, body: Path, expected: np.ndarray, args: argparse.Namespace, *,
    section: str, conns: list[int], batch: int, label: str | None = None, cores: str | None = None,
    extra: list[str] = (), workdir: Path,
) -> list[dict[str, Any]]:
    """Start one server, check its predictions, warm it up, then one wrk run per concurrency."""
    port = free_port()
    spec = target(key, model, port, batch, workdir, list(extra))
    rows = []
    load_before = os.getloadavg()
    with Server(spec, port, cores or str(args.server_core), workdir / f"{key}-{port}.log") as server:
        url = server.url + V1_PATH
        try:
            check_predictions(url, body.read_bytes(), expected)
        except Exception:
            print(server.log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        wrk(url, body, max(conns), args.warmup, args.load_core)  # warm-up, discarded
        for c in conns:
            result = wrk(url, body, c, args.duration, args.load_core)
            rows.append({
                "section": section, "server": label or spec.name, "concurrency": c, "batch": batch,
                **result, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def run_once(args: argparse.Namespace, models: dict[str, Path], bodies: dict[str, Path],
             expected: dict[str, np.ndarray], workdir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    only = args.only.split(",") if args.only else SERVERS
    common = dict(args=args, workdir=workdir)
    if "mlp" in args.sections:  # every server with its defaults: batching only in modelship's
        for key in only:
            rows += measure(key, models["tiny"], bodies["tiny"], expected["tiny"], section="mlp",
                            conns=[1, 8, 32], batch=32 if key == "modelship" else 1, **common)
    if "cnn" in args.sections:
        for key in only:
            rows += measure(key, models["cnn"], bodies["cnn"], expected["cnn"], section="cnn",
                            conns=[32], batch=32, **common)
            if key == "modelship":
                rows += measure(key, models["cnn"], bodies["cnn"], expected["cnn"], section="cnn",
                                conns=[32], batch=1, label="modelship unbatched", **common)
    if "workers" in args.sections:
        both = f"{args.server_core},{args.load_core}"
        for label, extra in [
            ("1 process", ["--num-threads", "2"]),
            ("2 workers, model per worker", ["--workers", "2", "--model-process", "per-worker"]),
            ("2 workers, shared model process", ["--workers", "2", "--model-process", "shared",
                                                 "--num-threads", "2"]),
        ]:
            rows += measure("modelship", models["cnn"], bodies["cnn"], expected["cnn"], section="workers",
                            conns=[32], batch=32, label=label, cores=both, extra=extra, **common)
    if "scaling" in args.sections:
        rows += measure_scaling(args, models["cnn"], bodies["cnn"], expected["cnn"], workdir)
    return rows


def measure_scaling(
    args: argparse.Namespace, model: Path, json_body: Path, expected: np.ndarray, workdir: Path
) -> list[dict[str, Any]]:
    """Served rows/s of the CNN over the binary OIP v2 path (16 images per request) with 1, 2,
    4, 8 front ends feeding one shared model process, on every core (``--scaling-device``:
    cuda when the GPU machine is lent, cpu for a smoke test here)."""
    images = np.random.default_rng(1).normal(size=(16, 1, 16, 16)).astype("<f4")
    header = json.dumps({"inputs": [{"name": "input__0", "datatype": "FP32", "shape": list(images.shape),
                                     "parameters": {"binary_data_size": images.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    body = workdir / "cnn-binary.bin"
    body.write_bytes(header + images.tobytes())
    every = f"0-{(os.cpu_count() or 1) - 1}"
    rows = []
    for count in [int(n) for n in args.scaling_workers.split(",")]:
        port = free_port()
        extra = ["--workers", str(count), "--model-process", "shared", "--device", args.scaling_device,
                 "--num-threads", "0", "--max-batch-size", "512", "--max-latency-ms", "2"]
        spec = target("modelship", model, port, 512, workdir, extra)
        with Server(spec, port, every, workdir / f"scaling-{count}.log") as server:
            check_predictions(server.url + V1_PATH, json_body.read_bytes(), expected)
            url = server.url + f"/v2/models/{MODEL_NAME}/infer"
            wrk(url, body, 64, args.warmup, every, threads=4, header_length=len(header))
            result = wrk(url, body, 64, args.duration, every, threads=4, header_length=len(header))
        rows.append({"section": "scaling", "server": f"{count} front end(s), shared model ({args.scaling_device})",
                     "concurrency": 64, "batch": 512, "rows_per_s": result["rps"] * len(images), **result,
                     "loadavg_after": os.getloadavg()})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def median_rows(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    merged = []
    for cells in zip(*rounds, strict=True):
        row = dict(cells[0])
        for key in ("rps", "p50_ms", "p99_ms"):
            values = [c[key] for c in cells]
            row[key] = statistics.median(values)
            row[key + "_rounds"] = values
        row["non2xx"] = sum(c["non2xx"] for c in cells)
        row["socket_errors"] = sum(c["socket_errors"] for c in cells)
        row["loadavg_rounds"] = [c["loadavg_before"] for c in cells]
        merged.append(row)
    return merged


def wait_quiet(threshold: float, longest_s: float) -> tuple[float, ...]:
    """Poll the 1-minute load average once a minute until it drops below ``threshold``."""
    deadline = time.monotonic() + longest_s
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        print(f"waiting for a quiet machine: load {os.getloadavg()}", file=sys.stderr, flush=True)
        time.sleep(60)
    return os.getloadavg()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded load per server")
    parser.add_argument("--rounds", type=int, default=2, help="repeat everything; cells are medians")
    parser.add_argument("--sections", default="mlp,cnn,workers,profile")
    parser.add_argument("--scaling-workers", default="1,2,4,8", help="scaling section: front-end counts")
    parser.add_argument("--scaling-device", default="cuda", help="scaling section: cuda (GPU machine) or cpu")
    parser.add_argument("--profile-before", default="", metavar="DIR",
                        help="profile section: also profile the server in DIR (e.g. main's server/)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SERVERS)}")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--quiet-load", type=float, default=0.0,
                        help="first wait (up to --quiet-wait s) for the 1-min load to drop below this")
    parser.add_argument("--quiet-wait", type=float, default=1800.0)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--export-models", metavar="DIR", help="only write tiny.pt and cnn.pt to DIR and exit")
    args = parser.parse_args()
    if args.export_models:
        Path(args.export_models).mkdir(parents=True, exist_ok=True)
        for name, path in build_models(Path(args.export_models)).items():
            print(f"{name}: {path}")
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (hack/setup.sh installs it)")
    only = args.only.split(",") if args.only else SERVERS
    for key in {"floor": "floor", "litserve": "litserve", "kserve": "kserve", "mlserver": "mlserver"}:
        if key in only:
            venvs.ensure(key)  # before the quiet window: installing is load too
    venvs.ensure("tools", with_torch=False)
    quiet = wait_quiet(args.quiet_load, args.quiet_wait) if args.quiet_load else os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = build_models(folder)
        rng = np.random.default_rng(0)
        inputs = {
            "tiny": np.array([[0.1, -0.2, 0.3, 0.4]], dtype=np.float32),
            "cnn": rng.normal(size=(1, 1, 16, 16)).round(4).astype(np.float32),
        }
        bodies, expected = {}, {}
        import torch

        for key, x in inputs.items():
            bodies[key] = folder / f"{key}.json"
            bodies[key].write_text(json.dumps({"instances": x.tolist()}))
            with torch.inference_mode():
                expected[key] = torch.jit.load(str(models[key]))(torch.from_numpy(x)).numpy()
        rounds = [run_once(args, models, bodies, expected, folder) for _ in range(args.rounds)]
    rows = median_rows(rounds) if args.rounds > 1 else rounds[0]
    profiles = []
    if "profile" in args.sections:  # where the time goes, before (main's server) and after
        import profile as layer_profile

        for label, source in (("before", args.profile_before), ("after", "")):
            if label == "before" and not source:
                continue
            for c in (1, 8, 32):
                settings = argparse.Namespace(
                    target="modelship", server_args="", concurrency=c, seconds=args.duration, rate=500,
                    server_core=args.server_core, load_core=args.load_core, source=source, native=False,
                    keep_stacks=None,
                )
                profiles.append({"code": label, **layer_profile.profile(settings)})
                print(json.dumps(profiles[-1]), flush=True)
    stamp = time.strftime("%Y-%m-%d-%H%M", time.gmtime(started))
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started),
        "loadavg_at_start": quiet,
        "loadavg_at_end": os.getloadavg(),
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "server_core": args.server_core,
        "load_core": args.load_core,
        "rows": rows,
        "all_rounds": rounds,
        "profile": profiles,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"{stamp}.json"
    raw.write_text(json.dumps(report, indent=2) + "\n")
    md = report_md.markdown(report, raw.name)
    (out / f"{stamp}.md").write_text(md)
    plot = subprocess.run(
        [str(venvs.VENVS["tools"].python), str(HERE / "plot.py"), str(raw), str(out / f"{stamp}.png")],
        capture_output=True, text=True,
    )
    print(md)
    print(f"\nload average {quiet} at start, {report['loadavg_at_end']} at end; raw: {raw}")
    if plot.returncode != 0:
        print(f"plot failed: {plot.stderr}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
