"""Dynamic batching: one asyncio collector, results scattered back, the model run either on
the event loop itself or in one worker thread, whichever the batcher measures to be cheaper.

Requests are queued as jobs (a few rows each). The collector takes the first job, adds
whatever else is queued up to ``max_batch_size`` rows, and runs the concatenation. How long it
waits for companions adapts to the load it just saw:

* the previous batch had one job (a lone caller): dispatch at once, no added latency (and
  when the model runs on the loop, the caller runs it itself: no queue, no task switch);
  whether a caller is alone is asked of ``pending`` when the server can tell (uvicorn creates
  a request's task when its headers arrive, before the app runs it, so a burst is counted
  before the first of it reaches the model), and a direct call now and then goes through the
  queue anyway, so that callers the hint cannot see (gRPC) still end up batched;
* the previous batch had k jobs: wait up to ``max_latency_ms`` for about k rows, because
  those callers are probably sending their next requests right now.

Where the model runs: handing a batch to the worker thread (torch releases the GIL, so the
loop keeps parsing requests meanwhile) costs two thread wake-ups and a loop wake-up, ~50-150 µs
of CPU, and on a busy core the GIL ping-pong between the two threads delays every request. A
tiny model's whole call is cheaper than that, so running it on the loop is both faster and
fairer. ``run_on_loop="auto"`` measures both (the call time of every batch, the hand-off cost
of threaded batches) and runs on the loop while one call costs less than a hand-off (leaving
only once calls cost two); a few threaded batches now and then keep the hand-off figure
current. A process with one CPU keeps a CPU model on the loop below ``_ONE_CPU_LOOP_S``
whatever the hand-off costs: there, a thread overlaps nothing.

A failing batch is retried job by job, so one poisonous input fails only its own caller.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from . import errors

log = logging.getLogger("modelship.batching")

RunBatch = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
"""The model call: inputs (batch first) → outputs (batch first). Blocking."""

RunOnLoop = Literal["auto", "always", "never"]

_PROBE_BATCHES = 8
"""Threaded batches at start-up before ``auto`` decides (the hand-off must be measured)."""
_REPROBE_EVERY = 256
"""While on the loop, one batch in this many goes through the thread to re-measure it."""
_REPROBE_DIRECT = 64
"""One direct (lone-caller) call in this many goes through the queue instead: when others were
in fact ready behind it, they join it and the batcher leaves the direct path."""
_EWMA = 0.1
_OUTLIER = 4.0
"""A sample counts as at most this many times the running average: one call the kernel
interrupted (a millisecond, on a loaded core) must not move the average across the line."""
_ONE_CPU_LOOP_S = 0.002
"""With one CPU for the loop and the model, a thread overlaps nothing (torch's compute and the
loop's parsing take turns on the same core), so the hand-off is pure cost: the model stays on
the loop unless its calls grow this long (then the loop would answer probes late)."""
_LEAVE_LOOP = 2.0
"""The model leaves the loop once its calls cost this many hand-offs, and comes back below
one: measured calls of a tiny model and hand-offs overlap (20-150 µs both), and without the
gap it flipped to the thread and back every few hundred requests, each thread spell adding a
millisecond to the c=1 tail."""


@dataclass(eq=False)
class _Job:
    arrays: list[np.ndarray]
    rows: int
    future: asyncio.Future[list[np.ndarray]]
    enqueued: float
    signature: tuple = field(default=())


class Batcher:
    """Collects jobs into batches for ``run`` and hands each caller its own rows back."""

    def __init__(
        self,
        run: RunBatch,
        *,
        max_batch_size: int,
        max_latency_s: float,
        max_queue: int,
        dynamic: bool = True,
        on_batch: Callable[[int, float], None] | None = None,
        run_on_loop: RunOnLoop = "auto",
        pending: Callable[[], int] | None = None,
        one_cpu: bool = False,
    ) -> None:
        """``pending``: how many requests this process has started and not answered, the
        caller included (a hint; without it the batcher goes by the batches it just ran).
        ``one_cpu``: the model runs on the CPU and the process may use one CPU only."""
        self._run = run
        self._max_rows = max_batch_size if dynamic else 1
        self._max_latency = max_latency_s
        self._max_queue = max_queue
        self._dynamic = dynamic
        self._on_batch = on_batch
        self._mode = run_on_loop
        self._queue: collections.deque[_Job] = collections.deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelship-model")
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._collecting = False
        self._recent_jobs = 1
        self._pending = pending
        self._one_cpu = one_cpu
        self._direct_calls = 0
        self._batches = 0
        self.call_s: float | None = None
        """Measured seconds per model call (moving average)."""
        self.handoff_s: float | None = None
        """Measured seconds a thread hand-off adds to a call (moving average)."""
        self.on_loop = run_on_loop == "always"
        """Where the model runs now (``auto`` revisits this after every batch)."""
        self.running_rows = 0

    # -- callers ---------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Jobs waiting for a model call (not counting the one running)."""
        return len(self._queue)

    async def submit(self, arrays: list[np.ndarray], timeout_s: float) -> list[np.ndarray]:
        """Queue one request's inputs and wait for its outputs.

        Raises ``Overloaded`` when the queue is full, ``InferenceTimeout`` after
        ``timeout_s`` (the job is dropped if it has not started), ``InferenceFailed``
        when the model raised on it.
        """
        if self._closing and self._task is None:
            raise errors.ModelNotReady("server is shutting down")
        queue = self._queue
        if len(queue) >= self._max_queue:
            raise errors.Overloaded(f"inference queue is full ({self._max_queue} requests waiting)")
        # A request larger than max_batch_size is not refused: it runs as a batch of its own
        # (the body-size limit already bounds it).
        rows = int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 1
        if self.on_loop and not queue and not self._collecting and self._alone():
            return self._run_now(arrays, rows)  # a lone caller, a model cheaper than a hand-off
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        signature = tuple((a.dtype.str, a.shape[1:]) for a in arrays)
        queue.append(_Job(arrays, rows, future, loop.time(), signature))
        self._wake()
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise errors.InferenceTimeout(f"inference did not finish within {timeout_s:g}s") from None

    def _alone(self) -> bool:
        """Whether the caller may take the direct path. Every direct call is a batch of one,
        so without a look ahead a burst that arrived after a quiet spell would run one request
        at a time for good (the last batch always had one job): measured, 5.6k requests/s at
        c=32 after a c=1 phase against 14k when batched."""
        if self._pending is not None and self._pending() > 1:
            return False
        if self._recent_jobs > 1:
            return False
        self._direct_calls += 1
        return self._direct_calls % _REPROBE_DIRECT != 0

    def _run_now(self, arrays: list[np.ndarray], rows: int) -> list[np.ndarray]:
        """The direct path: the caller's own task runs the model (nothing else can run
        meanwhile, so no other job is overtaken)."""
        self._recent_jobs = 1
        started = time.perf_counter()
        try:
            outputs = self._run(arrays)
        except errors.ModelshipError:
            raise
        except Exception as exc:
            raise errors.InferenceFailed(f"model raised {type(exc).__name__}: {exc}") from None
        self._measured(rows, time.perf_counter() - started, None)
        return outputs

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="modelship-batcher")

    async def close(self) -> None:
        """Finish every queued job, then stop the worker. New submits get ModelNotReady."""
        self._closing = True
        self._wake()
        if self._task is not None:
            await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _sleep_until(self, deadline: float | None) -> None:
        """Wait for a submit (or close), or until ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        handle = loop.call_at(deadline, self._wake) if deadline is not None else None
        try:
            await self._waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    # -- the collector ---------------------------------------------------------------------

    def _pop_live(self) -> _Job | None:
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():  # timed out or caller went away: drop it
                return job
        return None

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = self._pop_live()
            if first is None:
                if self._closing:
                    return
                await self._sleep_until(None)
                continue
            batch = [first]
            rows = first.rows
            self._collecting = True
            try:
                if self._dynamic and self._max_rows > 1:
                    rows = await self._gather(batch, rows, loop)
                await self._execute(batch, rows, loop)
            finally:
                self._collecting = False

    async def _gather(self, batch: list[_Job], rows: int, loop: asyncio.AbstractEventLoop) -> int:
        deadline = batch[0].enqueued + self._max_latency
        # Expect as many jobs as last time (the callers we just answered are coming back).
        expected = min(self._recent_jobs, self._max_rows)
        spins = 0 if expected > 1 else 2  # a lone caller is not kept waiting for anyone
        while rows < self._max_rows:
            if self._queue:
                job = self._queue[0]
                if job.future.done():
                    self._queue.popleft()
                    continue
                if rows + job.rows > self._max_rows or job.signature != batch[0].signature:
                    break
                self._queue.popleft()
                batch.append(job)
                rows += job.rows
                continue
            if self._closing or loop.time() >= deadline:
                break
            if len(batch) < expected:
                await self._sleep_until(deadline)
            elif spins < 2:
                # Requests already in the socket buffers need a loop turn or two to get here.
                spins += 1
                await asyncio.sleep(0)
            else:
                break
        return rows

    async def _execute(self, batch: list[_Job], rows: int, loop: asyncio.AbstractEventLoop) -> None:
        self._recent_jobs = len(batch)
        if len(batch) == 1:
            inputs = batch[0].arrays
        else:
            inputs = [np.concatenate(parts) for parts in zip(*(job.arrays for job in batch), strict=True)]
        self.running_rows = rows
        try:
            if self._threaded_next():
                started = time.perf_counter()
                outputs, call_s = await loop.run_in_executor(self._executor, _timed, self._run, inputs)
                self._measured(rows, call_s, time.perf_counter() - started - call_s)
            else:
                started = time.perf_counter()
                outputs = self._run(inputs)
                self._measured(rows, time.perf_counter() - started, None)
        except Exception as exc:  # the model raised: isolate the culprit(s)
            if len(batch) == 1:
                _fail(batch[0], exc)
            else:
                log.warning("batch of %d jobs failed (%s); retrying one by one", len(batch), exc)
                for job in batch:
                    await self._execute([job], job.rows, loop)
            return
        finally:
            self.running_rows = 0
        _scatter(batch, outputs)

    # -- where the model runs ------------------------------------------------------------------

    def _threaded_next(self) -> bool:
        if self._mode != "auto":
            return self._mode == "never"
        return not self.on_loop or self._batches % _REPROBE_EVERY == 0

    def _measured(self, rows: int, call_s: float, handoff_s: float | None) -> None:
        self._batches += 1
        self.call_s = _average(self.call_s, call_s)
        if handoff_s is not None:
            self.handoff_s = _average(self.handoff_s, max(handoff_s, 0.0))
        if self._mode == "auto" and self._batches >= _PROBE_BATCHES and self.handoff_s is not None:
            line = _ONE_CPU_LOOP_S if self._one_cpu else self.handoff_s
            on_loop = self.call_s < line * (_LEAVE_LOOP if self.on_loop else 1.0)
            if on_loop != self.on_loop:
                log.info(
                    "model calls now run %s (call %.0f µs, thread hand-off %.0f µs)",
                    "on the event loop" if on_loop else "in the model thread",
                    self.call_s * 1e6,
                    self.handoff_s * 1e6,
                )
                self.on_loop = on_loop
        if self._on_batch is not None:
            self._on_batch(rows, call_s)


def _average(average: float | None, sample: float) -> float:
    """Moving average, each sample clamped to ``_OUTLIER`` times it."""
    if average is None:
        return sample
    return average + _EWMA * (min(sample, _OUTLIER * average) - average)


def _timed(run: RunBatch, inputs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], float]:
    started = time.perf_counter()
    outputs = run(inputs)
    return outputs, time.perf_counter() - started


def _fail(job: _Job, exc: Exception) -> None:
    if job.future.done():
        return
    if isinstance(exc, errors.ModelshipError):
        job.future.set_exception(exc)
    else:
        job.future.set_exception(errors.InferenceFailed(f"model raised {type(exc).__name__}: {exc}"))


def _scatter(batch: list[_Job], outputs: list[np.ndarray]) -> None:
    if len(batch) == 1:
        if not batch[0].future.done():
            batch[0].future.set_result(outputs)
        return
    total = sum(job.rows for job in batch)
    if any(out.ndim == 0 or out.shape[0] != total for out in outputs):
        shapes = [list(out.shape) for out in outputs]
        for job in batch:
            _fail(job, errors.InferenceFailed(f"model outputs {shapes} are not batch-first for {total} rows"))
        return
    offset = 0
    for job in batch:
        end = offset + job.rows
        if not job.future.done():
            job.future.set_result([out[offset:end] for out in outputs])
        offset = end
