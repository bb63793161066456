"""The kopf shell: watch events in, reconcile passes out, through a work queue.

kopf watches ModelDeployments, their children (Deployments, Services, PDBs) and their pods.
Every handler here is an ``on.event`` handler that does two cheap things on kopf's event loop:
record the object in the :class:`~modelship_operator.cache.Store` and put the ModelDeployment
it concerns on the :class:`~modelship_operator.workqueue.WorkQueue`. A pool of worker threads
runs one reconcile pass (``reconcile.Reconciler``) per key taken from the queue.

Why not kopf's create/update handlers and timers: kopf runs one handler per event, so a
ModelDeployment whose Deployment and pods move ten times got ten full passes; its handlers
persist progress in annotations (an extra PATCH per change); and its timers put a finalizer on
every object, so nothing could be deleted while the operator was down. The queue coalesces
events per object (a busy operator does fewer, not more, passes per object), keeps no state in
the API, and schedules the follow-ups itself:

- every ModelDeployment is passed again after ``resync_seconds`` (the safety net for a missed
  event);
- while a rollout waits for time to pass on some evidence (a failed pull to be confirmed, a
  startup budget to end), every ``poll_interval_s``;
- after an API error, with exponential backoff from ``retry_delay_seconds``.

An invalid spec is reported in status + an Event and is not retried (the next spec change is a
new attempt; the resync re-checks it). kopf still gives us what it is good at: watches that
resume and re-list, login, peering for HA, the liveness endpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from modelship_operator import kube
from modelship_operator.core import api, builders
from modelship_operator.core.rollout import evidence
from modelship_operator.runtime import metrics
from modelship_operator.runtime.cache import CachedCluster, Store
from modelship_operator.reconcile import Reconciler, Result
from modelship_operator.runtime.settings import Settings
from modelship_operator.runtime.workqueue import ShutDown, WorkQueue

logger = logging.getLogger(__name__)

MODEL_DEPLOYMENTS = (api.API_VERSION, api.PLURAL)
CHILDREN = (
    ("apps/v1", "deployments", "Deployment"),
    ("v1", "services", "Service"),
    ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget"),
)
PODS = ("v1", "pods")
MANAGED = builders.MANAGED_LABELS

#: The finalizer kopf put on every ModelDeployment while modelship used kopf timers (<= 0.1.0).
LEGACY_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
#: kopf's bookkeeping annotations from the same versions.
LEGACY_ANNOTATIONS = ("modelship.io/last-handled-configuration", "modelship.io/reconcile")

Key = tuple[str, str]


def run_pass(
    reconciler: Reconciler, namespace: str, name: str, *, trigger: str, deployment_first: bool = False
) -> Result:
    """One reconcile pass, counted in the metrics. Raises ``kube.Retryable`` on API trouble."""
    started = time.monotonic()
    result = "error"
    try:
        outcome = reconciler.reconcile(namespace, name, deployment_first=deployment_first)
        result = "problem" if outcome.problem else "skipped" if outcome.skipped else "partial" if outcome.partial else "ok"
        return outcome
    except kube.Retryable:
        result = "retry"
        raise
    finally:
        metrics.RECONCILES.labels(trigger=trigger, result=result).inc()
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)


def rollout_evidence_pending(body: Mapping[str, Any] | None) -> bool:
    """The rollout waits for time to pass on some evidence (a failed pull to be confirmed, a
    grace or startup budget to end, a GPU wait before the surge switch): nothing else will
    bring a watch event, so the object is polled. Everything else in a rollout is an event."""
    rollout_state = ((body or {}).get("status") or {}).get("rollout") or {}
    return bool((rollout_state.get("evidence") or {}).get("key"))


class PeeringGate(logging.Filter):
    """Is this replica the active one? (HA: with ``--peering`` only one replica may write.)

    kopf pauses its watches while a peer with a higher priority is alive, but the passes this
    operator schedules itself (resync, polls, retries) would go on. kopf has no public hook for
    the pause; it logs it, from one logger, in two fixed messages (a unit test pins them to the
    installed kopf). Installed as a filter on that logger; it never drops a record.
    """

    LOGGER = "kopf._core.engines.peering"
    PAUSED = ("Pausing operations", "Pausing all operators")
    RESUMED = "Resuming operations"

    def __init__(self) -> None:
        super().__init__()
        self.active = True

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.PAUSED):
            self.active = False
        elif message.startswith(self.RESUMED):
            self.active = True
        return True

    def install(self) -> PeeringGate:
        logging.getLogger(self.LOGGER).addFilter(self)
        return self


class Controller:
    """The cache, the work queue and the worker threads between kopf and the reconciler."""

    def __init__(
        self, client: Any, settings: Settings, *, reconciler: Reconciler | None = None,
        active: Callable[[], bool] = lambda: True,
    ) -> None:  # fmt: skip
        self.client = client
        self.settings = settings
        self.store = Store(pod_list_ttl=settings.resync_seconds)
        self.queue = WorkQueue(urgent_quiet=settings.burst_hold_seconds)
        self.reconciler = reconciler or Reconciler(CachedCluster(client, self.store, api.KIND))
        self.active = active
        self._why: dict[Key, str] = {}
        self._first: set[Key] = set()  # queued as new: the pass creates the Deployment first
        self._legacy: set[Key] = set()  # carries what 0.1.0's kopf timers left (seen in its event)
        self._failures: dict[Key, int] = {}
        self._threads: list[threading.Thread] = []
        self.poll_interval = evidence.RolloutPolicy().poll_interval_s

    # -- fed by kopf (event loop; must not block) ----------------------------------------

    def enqueue(self, key: Key, why: str, *, urgent: bool = False) -> None:
        self._why[key] = why
        if urgent:
            self._first.add(key)
        self.queue.add(key, urgent=urgent)

    def model_deployment_event(self, type_: str | None, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if type_ == "DELETED":
            self.store.delete(obj, kind=api.KIND)
            self.store.forget_pods(*key)
            self.queue.forget(key)
            self._failures.pop(key, None)
            self._why.pop(key, None)
            self._legacy.discard(key)
            return
        if _has_legacy(meta):
            self._legacy.add(key)
        if self.store.put(obj, kind=api.KIND):  # not the echo of our own status write
            why = "resume" if type_ is None else "update" if meta.get("generation", 1) > 1 else "create"
            # No Deployment seen yet: a new object. Its Deployment is created first, ahead of
            # the queue (see Reconciler.reconcile's deployment_first).
            new = not self.store.knows("Deployment", key[0], builders.child_name(key[1]))
            self.enqueue(key, why, urgent=new)

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
            try:
                self.process(key)  # type: ignore[arg-type]
            finally:
                self.queue.done(key)

    def process(self, key: Key) -> None:
        """One pass for ``key`` and what follows it: nothing, a poll, a resync or a retry."""
        why = self._why.pop(key, "resync")
        first = key in self._first
        self._first.discard(key)
        if not self.active():
            return  # a paused HA replica: kopf re-lists everything when it resumes
        namespace, name = key
        try:
            if key in self._legacy:
                self._clean_legacy(namespace, name)
            outcome = run_pass(self.reconciler, namespace, name, trigger=why, deployment_first=first)
        except kube.Retryable as error:
            self._retry(key, f"{error}")
            return
        except Exception as error:  # a bug: logged with its traceback, retried with backoff
            logger.exception("%s/%s: reconcile failed", namespace, name)
            self._retry(key, f"{type(error).__name__}: {error}")
            return
        self._failures.pop(key, None)
        if outcome.partial:
            self.enqueue(key, why)  # the rest of the first pass, behind the other new objects
            return
        body = self.store.get(api.KIND, namespace, name)
        if outcome.skipped and body is None:
            return  # gone
        if rollout_evidence_pending(body):
            self._schedule(key, self.poll_interval, "rollout")
        self._schedule(key, self.settings.resync_seconds, "resync")

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


def filter_watches(kopf_settings: kopf.OperatorSettings) -> kopf.OperatorSettings:
    """Children and pods are watched filtered server-side by :data:`MANAGED`: on a real cluster
    the API server sends only what modelship manages, not every pod and Deployment in it."""
    selector = ",".join(f"{k}={v}" for k, v in MANAGED.items())
    for group_version, plural, *_ in (*CHILDREN, PODS):
        kopf_settings.watching.label_selectors[group_version, plural] = selector
    return kopf_settings


def build_registry(controller: Controller, settings: Settings) -> kopf.OperatorRegistry:
    """All handlers, registered on a fresh registry (nothing happens at import time)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kube.connection_info(settings.kubeconfig)

    @kopf.on.startup(registry=registry, id="workers")
    async def start_workers(**_: Any) -> None:
        controller.start()

    @kopf.on.cleanup(registry=registry, id="workers")
    async def stop_workers(**_: Any) -> None:
        controller.stop()

    @kopf.on.event(*MODEL_DEPLOYMENTS, registry=registry, id="model-deployments")
    async def model_deployment_event(event: Mapping[str, Any], **_: Any) -> None:
        controller.model_deployment_event(event.get("type"), event["object"])

    for group_version, plural, kind in CHILDREN:

        async def child_event(event: Mapping[str, Any], _kind: str = kind, **_: Any) -> None:
            controller.child_event(_kind, event.get("type"), event["object"])

        kopf.on.event(group_version, plural, labels=MANAGED, registry=registry, id=f"child-{plural}")(child_event)

    @kopf.on.event(*PODS, labels=MANAGED, registry=registry, id="pods")
    async def pod_event(event: Mapping[str, Any], **_: Any) -> None:
        controller.pod_event(event.get("type"), event["object"])

    return registry
