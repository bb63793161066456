"""The protocol campaign's long run (``make fuzz-server``): tests/server/campaign.py against real
server processes, at least 10,000 generated requests in the single-process runs, a shorter run against
two front ends with a model each and with one shared model process.

    python bench/server/fuzz.py [--seed N] [--scale 1.0] [--out bench/server/results]

Runs, one seed for all: the TorchScript MLP and the torch.export CNN (whose batch range the
server enforces) in one process, then the MLP behind two front ends in both model-process
modes. Writes ``fuzz-<UTC time>.json`` (every run's figures) to ``--out`` and prints a table.
Exit 1 when any run found something, with the seed that replays it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Not this folder: its profile.py would shadow the stdlib's (torch.export imports cProfile).
sys.path[:] = [str(ROOT / "tests" / "server"), *(p for p in sys.path if Path(p or ".").resolve() != HERE)]
import campaign  # noqa: E402
from server_support import build_models, free_port, serve_subprocess  # noqa: E402

TIMEOUT_S = 2.0
MAX_BODY = 16 * 1024 * 1024
READY_TIMEOUT_S = 300.0
"""How long a server may take to load (two workers on a loaded 2-core machine: over a minute)."""


def runs(models: Any, scale: float) -> list[tuple[str, list[str], campaign.Budget]]:
    """(label, server flags, budget) of each run."""

    def budget(schemathesis: int, http: int, grpc: int) -> campaign.Budget:
        return campaign.Budget(int(schemathesis * scale), int(http * scale), int(grpc * scale))

    mlp = ["--model-name", "tiny", "--model-uri", str(models.mlp_ts)]
    cnn = ["--model-name", "cnn", "--model-uri", str(models.cnn_export), "--model-format", "torch-export"]
    return [
        ("one process, TorchScript MLP", mlp, budget(300, 3000, 2000)),
        ("one process, torch.export CNN", cnn, budget(100, 1500, 1000)),
        *[(f"two front ends, {mode}", [*mlp, "--workers", "2", "--model-process", mode, "--num-threads", "1"],
           budget(40, 1000, 500)) for mode in ("per-worker", "shared")],
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None, help="default: a new one, printed")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget (0.1: a quick look)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"protocol campaign, seed {seed} (--seed {seed} replays it)", flush=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d-%H%M")
    revision = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fuzz-{stamp}.json"
    results: list[dict[str, Any]] = []
    generated = 0

    def write() -> None:  # after every run: a later run that breaks keeps the earlier figures
        path.write_text(json.dumps({"seed": seed, "revision": revision, "scale": args.scale,
                                    "generated_requests": generated, "runs": results}, indent=1) + "\n")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="modelship-fuzz-") as folder:
        models = build_models(Path(folder))
        for label, flags, budget in runs(models, args.scale):
            grpc_port = free_port()
            flags = [*flags, "--device", "cpu", "--grpc-port", str(grpc_port), "--request-timeout-s", str(TIMEOUT_S),
                     "--max-body-bytes", str(MAX_BODY)]  # fmt: skip
            print(f"== {label}", flush=True)
            try:
                with serve_subprocess({}, flags, ready_timeout_s=READY_TIMEOUT_S) as (proc, url):
                    report = campaign.run(url, f"127.0.0.1:{grpc_port}", seed, budget, TIMEOUT_S, MAX_BODY,
                                          log=lambda line: print(line, flush=True))  # fmt: skip
                    alive = proc.poll() is None
            except AssertionError as exc:  # the server never became ready: a finding, not a crash
                results.append({"run": label, "server_flags": flags, "schemathesis_cases": 0,
                                "hostile_http_requests": 0, "grpc_calls": 0, "server_counted_http_requests": 0,
                                "server_errors_5xx": 0, "failures": [f"no server to fuzz: {exc}"]})  # fmt: skip
                write()
                continue
            summary = {"run": label, "server_flags": flags, **report.summary()}
            if not alive:
                summary["failures"].append("a server process died during the run")
            results.append(summary)
            generated = sum(r["schemathesis_cases"] + r["hostile_http_requests"] + r["grpc_calls"] for r in results)
            write()
            print(json.dumps({k: v for k, v in summary.items() if k != "server_flags"}, indent=1), flush=True)
    failed = [r for r in results if r["failures"]]
    print(f"\n{'run':<34} {'schemathesis':>12} {'hostile HTTP':>12} {'gRPC':>6} {'server saw':>10} {'5xx':>4} failures")
    for r in results:
        print(f"{r['run']:<34} {r['schemathesis_cases']:>12} {r['hostile_http_requests']:>12} {r['grpc_calls']:>6} "
              f"{r['server_counted_http_requests']:>10} {r['server_errors_5xx']:>4} {len(r['failures'])}")  # fmt: skip
    print(f"{generated} generated requests; written to {path}")
    if failed:
        print(f"FOUND PROBLEMS with seed {seed} (bench/server/fuzz.py --seed {seed} replays them)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
