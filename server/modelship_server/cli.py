"""The ``modelship-server`` command: catch SIGTERM from the first instruction, then start.

In a pod the server is PID 1, and the kernel drops a signal PID 1 has no handler for. The
kubelet sends SIGTERM once: one that lands while Python still imports torch (seconds) would
be lost, and the pod would sit out its whole grace period before SIGKILL (a rolled-back pod,
maybe holding a GPU). Until uvicorn installs its own handlers, SIGTERM/SIGINT end the process
at once: nothing has been served, so there is nothing to drain.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from types import FrameType


_serving = False


def serving_started() -> None:
    """uvicorn is taking over the signals (entry.serve_app calls this just before it runs)."""
    global _serving
    _serving = True


def _exit_before_serving(signum: int, frame: FrameType | None) -> None:
    if _serving:
        # uvicorn restores the handler it found (this one) after its graceful shutdown and
        # raises the signal again: behave as the default disposition would.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    os._exit(128 + signum)


def exit_on_early_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_before_serving)


def main(argv: Sequence[str] | None = None) -> None:
    exit_on_early_signals()
    from .entry import main as run  # torch, uvicorn: the slow part

    run(argv)
