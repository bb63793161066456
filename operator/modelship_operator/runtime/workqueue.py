"""A work queue of object keys, with the semantics of client-go's workqueue.

Watch events only say "look at this ModelDeployment again"; the queue turns any number of them
into as few reconcile passes as correctness allows:

- a key waiting in the queue is there once, however many events named it (coalescing);
- a key being processed is never handed to a second worker; if it is added meanwhile, it is
  processed once more after the current pass (the pass may have read state from before the
  event);
- ``add_after`` schedules a key for later (resync, rollout polls, retries); one due time per
  key, the earliest wins, and an ``add`` makes a scheduled key due now;
- ``add(key, urgent=True)`` puts a key in a lane served before the others (a new object's
  first step, while older objects' status refreshes wait); while urgent keys keep arriving
  (less than ``urgent_quiet`` seconds apart), the other lane waits altogether, so a burst of
  new objects gets the API server to itself.

Thread-safe; ``add`` never blocks, so kopf's event loop can call it directly.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):
    """The queue was shut down: the worker should exit."""


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic, urgent_quiet: float = 0.0) -> None:
        self._clock = clock
        self.urgent_quiet = urgent_quiet
        self._last_urgent = float("-inf")
        self._cond = threading.Condition()
        self._ready: deque[K] = deque()
        self._urgent: deque[K] = deque()
        self._queued: set[K] = set()  # in _ready
        self._active: set[K] = set()  # handed to a worker
        self._again: set[K] = set()  # added while active
        self._due: dict[K, float] = {}  # scheduled for later
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._closed = False

    def __len__(self) -> int:
        """Keys due now or running (not the ones scheduled for later)."""
        with self._cond:
            return len(self._queued) + len(self._active)

    def scheduled(self) -> int:
        with self._cond:
            return len(self._due)

    def add(self, key: K, *, urgent: bool = False) -> None:
        with self._cond:
            self._add(key, urgent)

    def _add(self, key: K, urgent: bool = False) -> None:
        if self._closed:
            return
        self._due.pop(key, None)  # due now; the stale heap entry is skipped later
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            (self._urgent if urgent else self._ready).append(key)
            self._cond.notify()
        elif urgent and key not in self._urgent:
            self._ready.remove(key)
            self._urgent.append(key)
        if urgent:
            self._last_urgent = self._clock()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._closed or key in self._queued or key in self._again:
                return  # already due sooner
            due = self._clock() + delay
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._seq), key))
            self._cond.notify()

    def forget(self, key: K) -> None:
        """Drop a key's scheduled run (its object is gone)."""
        with self._cond:
            self._due.pop(key, None)

    def get(self, timeout: float | None = None) -> K | None:
        """The next key due, marked active until ``done``; None on timeout. Raises ShutDown."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise ShutDown
                self._promote()
                quiet_until = self._last_urgent + self.urgent_quiet
                lane = self._urgent or (self._ready if self._clock() >= quiet_until else None)
                if lane:
                    key = lane.popleft()
                    self._queued.discard(key)
                    self._active.add(key)
                    return key
                wait = self._heap[0][0] - self._clock() if self._heap else None
                if self._ready:  # held back by a burst of urgent keys
                    held = quiet_until - self._clock()
                    wait = held if wait is None else min(wait, held)
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(None if wait is None else max(wait, 0.001))

    def _promote(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            if self._due.get(key) == due:  # else: superseded or made due already
                del self._due[key]
                self._add(key)

    def done(self, key: K) -> None:
        """The pass for ``key`` finished; a key added meanwhile goes back in the queue."""
        with self._cond:
            self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._add(key)

    def shut_down(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
