"""Several front-end processes (``workers``), and optionally one model process, under a
supervisor: scaling past one core and one event loop.

Layout: the supervisor (the container's PID 1) starts N front ends, each a full server
(uvicorn, the hot path, gRPC when on) on the same port(s): every front end binds its own
listening socket with SO_REUSEPORT and the kernel spreads connections over them. With
``model_process=per-worker`` (CPU) each front end loads the model, with its share of the
cores; with ``shared`` (GPU) one model process loads it and front ends hand it tensors
(``model_process.py``).

One answer for the pod: every process keeps its state in a slot of a shared board
(``board.py``), and any front end answers /health, /v2/health/ready and gRPC readiness for
all of them; /metrics adds every process's numbers up.

Lifecycle: SIGTERM to the supervisor goes to every front end (each turns not-ready at once,
waits ``shutdown_delay_s``, finishes in-flight requests); when they are gone, the model
process drains its queue and exits. A child that dies on its own takes the others down and the
supervisor exits with its code (the kubelet restarts the container; with
``exit_on_load_failure`` the failing child has written the termination message).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

from . import device as device_mod
from .board import SLOT_BYTES, Board
from .settings import Settings

log = logging.getLogger("modelship.workers")

MAX_AUTO_WORKERS = 8
ARENA_BYTES = 16 * 1024 * 1024
"""Shared memory per front end for tensors (``/dev/shm``: a pod's default is 64 MiB)."""


def worker_count(settings: Settings) -> int:
    """``workers`` resolved: 0 means one per usable CPU (cgroup quota, affinity), at most 8."""
    return settings.workers or min(MAX_AUTO_WORKERS, device_mod.usable_cpus())


def shared_model(settings: Settings) -> bool:
    if settings.model_process != "auto":
        return settings.model_process == "shared"
    plan = device_mod.plan_device(
        settings.device,
        require_gpu=settings.require_gpu,
        gpu_fallback=settings.gpu_fallback,
        half_precision=settings.half_precision,
    )
    return plan.is_cuda


def listening_socket(host: str, port: int) -> socket.socket:
    """A listener that shares its port with the other front ends' (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _child_settings(settings: Settings, **changes: Any) -> Settings:
    return Settings(**{**settings.model_dump(), **changes})


def _die_with(supervisor: int) -> None:
    """A child must not outlive its supervisor. SIGKILLed (by the OOM killer, by a test's
    cleanup), the supervisor cannot stop its children, and they went on serving its port with
    nobody watching (found as orphaned front ends left by the test suite, each still holding a
    model and a port). On Linux the kernel sends this process SIGTERM when the supervisor dies;
    one that died before we asked is seen through our parent's pid."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor:
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _orphan_cleanup(supervisor: int, rundir: str) -> None:
    """The supervisor removes the run directory (its sockets) when it stops its children; one
    that was killed cannot, so each orphaned child, on its way out, removes it instead."""
    if os.getppid() != supervisor:
        shutil.rmtree(rundir, ignore_errors=True)


def _front_end(settings_dump: dict[str, Any], index: int, names: list[str], buffer: Any, rundir: str,
               shared: bool, supervisor: int) -> None:  # fmt: skip
    """Entry of a front-end process (spawned: nothing inherited but the arguments)."""
    _die_with(supervisor)
    from . import entry
    from .app import create_app
    from .dataplane import DataPlane
    from .metrics import Metrics
    from .model_process import SharedModelDataPlane

    settings = Settings(**settings_dump)
    entry.configure_logging(settings.log_level)
    run = Path(rundir)
    board = Board(buffer, names, index)
    peers = [run / f"metrics-{i}.sock" for i in range(len(names)) if i != index]
    if shared:
        dataplane: DataPlane = SharedModelDataPlane(
            settings, Metrics(), board=board, peer_metrics=peers,
            socket_path=run / "model.sock", arena_bytes=ARENA_BYTES,
        )  # fmt: skip
    else:
        dataplane = DataPlane(settings, Metrics(), board=board, peer_metrics=peers)
    app = create_app(settings, dataplane, snapshot_socket=run / f"metrics-{index}.sock")

    def last_signal(signum: int, frame: Any) -> None:
        # uvicorn, done draining, restores the handler it found and raises the signal again:
        # this one. The process still ends by that signal, as the supervisor expects.
        _orphan_cleanup(supervisor, rundir)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, last_signal)
    try:
        entry.serve_app(app, settings, sockets=[listening_socket(settings.host, settings.port)])
    finally:
        _orphan_cleanup(supervisor, rundir)


def _model_process(settings_dump: dict[str, Any], index: int, names: list[str], buffer: Any, rundir: str,
                   supervisor: int) -> None:  # fmt: skip
    """Entry of the model process: load, batch, serve the front ends on a Unix socket."""
    _die_with(supervisor)
    import asyncio

    import uvloop

    from . import entry
    from .board import serve_snapshots
    from .dataplane import DataPlane
    from .metrics import Metrics
    from .model_process import ModelServer

    settings = Settings(**settings_dump)
    entry.configure_logging(settings.log_level)
    run = Path(rundir)

    async def main() -> None:
        dataplane = DataPlane(settings, Metrics(), board=Board(buffer, names, index))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, lambda: None)  # the supervisor decides
        snapshots = await serve_snapshots(run / f"metrics-{index}.sock", dataplane.metrics)
        await dataplane.start()
        await dataplane.wait_loaded()
        server = await ModelServer(dataplane).serve(run / "model.sock") if dataplane.model else None
        await stop.wait()
        if server is not None:
            server.close()
        snapshots.close()
        await dataplane.stop()

    try:
        uvloop.run(main())
    finally:
        _orphan_cleanup(supervisor, rundir)


def supervise(settings: Settings) -> int:
    """Start the processes, forward SIGTERM, exit with the first failing child's code."""
    count = worker_count(settings)
    shared = shared_model(settings)
    names = [f"front end {i + 1}/{count}" for i in range(count)] + (["model process"] if shared else [])
    context = multiprocessing.get_context("spawn")
    buffer = context.RawArray("c", len(names) * SLOT_BYTES)
    rundir = tempfile.mkdtemp(prefix="modelship-")
    threads = settings.num_threads
    if not shared and not threads:  # per-worker copies share the cores
        threads = max(1, device_mod.usable_cpus() // count)
    front = _child_settings(settings, workers=1, num_threads=threads)
    children: list[SpawnProcess] = []
    model: SpawnProcess | None = None
    if shared:
        model = context.Process(
            target=_model_process, args=(settings.model_dump(), count, names, buffer, rundir, os.getpid()), name="model"
        )
        model.start()
    for index in range(count):
        child = context.Process(
            target=_front_end,
            args=(front.model_dump(), index, names, buffer, rundir, shared, os.getpid()),
            name=f"front-end-{index}",
        )
        child.start()
        children.append(child)
    log.info(
        "%d front ends on port %d%s (%s)", count, settings.port,
        f" and gRPC {settings.grpc_port}" if settings.grpc_port else "",
        "one shared model process" if shared else f"a model per front end, {threads} thread(s) each",
    )  # fmt: skip
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive() and child.pid:
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    while any(child.is_alive() for child in children):
        for child in children + ([model] if model else []):
            if not child.is_alive() and child.exitcode not in (0, -signal.SIGTERM) and not stopping:
                log.error("%s exited with %s; stopping the others", child.name, child.exitcode)
                code = child.exitcode if child.exitcode and child.exitcode > 0 else 1
                on_signal(signal.SIGTERM, None)
        time.sleep(0.2)
    if model is not None:
        if model.is_alive() and model.pid:
            os.kill(model.pid, signal.SIGTERM)
        model.join(timeout=settings.graceful_timeout_s)
        if model.is_alive():
            model.kill()
    for child in children:
        child.join()
    for leftover in Path(rundir).iterdir():
        leftover.unlink(missing_ok=True)
    os.rmdir(rundir)
    return code
