"""Loaded by bench/server/profile.py through PYTHONPATH: records every garbage-collector
pause of the profiled server between SIGUSR1 and SIGUSR2 and writes the totals to $BENCH_GC_OUT
(on SIGUSR2, and at exit).
Not part of the server; the server's behaviour is unchanged."""

import atexit
import gc
import json
import os
import signal
import time

_out = os.environ.get("BENCH_GC_OUT")
if _out:
    _stats = {str(g): {"count": 0, "total_s": 0.0, "max_s": 0.0} for g in range(3)}
    _started = [0.0]

    def _callback(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        took = time.perf_counter() - _started[0]
        entry = _stats[str(info["generation"])]
        entry["count"] += 1
        entry["total_s"] += took
        entry["max_s"] = max(entry["max_s"], took)

    gc.callbacks.append(_callback)

    def _dump() -> None:
        with open(_out, "w") as fh:
            json.dump({"generations": _stats, "frozen": gc.get_freeze_count()}, fh)

    atexit.register(_dump)

    def _on_term(signum: int, frame: object) -> None:
        # uvicorn restores this handler after its graceful shutdown and re-raises SIGTERM,
        # which would otherwise end the process before atexit runs.
        _dump()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, _on_term)

    def _reset(signum: int, frame: object) -> None:  # SIGUSR1: the measured window starts
        for entry in _stats.values():
            entry.update(count=0, total_s=0.0, max_s=0.0)

    signal.signal(signal.SIGUSR1, _reset)
    signal.signal(signal.SIGUSR2, lambda signum, frame: _dump())  # SIGUSR2: it ends
