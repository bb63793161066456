"""The operator soak (issue 13): N ModelDeployments held for many resync cycles, the operator sampled.

One function, `soak`, used by the bounded e2e test (tests/e2e/test_operator_soak.py, in `make test`)
and by the long run (bench/soak_operator.py, `make soak-operator`: 1,000 objects, >= 10 minutes).

The operator runs as its own process with a short resync (every ModelDeployment passes once per
``resync_s``); once all N are Ready the soak samples, every ``sample_s`` seconds:

- from /proc: resident memory (VmRSS), threads, open file descriptors, CPU seconds;
- from its /metrics on loopback: work-queue depth (due or running), keys scheduled for later,
  the watch cache's entries by part, and the count of reconcile passes.

`SoakResult.problems` judges the samples after a warm-up: memory may not grow by more than
``rss_tolerance`` of its post-warm-up level, threads, descriptors, scheduled keys and cache entries may
not end above their post-warm-up maximum, the queue must drain between cycles, and the resync
passes must really have happened (N per cycle, give or take).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from e2e_support import (
    GROUP,
    PLURAL,
    VERSION,
    Cluster,
    OperatorProcess,
    model_deployment,
    wait_until,
)


class SoakOperator(OperatorProcess):
    """The operator process with extra flags (the soak's resync), up once its /metrics answers."""

    def __init__(self, cluster: Cluster, log_path: Path, args: list[str]):
        super().__init__(cluster, log_path, args=("--all-namespaces", *args))

    def start(self) -> None:
        super().start()
        wait_until(self._up, timeout=60, what="the operator's /metrics endpoint")

    def _up(self) -> bool:
        if not self.running():
            raise AssertionError(f"operator exited at start:\n{self.log_tail()}")
        try:
            self.metrics()
        except OSError:
            return False
        return True

    def samples(self) -> dict[str, float]:
        """Every sample of its /metrics, keyed ``name{label=value,...}``."""
        return {
            (f"{name}{{{','.join(f'{k}={v}' for k, v in labels)}}}" if labels else name): value
            for (name, labels), value in self.metrics().items()
        }


@dataclass
class Sample:
    t: float
    """Seconds since the soak started (all N Ready)."""
    rss_mb: float
    threads: int
    fds: int
    cpu_s: float
    queue_depth: float
    queue_scheduled: float
    cache: dict[str, float]
    reconciles: float
    """Reconcile passes since the operator started (modelship_reconciles_total, all results)."""


@dataclass
class SoakResult:
    n: int
    resync_s: float
    duration_s: float
    warmup_s: float
    rss_tolerance: float
    ready_after_s: float
    samples: list[Sample] = field(default_factory=list)

    def after_warmup(self) -> list[Sample]:
        return [s for s in self.samples if s.t >= self.warmup_s]

    def figures(self) -> dict[str, Any]:
        steady = self.after_warmup()
        if len(steady) < 6:
            return {"samples_after_warmup": len(steady)}
        head, tail = steady[: max(3, len(steady) // 10)], steady[-max(3, len(steady) // 10):]
        rss0, rss1 = median(s.rss_mb for s in head), median(s.rss_mb for s in tail)
        cycles = (steady[-1].t - steady[0].t) / self.resync_s
        passes = steady[-1].reconciles - steady[0].reconciles
        return {
            "samples_after_warmup": len(steady),
            "rss_start_mb": round(rss0, 1),
            "rss_end_mb": round(rss1, 1),
            "rss_peak_mb": round(max(s.rss_mb for s in steady), 1),
            "rss_growth": round((rss1 - rss0) / rss0, 4),
            "threads_start_max": max(s.threads for s in head),
            "threads_end_max": max(s.threads for s in tail),
            "fds_start_max": max(s.fds for s in head),
            "fds_end_max": max(s.fds for s in tail),
            "queue_depth_max": max(s.queue_depth for s in steady),
            "queue_depth_start_max": max(s.queue_depth for s in head),
            "queue_depth_end_median": median(s.queue_depth for s in tail),
            "scheduled_start_max": max(s.queue_scheduled for s in head),
            "scheduled_end_max": max(s.queue_scheduled for s in tail),
            "cache_start_max": {k: max(s.cache.get(k, 0) for s in head) for k in steady[0].cache},
            "cache_end_max": {k: max(s.cache.get(k, 0) for s in tail) for k in steady[0].cache},
            "resync_cycles": round(cycles, 1),
            "passes": passes,
            "passes_per_object_per_cycle": round(passes / (self.n * cycles), 2) if cycles else None,
            "cpu_s_per_cycle": round((steady[-1].cpu_s - steady[0].cpu_s) / cycles, 2) if cycles else None,
        }

    def problems(self) -> list[str]:
        """What a leak or a stuck loop would show; empty when the soak held steady."""
        f = self.figures()
        if "rss_growth" not in f:
            return [f"too few samples after the warm-up: {f['samples_after_warmup']}"]
        out = []
        if f["rss_growth"] > self.rss_tolerance:
            out.append(f"RSS grew {f['rss_growth']:.1%} after the warm-up ({f['rss_start_mb']} -> {f['rss_end_mb']} MB), "
                       f"more than {self.rss_tolerance:.0%}")
        for what in ("threads", "fds", "scheduled"):
            if f[f"{what}_end_max"] > f[f"{what}_start_max"]:
                out.append(f"{what} grew: {f[f'{what}_start_max']} -> {f[f'{what}_end_max']}")
        for part, end in f["cache_end_max"].items():
            if end > f["cache_start_max"][part]:
                out.append(f"cache entries ({part}) grew: {f['cache_start_max'][part]} -> {end}")
        if f["queue_depth_end_median"] > f["queue_depth_start_max"]:
            out.append(f"the work queue's depth grew: up to {f['queue_depth_start_max']} after the warm-up, "
                       f"a median of {f['queue_depth_end_median']} at the end")
        if f["resync_cycles"] < 2:
            out.append(f"only {f['resync_cycles']} resync cycles after the warm-up")
        elif not 0.8 <= f["passes_per_object_per_cycle"] <= 3:
            out.append(f"{f['passes_per_object_per_cycle']} passes per object per resync cycle (expected about 1)")
        return out

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {k: v for k, v in asdict(self).items() if k != "samples"}
        doc["figures"] = self.figures()
        doc["problems"] = self.problems()
        doc["samples"] = [asdict(s) for s in self.samples]
        path.write_text(json.dumps(doc, indent=1))


def proc_stats(pid: int) -> tuple[float, int, int, float]:
    """(RSS MB, threads, open descriptors, CPU seconds) of a process, from /proc."""
    rss_kb = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, threads, fds, cpu


def _md_ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def soak(cluster: Cluster, ns: str, op: SoakOperator, *, n: int, resync_s: float, duration_s: float,
         warmup_s: float, sample_s: float, rss_tolerance: float, image: str,
         create: Callable[[list[dict[str, Any]]], None],
         progress: Callable[[str], None] = lambda line: None) -> SoakResult:
    """Create ``n`` ModelDeployments in ``ns`` (with ``create``), wait until all are Ready, then
    sample the running operator ``op`` for ``duration_s`` seconds."""
    assert op.proc is not None and op.running()
    t0 = time.monotonic()
    create([model_deployment(f"s{i:04d}", image=image) for i in range(n)])

    def ready_count() -> int:
        items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
        return sum(1 for md in items.get("items") or [] if _md_ready(md))

    wait_until(lambda: ready_count() >= n, timeout=max(300, n * 1.5), what=f"{n} ModelDeployments Ready", interval=2)
    result = SoakResult(n=n, resync_s=resync_s, duration_s=duration_s, warmup_s=warmup_s,
                        rss_tolerance=rss_tolerance, ready_after_s=round(time.monotonic() - t0, 1))
    progress(f"soak: {n} Ready after {result.ready_after_s}s; sampling for {duration_s:.0f}s every {sample_s}s")
    start = time.monotonic()
    while True:
        now = time.monotonic() - start
        if now > duration_s:
            break
        if not op.running():
            raise AssertionError(f"the operator exited during the soak:\n{op.log_tail()}")
        rss, threads, fds, cpu = proc_stats(op.proc.pid)
        m = op.samples()
        result.samples.append(Sample(
            t=round(now, 2), rss_mb=round(rss, 2), threads=threads, fds=fds, cpu_s=round(cpu, 2),
            queue_depth=m.get("modelship_workqueue_depth", -1),
            queue_scheduled=m.get("modelship_workqueue_scheduled", -1),
            cache={k.split("part=")[1].rstrip("}"): v for k, v in m.items() if k.startswith("modelship_cache_entries{")},
            reconciles=sum(v for k, v in m.items() if k.startswith("modelship_reconciles_total")),
        ))
        if len(result.samples) % max(1, int(60 / sample_s)) == 0:
            s = result.samples[-1]
            progress(f"soak: t={s.t:.0f}s rss={s.rss_mb:.1f}MB threads={s.threads} fds={s.fds} "
                     f"queue={s.queue_depth:.0f}/{s.queue_scheduled:.0f} passes={s.reconciles:.0f}")
        time.sleep(max(0.0, sample_s - (time.monotonic() - start - now)))
    return result
