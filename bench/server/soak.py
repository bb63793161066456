"""The server's long soak (``make soak-server``): tests/server/soaking.py for ten minutes and more.

    python bench/server/soak.py [--minutes 10] [--warmup-s 60] [--concurrency 32] [--seed N]
                                [--workers 1] [--out bench/server/results]

The real server process (TorchScript MLP, HTTP and gRPC) at saturation with the mixed good/bad
stream, sampled every 5 s. Targets (issue 13, item 4): resident memory at rest after the load
within 5 % of that at rest after the warm-up, no more open file descriptors, p99 stable (the
median p99 of the last fifth of the windows over that of the first fifth: reported, judged
against 2x because this machine's neighbours move latencies more than the server does).
Writes ``soak-<UTC time>.json`` (every sample), ``.md`` (the curves as a table, a row a minute)
and ``.png`` (the curves, matplotlib from the benchmark's tools venv, when that venv exists) to
``--out``. Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Not this folder first: its profile.py would shadow the stdlib's (torch imports cProfile).
sys.path[:] = [str(ROOT / "tests" / "server"), *(p for p in sys.path if Path(p or ".").resolve() != HERE)]
import soaking  # noqa: E402
from server_support import build_models, free_port, serve_subprocess  # noqa: E402

RSS_PERCENT = 5.0
FD_SLACK = 0
P99_DRIFT = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1, help="front ends (model per worker)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    with tempfile.TemporaryDirectory(prefix="modelship-soak-") as folder:
        models = build_models(Path(folder))
        grpc_port = free_port()
        flags = ["--model-name", "tiny", "--model-uri", str(models.mlp_ts), "--device", "cpu",
                 "--grpc-port", str(grpc_port), "--workers", str(args.workers), "--request-timeout-s", "5"]  # fmt: skip
        with serve_subprocess({}, flags, ready_timeout_s=300) as (proc, url):
            result = asyncio.run(soaking.soak(url, f"127.0.0.1:{grpc_port}", proc.pid, seed=seed,
                                              warmup_s=args.warmup_s, seconds=60 * args.minutes,
                                              sample_s=args.sample_s, concurrency=args.concurrency))  # fmt: skip
            alive = proc.poll() is None
    growth = result.growth()
    drift = soaking.p99_drift(result)
    missed = []
    if growth["rss_percent"] > RSS_PERCENT:
        missed.append(f"resident memory grew {growth['rss_percent']:.2f} % (target {RSS_PERCENT} %)")
    if growth["fds"] > FD_SLACK:
        missed.append(f"{growth['fds']} more open file descriptors at rest")
    if drift is not None and drift > P99_DRIFT:
        missed.append(f"p99 drifted {drift:.2f}x (target {P99_DRIFT}x)")
    if result.server_errors():
        missed.append(f"{result.server_errors()} answers were 5xx")
    if not alive:
        missed.append("the server died")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d-%H%M")
    revision = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"soak-{stamp}.json"
    raw.write_text(json.dumps({"revision": revision, "minutes": args.minutes, "warmup_s": args.warmup_s,
                               "workers": args.workers, "p99_drift": drift, "missed": missed,
                               **result.as_json()}, indent=1) + "\n")  # fmt: skip
    raw.with_suffix(".md").write_text(table(json.loads(raw.read_text())))
    plot(raw, raw.with_suffix(".png"))
    load = [s for s in result.samples if s.phase == "load"]
    print(f"{result.measured_requests} answers in {args.minutes:g} min at c={args.concurrency} "
          f"({sum(s.rps for s in load) / max(1, len(load)):.0f}/s), statuses {dict(result.statuses)}")  # fmt: skip
    print(f"at rest: before {result.idle['before']}, after {result.idle['after']}")
    print(f"growth: {growth['rss_bytes'] / 2**20:.2f} MiB ({growth['rss_percent']:.2f} %), fds {growth['fds']:+d}, threads {growth['threads']:+d}, "
          f"p99 drift {drift if drift is None else round(drift, 2)}")  # fmt: skip
    print(f"written: {raw}" + (f" and {raw.with_suffix('.png')}" if raw.with_suffix(".png").exists() else ""))
    for line in missed:
        print(f"MISSED: {line} (seed {seed})")
    return 1 if missed else 0


def table(report: dict) -> str:
    """The curves as a markdown table, one row per minute: memory, descriptors and threads at the
    minute's last sample, answers/s averaged, p50 the median and p99 the median and the worst of
    the minute's windows."""
    rows = ["| minute | phase | resident MiB | fds | threads | answers/s | p50 ms | p99 ms (median, worst window) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    minutes: dict[int, list[dict]] = {}
    for sample in report["samples"]:
        minutes.setdefault(int(sample["at_s"] // 60), []).append(sample)
    for minute, samples in sorted(minutes.items()):
        last = samples[-1]
        p50s = [s["p50_ms"] for s in samples if s["p50_ms"] is not None]
        p99s = [s["p99_ms"] for s in samples if s["p99_ms"] is not None]
        phases = "/".join(dict.fromkeys(s["phase"] for s in samples))
        latency = (f"{statistics.median(p50s):.1f} | {statistics.median(p99s):.1f}, {max(p99s):.1f}" if p99s
                   else "- | -")  # fmt: skip
        rows.append(f"| {minute + 1} | {phases} | {last['rss_bytes'] / 2**20:.1f} | {last['fds']} | {last['threads']} "
                    f"| {statistics.mean(s['rps'] for s in samples):,.0f} | {latency} |")  # fmt: skip
    return "\n".join(rows) + "\n"


def plot(raw: Path, png: Path) -> None:
    """The curves, drawn by soak_plot.py in the benchmark's tools venv (matplotlib) when that venv
    is already there; the soak never installs anything (the raw JSON holds every sample)."""
    import venvs

    tools = venvs.VENVS["tools"]
    if not tools.python.exists():
        print(f"no plot: {tools.path} is absent (python bench/server/venvs.py tools makes it)")
        return
    subprocess.run([str(tools.python), str(HERE / "soak_plot.py"), str(raw), str(png)], check=True)


if __name__ == "__main__":
    sys.path.append(str(HERE))  # venvs.py, after the stdlib
    sys.exit(main())
