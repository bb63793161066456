"""What the operator last saw of its objects, fed by kopf's watch events and its own writes.

A reconcile pass reads the ModelDeployment and its children from here instead of the API
server, and skips applying a child the cache shows already as desired (``reconcile.covers``). At a
thousand ModelDeployments that is the difference between a handful of API calls per object and
a few dozen: every watch event used to cost a GET per object and a server-side apply per child.

Correctness rules:
- a key the cache does not hold is read from the API (a miss is never taken as "absent": kopf
  lists the kinds concurrently, so a ModelDeployment can be seen before its Deployment is);
- an object only replaces a newer one never: resourceVersions are compared, and a deletion
  leaves a tombstone so that the response of an apply that raced with it is not taken back;
- objects are stored without ``managedFields`` and kubectl's last-applied annotation (the
  bulk of an object's size, and never read), as compact JSON: a thousand ModelDeployments with
  their Deployments and Services took 25 MB as dicts and take 5 MB so (decoding one costs tens
  of microseconds, and every read gets its own copy, which no caller can corrupt).

Pods are cached per ModelDeployment, but only after a pass listed them from the API once
(kopf's watch cannot say when its initial listing is complete, and a re-list after a broken
watch brings no DELETED event for a pod that went meanwhile). From then on pod events keep the
set current, and it is listed afresh when older than ``pod_list_ttl`` seconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace, name

_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def _rv(obj: Mapping[str, Any]) -> int | None:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def slim(obj: Mapping[str, Any]) -> Obj:
    """A shallow copy without the fields nobody reads (the nested dicts are shared, not copied:
    stored objects are never modified in place)."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and any(key in annotations for key in _DROPPED_ANNOTATIONS):
        meta["annotations"] = {k: v for k, v in annotations.items() if k not in _DROPPED_ANNOTATIONS}
    return {**obj, "metadata": meta}


def slim_pod(pod: Mapping[str, Any]) -> Obj:
    """What status and rollouts read of a pod: metadata, container images, node, status."""
    spec = pod.get("spec") or {}
    containers = [{"name": c.get("name"), "image": c.get("image")} for c in spec.get("containers") or []]
    return {**slim(pod), "spec": {"containers": containers, "nodeName": spec.get("nodeName")}}


class _Packed:
    """One stored object: its resourceVersion and its compact JSON."""

    __slots__ = ("data", "rv")

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.rv = _rv(obj)
        self.data = json.dumps(obj, separators=(",", ":")).encode()

    def unpack(self) -> Obj:
        obj: Obj = json.loads(self.data)
        return obj


class _PodSet:
    __slots__ = ("labels", "listed_at", "pods", "selector")

    def __init__(self, selector: str, pods: dict[str, _Packed], listed_at: float) -> None:
        self.selector, self.pods, self.listed_at = selector, pods, listed_at
        self.labels = dict(term.split("=", 1) for term in selector.split(",") if term)  # parsed once

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all((labels or {}).get(k) == v for k, v in self.labels.items())


class Store:
    """Objects by (kind, namespace, name). Thread-safe: written from kopf's event loop and the
    reconcile workers, read by the workers."""

    def __init__(self, pod_list_ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._objects: dict[Key, _Packed] = {}
        self._tombstones: dict[Key, tuple[int, float]] = {}  # rv of the deletion, when seen
        self._pods: dict[tuple[str, str], _PodSet] = {}  # (namespace, owner)
        self._pods_gone: dict[tuple[str, str], tuple[int, float]] = {}  # (namespace, pod): rv, when
        self.pod_list_ttl = pod_list_ttl
        self._clock = clock

    # -- pods, per owner ----------------------------------------------------------------

    def pods(self, namespace: str, owner: str, selector: str) -> list[Obj] | None:
        """The owner's pods, or None when they must be listed from the API (never listed, listed
        with another selector, or too long ago)."""
        with self._lock:
            entry = self._pods.get((namespace, owner))
            if entry is None or entry.selector != selector or self._clock() - entry.listed_at > self.pod_list_ttl:
                return None
            packed = list(entry.pods.values())
        return [p.unpack() for p in packed]

    def set_pods(self, namespace: str, owner: str, selector: str, pods: list[Obj], started: float) -> None:
        """A fresh list from the API; events seen since ``started`` are not lost: a pod is only
        replaced by an older version never (compared by resourceVersion)."""
        with self._lock:
            old = self._pods.get((namespace, owner))
            fresh = {
                p["metadata"]["name"]: _Packed(slim_pod(p)) for p in pods
                if (_rv(p) or 0) > self._pods_gone.get((namespace, p["metadata"]["name"]), (0, 0.0))[0]
            }  # a pod deleted while the list was on its way is not brought back
            if old is not None and old.selector == selector:
                for name, pod in old.pods.items():
                    known = fresh.get(name)
                    if known is not None and (pod.rv or 0) > (known.rv or 0):
                        fresh[name] = pod
            self._pods[(namespace, owner)] = _PodSet(selector, fresh, started)

    def pod_event(self, type_: str | None, pod: Mapping[str, Any], owner: str) -> None:
        meta = pod.get("metadata") or {}
        with self._lock:
            namespace, name = str(meta.get("namespace")), str(meta.get("name"))
            if type_ == "DELETED":
                self._remember_gone(namespace, name, _rv(pod) or 0)
            entry = self._pods.get((namespace, owner))
            if entry is None:
                return  # not listed yet: the next pass lists
            if type_ == "DELETED" or not entry.matches(meta.get("labels")):
                entry.pods.pop(name, None)
                return
            known = entry.pods.get(name)
            if known is None or (_rv(pod) or 0) >= (known.rv or 0):
                entry.pods[name] = _Packed(slim_pod(pod))

    def _remember_gone(self, namespace: str, name: str, rv: int) -> None:
        now = self._clock()
        self._pods_gone[(namespace, name)] = (rv, now)
        if len(self._pods_gone) > 256:  # a list takes seconds, not minutes: keep a minute of deletions
            self._pods_gone = {k: v for k, v in self._pods_gone.items() if now - v[1] < 60}

    #: How long a deletion fences off older versions of the object, s. What could bring one back
    #: is a write response or a watch event already on its way when the deletion was seen
    #: (seconds); after that the tombstone is only memory, and without an end it was a leak:
    #: one per object ever deleted (a cluster whose namespaces come and go never stops adding).
    TOMBSTONE_TTL_S = 300.0

    def _bury(self, key: Key, rv: int) -> None:
        now = self._clock()
        self._tombstones[key] = (rv, now)
        if len(self._tombstones) > 256:
            self._tombstones = {k: v for k, v in self._tombstones.items() if now - v[1] < self.TOMBSTONE_TTL_S}

    def _buried_rv(self, key: Key) -> int | None:
        stone = self._tombstones.get(key)
        return None if stone is None else stone[0]

    def tombstones(self) -> int:
        """Deletions still remembered (bounded by ``TOMBSTONE_TTL_S`` once past 256)."""
        return len(self._tombstones)

    def forget_pods(self, namespace: str, owner: str) -> None:
        with self._lock:
            self._pods.pop((namespace, owner), None)

    # -- objects ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._objects)

    def sizes(self) -> dict[str, int]:
        """How much this store holds, by part: what a soak watches for growth."""
        with self._lock:
            return {
                "objects": len(self._objects),
                "tombstones": len(self._tombstones),
                "pod_sets": len(self._pods),
                "pods_gone": len(self._pods_gone),
            }

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """A copy of the object, or None if this store does not know it (not: "it does not
        exist")."""
        packed = self._objects.get((kind, namespace, name))
        return None if packed is None else packed.unpack()

    def deleted(self, kind: str, namespace: str, name: str) -> bool:
        """Its deletion was the last thing seen of it."""
        return (kind, namespace, name) in self._tombstones

    def knows(self, kind: str, namespace: str, name: str) -> bool:
        return (kind, namespace, name) in self._objects

    def names(self, kind: str) -> list[tuple[str, str]]:
        """(namespace, name) of every object of ``kind`` this store holds."""
        with self._lock:
            return [(namespace, name) for (k, namespace, name) in self._objects if k == kind]

    def put(self, obj: Mapping[str, Any], kind: str | None = None) -> bool:
        """Store ``obj`` unless a newer version (or its deletion) was seen already. True when
        this is news: a watch event echoing the response of our own write is not."""
        meta = obj.get("metadata") or {}
        key = (kind or str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
        new_rv = _rv(obj)
        with self._lock:
            old = self._objects.get(key)
            old_rv = old.rv if old is not None else self._buried_rv(key)
            if new_rv is not None and old_rv is not None and new_rv <= old_rv:
                return False
        packed = _Packed(slim(obj))  # outside the lock: the encoding is the expensive part
        with self._lock:
            old = self._objects.get(key)
            old_rv = old.rv if old is not None else self._buried_rv(key)
            if new_rv is not None and old_rv is not None and new_rv <= old_rv:
                return False  # a newer one arrived meanwhile
            self._tombstones.pop(key, None)
            self._objects[key] = packed
            return True

    def delete(self, obj: Mapping[str, Any], kind: str | None = None) -> None:
        meta = obj.get("metadata") or {}
        key = (kind or str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
        rv = _rv(obj)
        with self._lock:
            old = self._objects.get(key)
            if old is not None and rv is not None and (old.rv or 0) > rv:
                return  # recreated since
            self._objects.pop(key, None)
            if rv is not None:
                self._bury(key, rv)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """Drop what is known (after a 404: the API is the truth)."""
        with self._lock:
            self._objects.pop((kind, namespace, name), None)


class CachedCluster:
    """The reconcile's view of the API (``reconcile.Cluster``): reads served from the
    :class:`Store` where it knows the object, everything else passed to ``kube.Kube``."""

    def __init__(self, kube: Any, store: Store, md_kind: str) -> None:
        self.kube = kube
        self.store = store
        self.md_kind = md_kind

    def get_model_deployment(self, namespace: str, name: str) -> Obj | None:
        cached = self.store.get(self.md_kind, namespace, name)
        if cached is not None:
            return cached
        if self.store.deleted(self.md_kind, namespace, name):
            return None  # every ModelDeployment is watched: its deletion event is the truth
        body = self.kube.get_model_deployment(namespace, name)
        if body is not None:
            self.store.put(body)
        return body

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Obj | None:
        body = self.kube.patch_status(namespace, name, status)
        if body is not None:
            self.store.put(body)
        else:
            self.store.forget(self.md_kind, namespace, name)
        return body

    def apply(self, obj: Mapping[str, Any]) -> Obj:
        stored = self.kube.apply(obj)
        self.store.put(stored)
        return stored

    def apply_new(self, obj: Mapping[str, Any]) -> tuple[Obj, bool]:
        stored, created = self.kube.apply_new(obj)
        self.store.put(stored)
        return stored, created

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        cached = self.store.get(kind, namespace, name)
        if cached is not None:
            return cached
        obj = self.kube.get(kind, namespace, name)
        if obj is not None:
            self.store.put(obj)
        return obj

    def delete_pdb(self, namespace: str, name: str) -> bool:
        deleted = bool(self.kube.delete_pdb(namespace, name))
        self.store.forget("PodDisruptionBudget", namespace, name)
        return deleted

    def delete_hpa(self, namespace: str, name: str) -> bool:
        deleted = bool(self.kube.delete_hpa(namespace, name))
        self.store.forget("HorizontalPodAutoscaler", namespace, name)
        return deleted

    def hand_over(self, obj: Mapping[str, Any], manager: str) -> Obj | None:
        stored: Obj | None = self.kube.hand_over(obj, manager)
        if stored is not None:
            self.store.put(stored)
        return stored

    def cached(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.store.get(kind, namespace, name)

    def list_pods(self, namespace: str, selector: str, owner: str) -> list[Obj]:
        pods = self.store.pods(namespace, owner, selector)
        if pods is None:
            started = time.monotonic()
            pods = self.kube.list_pods(namespace, selector)
            self.store.set_pods(namespace, owner, selector, pods, started)
            pods = self.store.pods(namespace, owner, selector) or []
        return pods

    def event(self, owner: Mapping[str, Any], type_: str, reason: str, message: str, now: Any) -> None:
        self.kube.event(owner, type_, reason, message, now)
