"""Watch events in, reconcile passes out: the work queue, its workers, and what follows a pass.

The kopf handlers (:mod:`~modelship_operator.runtime.watches`) call the ``*_event`` methods on
kopf's event loop; they only record the object in the :class:`~.cache.Store` and put the
ModelDeployment it concerns on the :class:`~.workqueue.WorkQueue` (any number of events for one
queued object become one pass). Worker threads take keys and run one pass each;
``Reconciler.reconcile`` returns a :class:`~modelship_operator.reconcile.Result`, and what
follows comes from that one answer:

- ``requeue_after`` (rollout evidence being established) or the resync (``resync_seconds``,
  the safety net for a missed event), whichever is sooner;
- after an API error, a retry with exponential backoff from ``retry_delay_seconds``;
- an invalid spec is reported in status + an Event and waits for a change (or the resync).

Only the leader runs passes (``gate``: :meth:`.leader.LeaderElector.holding`, or always true
without leader election); a standby keeps watching, and when it becomes leader
(:meth:`Controller.lead`) every ModelDeployment it knows is queued.

Speed-up for a burst of new objects (knob: ``burst_hold_seconds``): a new ModelDeployment's key
goes to the queue's urgent lane and its first step is a :class:`~.head_start.HeadStart`
(its Deployment only); the full pass follows behind the other new objects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from modelship_operator import kube
from modelship_operator.core import api, builders
from modelship_operator.reconcile import Reconciler, Result, Untold
from modelship_operator.runtime import metrics
from modelship_operator.runtime.cache import CachedCluster, Store
from modelship_operator.runtime.head_start import HeadStart
from modelship_operator.runtime.settings import Settings
from modelship_operator.runtime.workqueue import ShutDown, WorkQueue

logger = logging.getLogger(__name__)

#: The finalizer kopf put on every ModelDeployment while modelship used kopf timers (<= 0.1.0).
LEGACY_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
#: kopf's bookkeeping annotations from the same versions.
LEGACY_ANNOTATIONS = ("modelship.io/last-handled-configuration", "modelship.io/reconcile")

Key = tuple[str, str]


def run_pass(reconciler: Reconciler, namespace: str, name: str, *, trigger: str, untold: Untold | None = None) -> Result:
    """One reconcile pass, counted in the metrics. Raises ``kube.Retryable`` on API trouble."""
    started = time.monotonic()
    result = "error"
    try:
        outcome = reconciler.reconcile(namespace, name, untold=untold)
        result = "problem" if outcome.problem else "skipped" if outcome.skipped else "ok"
        if outcome.plan is not None:
            metrics.observe_rollout(outcome.plan)
        return outcome
    except kube.Retryable:
        result = "retry"
        raise
    finally:
        metrics.RECONCILES.labels(trigger=trigger, result=result).inc()
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)


class Controller:
    """The cache, the work queue and the worker threads between kopf and the reconciler."""

    def __init__(
        self, client: Any, settings: Settings, *, reconciler: Reconciler | None = None,
        gate: Callable[[], bool] = lambda: True,
    ) -> None:
        self.client = client
        self.settings = settings
        self.store = Store(pod_list_ttl=settings.resync_seconds)
        self.queue: WorkQueue[Key] = WorkQueue(urgent_quiet=settings.burst_hold_seconds)
        cluster = CachedCluster(client, self.store, api.KIND)
        self.reconciler = reconciler or Reconciler(cluster)
        self.head_start = HeadStart(self.reconciler, cluster if reconciler is None else None)
        self.gate = gate
        self._why: dict[Key, str] = {}
        self._new: set[Key] = set()  # queued as new: its first step is a head start
        self._legacy: set[Key] = set()  # carries what 0.1.0's kopf timers left (seen in its event)
        self._failures: dict[Key, int] = {}
        self._threads: list[threading.Thread] = []

    # -- fed by kopf (event loop; must not block) ----------------------------------------

    def enqueue(self, key: Key, why: str, *, new: bool = False) -> None:
        self._why[key] = why
        if new:
            self._new.add(key)
        self.queue.add(key, urgent=new)

    def model_deployment_event(self, type_: str | None, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if type_ == "DELETED":
            self.store.delete(obj, kind=api.KIND)
            self.store.forget_pods(*key)
            self.queue.forget(key)
            self.head_start.forget(key)
            self._failures.pop(key, None)
            self._why.pop(key, None)
            self._legacy.discard(key)
            return
        if _has_legacy(meta):
            self._legacy.add(key)
        if self.store.put(obj, kind=api.KIND):  # not the echo of our own status write
            why = "resume" if type_ is None else "update" if meta.get("generation", 1) > 1 else "create"
            # No Deployment seen yet: a new object, whose Deployment is created first.
            new = not self.store.knows("Deployment", key[0], builders.child_name(key[1]))
            self.enqueue(key, why, new=new)

    def child_event(self, kind: str, type_: str | None, obj: Mapping[str, Any]) -> None:
        owner = builders.owner_name(obj)
        if type_ == "DELETED":
            self.store.delete(obj, kind=kind)
            news = True
        else:
            news = self.store.put(obj, kind=kind)  # False: the echo of our own apply
        if owner and news:
            self.enqueue((str((obj.get("metadata") or {}).get("namespace")), owner), "child")

    def pod_event(self, type_: str | None, obj: Mapping[str, Any]) -> None:
        owner = builders.owner_name(obj)
        if owner:
            self.store.pod_event(type_, obj, owner)
            self.enqueue((str((obj.get("metadata") or {}).get("namespace")), owner), "pod")

    # -- leadership ---------------------------------------------------------------------

    def lead(self) -> None:
        """This replica became the leader: pass every ModelDeployment it knows (what a standby
        saw was not acted on; what it will see from now on is)."""
        for namespace, name in self.store.names(api.KIND):
            self.enqueue((namespace, name), "leader")

    # -- workers ----------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self.queue.shut_down()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
        self._threads.clear()

    def _work(self) -> None:
        while True:
            try:
                key = self.queue.get()
            except ShutDown:
                return
            if key is None:  # (only a get with a timeout returns None)
                continue
            try:
                self.process(key)
            finally:
                self.queue.done(key)

    def process(self, key: Key) -> None:
        """One pass for ``key`` (or its head start) and what follows it."""
        why = self._why.pop(key, "resync")
        new = key in self._new
        self._new.discard(key)
        if not self.gate():
            return  # a standby: the leader does the work; lead() queues everything on take-over
        namespace, name = key
        try:
            if key in self._legacy:
                self._clean_legacy(namespace, name)
            if new and self._head_start(key, why):
                return
            result = run_pass(self.reconciler, namespace, name, trigger=why, untold=self.head_start.take(key))
        except kube.NotLeader:
            return  # lost the Lease during the pass: the next leader passes everything again
        except kube.Retryable as error:
            self._retry(key, f"{error}")
            return
        except Exception as error:  # a bug: logged with its traceback, retried with backoff
            logger.exception("%s/%s: reconcile failed", namespace, name)
            self._retry(key, f"{type(error).__name__}: {error}")
            return
        self._failures.pop(key, None)
        if result.skipped and not self.store.knows(api.KIND, namespace, name):
            return  # gone
        resync = self.settings.resync_seconds
        if result.requeue_after is not None and result.requeue_after < resync:
            self._schedule(key, result.requeue_after, "rollout")
        else:
            self._schedule(key, resync, "resync")

    def _head_start(self, key: Key, why: str) -> bool:
        """Create a new object's Deployment only; True when the full pass must follow."""
        untold = self.head_start.create(*key)
        metrics.RECONCILES.labels(trigger=why, result="partial" if untold else "skipped").inc()
        if untold is None:
            return False  # nothing to create (or a problem the full pass reports): the full pass now
        self.enqueue(key, why)  # the rest of the first pass, behind the other new objects
        return True

    def _schedule(self, key: Key, delay: float, why: str) -> None:
        self._why.setdefault(key, why)
        self.queue.add_after(key, delay)

    def _retry(self, key: Key, error: str) -> None:
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = min(self.settings.retry_delay_seconds * 2 ** (failures - 1), self.settings.retry_max_seconds)
        logger.warning("%s/%s: %s; retrying in %.0f s", key[0], key[1], error, delay)
        self._why[key] = "retry"
        self.queue.add_after(key, delay)

    def _clean_legacy(self, namespace: str, name: str) -> None:
        """Take off what kopf's timers and progress storage left on a ModelDeployment (earlier
        versions): its finalizer would keep the object from being deleted without kopf."""
        meta = (self.store.get(api.KIND, namespace, name) or {}).get("metadata") or {}
        if _has_legacy(meta):
            updated = self.client.remove_legacy(namespace, name, meta, LEGACY_FINALIZER, LEGACY_ANNOTATIONS)
            if updated is not None:
                self.store.put(updated, kind=api.KIND)
        self._legacy.discard((namespace, name))


def _has_legacy(meta: Mapping[str, Any]) -> bool:
    annotations = meta.get("annotations") or {}
    return LEGACY_FINALIZER in (meta.get("finalizers") or []) or any(a in annotations for a in LEGACY_ANNOTATIONS)
