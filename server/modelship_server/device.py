"""Device choice (auto | cpu | cuda | cuda:N), GPU facts for health/metrics, CPU threads."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class DevicePlan:
    """Where the model will run, or why it cannot run at all.

    ``unavailable`` is a human sentence when a GPU was required (or asked for by name) and
    none is visible; the server then stays up, live but not ready, with that reason.
    """

    device: torch.device
    dtype: torch.dtype = torch.float32
    unavailable: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def plan_device(
    requested: str,
    *,
    require_gpu: bool,
    gpu_fallback: bool,
    half_precision: bool,
    cuda_available: bool | None = None,
    cuda_count: int | None = None,
) -> DevicePlan:
    """Decide the device. ``cuda_available``/``cuda_count`` are injectable for tests."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    count = (torch.cuda.device_count() if available else 0) if cuda_count is None else cuda_count
    notes: list[str] = []
    if requested == "cpu" and require_gpu:
        notes.append("require_gpu ignored: device=cpu was asked for explicitly")
        require_gpu = False
    wants_gpu = require_gpu or requested.startswith("cuda")
    if requested == "cpu":
        target = torch.device("cpu")
    elif requested == "auto":
        target = torch.device("cuda:0") if available else torch.device("cpu")
    else:
        index = int(requested.split(":", 1)[1]) if ":" in requested else 0
        target = torch.device(f"cuda:{index}")
        if available and index >= count:
            reason = f"device {requested} requested but only {count} CUDA device(s) visible"
            return DevicePlan(torch.device("cpu"), unavailable=reason)
    if wants_gpu and not available:
        why = "a GPU is required" if require_gpu else f"device={requested} was requested"
        reason = (
            f"{why} but torch.cuda.is_available() is False "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}, "
            f"torch {torch.__version__}, built for CUDA {torch.version.cuda})"
        )
        if not gpu_fallback:
            return DevicePlan(
                torch.device("cpu"), unavailable=reason + "; set gpu_fallback=true to serve on CPU"
            )
        notes.append(reason + "; serving on CPU because gpu_fallback=true")
        target = torch.device("cpu")
    dtype = torch.float32
    if half_precision:
        if target.type == "cuda":
            dtype = torch.float16
        else:
            notes.append("half_precision ignored on CPU")
    return DevicePlan(target, dtype=dtype, notes=notes)


def gpu_facts(device: torch.device) -> dict[str, object]:
    """Name and memory of a CUDA device, for /health and /metrics. Empty on CPU."""
    if device.type != "cuda":
        return {}
    props = torch.cuda.get_device_properties(device)
    return {
        "gpu_name": props.name,
        "gpu_memory_total_bytes": int(props.total_memory),
        "gpu_memory_allocated_bytes": int(torch.cuda.memory_allocated(device)),
        "gpu_memory_reserved_bytes": int(torch.cuda.memory_reserved(device)),
        "gpu_capability": f"{props.major}.{props.minor}",
    }


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 cfs files), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def usable_cpus() -> int:
    """CPUs this process can really use: affinity mask, capped by the cgroup quota.

    A pod with ``limits.cpu: 2`` on a 64-core node sees 64 cores in ``os.cpu_count()``;
    torch would start 64 threads and be throttled. Rounded up, at least 1.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def configure_threads(requested: int) -> int:
    """Set torch's intra-op threads (and inter-op to 1: one model call at a time runs)."""
    threads = requested or usable_cpus()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set once in this process (tests create several apps)
    return threads
