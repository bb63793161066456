"""The data plane: the model's lifecycle and the one path every protocol's inference takes.

States: ``loading`` → ``ready``, or ``failed`` / ``unavailable`` (GPU required, none there)
with a reason; ``draining`` overlays any of them once SIGTERM arrived. Protocol adapters
(v1, v2) only translate JSON to arrays and back; they all call :meth:`DataPlane.infer`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from . import board as board_mod
from . import device as device_mod
from . import errors, loading, sources
from .batching import Batcher
from .board import Board
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("modelship.dataplane")

EXIT_LOAD_FAILED = 3
"""Process exit code with ``exit_on_load_failure`` (distinct from crashes and signals)."""


T = TypeVar("T")


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a daemon thread. asyncio.to_thread's executor threads are joined when the
    interpreter exits, so a SIGTERM during a long load (or a hung download) would keep the
    process alive until the kubelet's SIGKILL; a load still running at exit is abandoned."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task as is
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=run, name="modelship-load", daemon=True).start()
    return await future


def _settle(future: asyncio.Future[T], result: T | None, exc: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled (shutdown)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]


class DataPlane:
    """Owns the model, its batcher and the readiness answer."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        board: Board | None = None,
        peer_metrics: Sequence[Path] = (),
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.board = board
        """Set with several processes: readiness is answered for all of them (board.py)."""
        self.peer_metrics = list(peer_metrics)
        """The other processes' snapshot sockets, added into /metrics."""
        self.plan = device_mod.plan_device(
            settings.device,
            require_gpu=settings.require_gpu,
            gpu_fallback=settings.gpu_fallback,
            half_precision=settings.half_precision,
        )
        self.state = "loading"
        self.reason: str | None = "model is loading"
        self.draining = False
        self.model: loading.ServedModel | None = None
        self.batcher: Batcher | None = None
        self.pending: Callable[[], int] | None = None
        """Requests the HTTP server has started and not answered (set by ``entry.watch_requests``
        before the server starts): the batcher's hint that a caller is not alone."""
        self.threads = 0
        self._load_task: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self.download = sources.Progress()
        """The model file's download (http(s), s3): /health shows it while it runs and after."""

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Called from the lifespan hook: plan threads, then load in the background so the
        process answers /health/live (and /health with "loading") while weights stream in."""
        self.threads = device_mod.configure_threads(self.settings.num_threads)
        self.metrics.set_device(self.plan.device, self.plan.dtype, self.threads)
        self.metrics.set_model(self.settings.model_name, ready=False)
        for note in self.plan.notes:
            log.warning("%s", note)
        if self.plan.unavailable:
            self._set("unavailable", self.plan.unavailable)
            log.error("not serving: %s", self.plan.unavailable)
            return
        self._load_task = asyncio.get_running_loop().create_task(self._load(), name="modelship-load")

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def _load(self) -> None:
        s = self.settings
        started = time.perf_counter()
        try:
            model = await _in_daemon_thread(self._load_blocking)
        except (sources.SourceError, loading.LoadError) as exc:
            self._load_failed(str(exc))
            return
        except Exception as exc:  # a handler's load() may raise anything; report, don't crash
            log.exception("model %s failed to load", s.model_name)
            self._load_failed(f"{type(exc).__name__}: {exc}")
            return
        self.model = model
        self.batcher = Batcher(
            model.run,
            max_batch_size=model.batch_rows(s.max_batch_size),
            max_latency_s=s.max_latency_ms / 1000,
            max_queue=s.max_queue,
            dynamic=model.dynamic_batch,
            on_batch=self.metrics.observe_batch,
            run_on_loop=s.run_on_loop,
            pending=self.pending,
            one_cpu=self.plan.device.type == "cpu" and device_mod.usable_cpus() == 1,
        )
        self.batcher.start()
        self.metrics.watch_queue(lambda: self.batcher.depth if self.batcher else 0)
        seconds = time.perf_counter() - started
        self.metrics.set_model(s.model_name, ready=True, load_seconds=seconds)
        # Everything alive now (torch's modules, the weights' Python objects) lives as long as
        # the process: take it out of the collector's view, so a full collection walks only
        # what requests allocate (on one core it walked ~10^6 objects: tens of ms at c=32).
        gc.collect()
        gc.freeze()
        self._set("ready", None)
        log.info(
            "model %s ready on %s (%s) in %.2fs; inputs %s outputs %s",
            s.model_name,
            self.plan.device,
            str(self.plan.dtype).removeprefix("torch."),
            seconds,
            [i.as_metadata() for i in model.inputs],
            [o.as_metadata() for o in model.outputs],
        )

    def _load_failed(self, reason: str) -> None:
        self._set("failed", reason)
        log.error("model %s failed to load: %s", self.settings.model_name, reason)
        if not self.settings.exit_on_load_failure:
            return
        try:
            with open(self.settings.termination_log, "w") as fh:
                fh.write(f"model {self.settings.model_name} failed to load: {reason}\n")
        except OSError:
            pass
        logging.shutdown()  # flush: os._exit skips it
        os._exit(EXIT_LOAD_FAILED)

    def _load_blocking(self) -> loading.ServedModel:
        s = self.settings
        if s.model_uri is None and s.model_format != "handler":
            raise loading.LoadError("no model configured: set MODELSHIP_MODEL_URI")
        path: Path | None = None
        if s.model_uri is not None:
            path = sources.resolve(
                s.model_uri,
                cache_dir=s.cache_dir,
                sha256=s.model_sha256,
                require_sha256=s.require_sha256,
                timeout_s=s.download_timeout_s,
                s3=sources.S3Options(s.s3_endpoint, s.s3_region, s.s3_path_style),
                progress=self.download,
            )
        model = loading.load_model(
            path,  # type: ignore[arg-type]
            name=s.model_name,
            fmt=s.model_format,
            plan=self.plan,
            handler=s.model_handler,
            input_shape=s.shape(),
            input_datatype=s.input_datatype,
        )
        if s.warmup:
            model.warm_up(model.batch_rows(s.max_batch_size))
        return model

    def begin_drain(self) -> None:
        """SIGTERM: readiness answers 503 from now on; requests keep being served."""
        if not self.draining:
            self.draining = True
            self._publish()
            log.info("draining: readiness is now 503; finishing in-flight and queued requests")

    async def stop(self) -> None:
        """Lifespan shutdown: finish queued work, then release the model."""
        self.begin_drain()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self.batcher is not None:
            await self.batcher.close()
        self.metrics.set_model(self.settings.model_name, ready=False)
        self.batcher = None  # drop every reference to the weights before emptying the cache
        self.model = None
        self._load_task = None
        gc.unfreeze()  # let the weights (and extensions' objects) be collected at exit
        if self.plan.is_cuda:
            torch.cuda.empty_cache()

    def _set(self, state: str, reason: str | None) -> None:
        self.state = state
        self.reason = reason
        self._publish()

    def _publish(self) -> None:
        if self.board is not None:
            self.board.publish(self.state, self.reason, self.draining)

    # -- readiness ----------------------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self.draining or (self.board is not None and self.board.draining)

    @property
    def ready(self) -> bool:
        """One answer for the whole pod: this process serves, and so does every other one."""
        if self.state != "ready" or self.shutting_down:
            return False
        return self.board is None or self.board.first_not_ready() is None

    def not_ready_reason(self) -> str:
        if self.shutting_down:
            return "server is shutting down (SIGTERM received)"
        if self.state == "loading" and self.download.active:
            return self.download.describe()
        if self.state != "ready":
            return self.reason or self.state
        return (self.board.first_not_ready() if self.board else None) or self.state

    def health(self) -> dict[str, Any]:
        """The body of /health: enough for a human to see why a pod is not ready."""
        model = self.model
        body: dict[str, Any] = {
            "status": "draining" if self.shutting_down else self.state,
            "ready": self.ready,
            "reason": None if self.ready else self.not_ready_reason(),
            "model": {
                "name": self.settings.model_name,
                "format": self.settings.model_format,
                "uri": self.settings.model_uri,
                "load_seconds": round(model.load_seconds, 3) if model else None,
                "inputs": [i.as_metadata() for i in model.inputs] if model else [],
                "outputs": [o.as_metadata() for o in model.outputs] if model else [],
            },
            "device": {
                "device": str(self.plan.device),
                "dtype": str(self.plan.dtype).removeprefix("torch."),
                "threads": self.threads,
                "torch_version": torch.__version__,
                "cuda_available": torch.cuda.is_available(),
                **device_mod.gpu_facts(self.plan.device),
            },
            "batching": {
                "max_batch_size": model.batch_rows(self.settings.max_batch_size)
                if (model and model.dynamic_batch)
                else 1,
                "max_latency_ms": self.settings.max_latency_ms,
                "queue_depth": self.batcher.depth if self.batcher else 0,
            },
            "uptime_seconds": round(time.monotonic() - self._started, 1),
        }
        if self.download.state != "idle":
            body["model"]["download"] = self.download.as_dict()
        if self.plan.notes:
            body["notes"] = list(self.plan.notes)
        if self.board is not None:
            body["processes"] = [
                dict(zip(("name", "state", "reason", "draining"), (name, *self.board.read(i)), strict=True))
                for i, name in enumerate(self.board.names)
            ]
        return body

    # -- inference ----------------------------------------------------------------------------

    def model_named(self, name: str) -> loading.ServedModel:
        """The served model by name; 404 for another name, 503 while it cannot serve."""
        if name != self.settings.model_name:
            raise errors.ModelNotFound(
                f"model {name!r} is not served here (this server serves {self.settings.model_name!r})"
            )
        if self.model is None or self.state != "ready":
            raise errors.ModelNotReady(f"model {name!r} is not ready: {self.reason or self.state}")
        return self.model

    async def infer(self, name: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.model_named(name)
        batcher = self.batcher
        if batcher is None:
            raise errors.ModelNotReady(f"model {name!r} is not ready")
        return await batcher.submit(arrays, self.settings.request_timeout_s)

    async def render_metrics(self) -> bytes:
        """/metrics: this process's numbers, plus every other process's."""
        others = await board_mod.gather_snapshots(self.peer_metrics) if self.peer_metrics else []
        return self.metrics.render(others)
