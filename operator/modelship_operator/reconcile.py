"""One reconcile pass: read -> build -> apply the whole children -> derive status -> events.

Imperative shell around the pure core (``builders``, ``status``). Every pass re-reads the
ModelDeployment, so it is idempotent and needs no memory between passes: a restarted operator
picks up from what the API shows. Passes for the same object are serialized by a lock (kopf
runs handlers for the object and for its children in parallel threads).

Rollouts plug in between "parse" and "apply": a ``plan_rollout``-style decision can choose the
image and surge mode passed to ``builders.desired_deployment`` and add its own conditions.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelship_operator import kube
from modelship_operator.core import api, builders, rollout, status
from modelship_operator.core.rollout import landing as rollout_status
from modelship_operator.runtime import metrics
from modelship_operator.runtime.cache import covers

logger = logging.getLogger(__name__)

Obj = dict[str, Any]


def utcnow() -> dt.datetime:
    """Now, in UTC, to the second (conditions and events carry seconds)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


class Cluster(Protocol):
    """What a reconcile needs from the API (``cache.CachedCluster`` over ``kube.Kube``; a fake in
    unit tests)."""

    def get_model_deployment(self, namespace: str, name: str) -> Obj | None: ...
    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Obj | None: ...
    def apply(self, obj: Mapping[str, Any]) -> Obj: ...
    def get(self, kind: str, namespace: str, name: str) -> Obj | None: ...
    def cached(self, kind: str, namespace: str, name: str) -> Obj | None: ...  # no API call
    def delete_pdb(self, namespace: str, name: str) -> bool: ...
    def list_pods(self, namespace: str, selector: str, owner: str) -> list[Obj]: ...
    def event(self, owner: Mapping[str, Any], type_: str, reason: str, message: str, now: dt.datetime) -> None: ...


@dataclass(frozen=True)
class Result:
    """What a pass did; ``problem`` is set when the spec cannot be served as written."""

    skipped: bool = False
    problem: str | None = None
    status_written: bool = False
    partial: bool = False
    """Only the Deployment was created (``deployment_first``): a full pass must follow."""


class ChildConflict(Exception):
    """A child's name is taken by an object this ModelDeployment does not control."""


def _controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or [])


def _essence(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What an apply can change. Not resourceVersion: controllers bump it with status updates
    between our read and our apply, which would look like drift."""
    meta = obj.get("metadata", {})
    return obj.get("spec"), meta.get("labels"), meta.get("ownerReferences")


@dataclass
class _Untold:
    """What a deployment-first pass did and has not told yet: the full pass records its
    Created Event and the rollout's Events."""

    created: list[str] = field(default_factory=list)
    events: list[rollout.Event] = field(default_factory=list)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


class Reconciler:
    def __init__(self, cluster: Cluster, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.cluster = cluster
        self.clock = clock
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._untold: dict[tuple[str, str], _Untold] = {}

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def reconcile(self, namespace: str, name: str, *, deployment_first: bool = False) -> Result:
        """One pass. Children are applied only where they differ from the desired objects, so a
        pass for a pod or status event writes nothing but a changed status.

        ``deployment_first``: for a ModelDeployment whose Deployment does not exist yet, create
        only the Deployment and return ``partial`` (the caller queues the full pass). When a
        thousand objects arrive at once, every Deployment - the start of the slowest chain:
        ReplicaSet, scheduling, image pull, model load - exists before any Service, Event or
        status write is spent on the first ones.
        """
        try:
            return self._reconcile(namespace, name, deployment_first=deployment_first)
        except kube.NamespaceTerminating:
            return Result(skipped=True)  # the namespace takes the object and its children with it

    def _reconcile(self, namespace: str, name: str, *, deployment_first: bool = False) -> Result:
        with self._lock(namespace, name):
            body = self.cluster.get_model_deployment(namespace, name)
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                self._untold.pop((namespace, name), None)
                return Result(skipped=True)  # gone or going: garbage collection handles children
            now = self.clock()
            try:
                md = api.parse(body)
            except api.InvalidSpec as error:
                return self._problem(body, "InvalidSpec", str(error), now)
            # Rollouts decide from what the cluster shows *before* this pass's writes.
            observed = self.cluster.get("Deployment", namespace, builders.child_name(md.name))
            pods = self.cluster.list_pods(namespace, builders.selector_string(md), md.name) if observed else []
            plan = rollout_status.plan(md, observed, pods, now=now)
            untold = self._untold.pop((namespace, name), None) or _Untold()
            if deployment_first and observed is None:
                try:
                    self._apply_one(
                        rollout_status.desired_deployment(md, plan), md, body, True, untold.created, before=None
                    )  # fmt: skip
                    untold.events = rollout_status.events(plan)
                    self._untold[(namespace, name)] = untold
                    return Result(partial=True)
                except (kube.Rejected, ChildConflict):
                    pass  # the full pass below reports it
            try:
                deployment = self._apply_children(md, body, now, plan, observed, untold.created)
            except kube.Rejected as error:
                return self._problem(body, "InvalidSpec", f"the API server rejected a child: {error}", now)
            except ChildConflict as error:
                return self._problem(body, "NameConflict", str(error), now)
            derived = status.derive_status(md, deployment, pods, now=now)
            new = rollout_status.merge_status(md.status, derived, plan, generation=md.generation, now=now)
            for event in untold.events + [e for e in rollout_status.events(plan) if e not in untold.events]:
                self._event(body, event.type, event.reason, event.message, now)
            metrics.observe_rollout(plan)
            return Result(status_written=self._write_status(body, md.status, new, now))

    # -- children -----------------------------------------------------------------------

    def _apply_children(
        self, md: api.ModelDeployment, body: Obj, now: dt.datetime, plan: rollout.RolloutPlan, observed: Obj | None,
        created: list[str],
    ) -> Obj:  # fmt: skip
        """Apply Deployment (the rollout plan's revision), Service and PDB (or delete a PDB no
        longer wanted); returns the Deployment as stored. ``created`` (what a deployment-first
        pass created) is added to and told in one Event."""
        spec_changed = md.status.observed_generation != md.generation
        moved = spec_changed or rollout_status.deployment_outdated(observed, plan)  # our decision, not drift
        try:
            by_rollout = not spec_changed and moved and observed is not None
            deployment = self._apply_one(
                rollout_status.desired_deployment(md, plan), md, body, moved, created, now, before=observed,
                updated=f"moved to revision {plan.serving_revision} by the rollout" if by_rollout else None,
            )  # fmt: skip
            self._apply_one(builders.desired_service(md), md, body, spec_changed, created, now)
            pdb = builders.desired_pdb(md)
            if pdb is not None:
                self._apply_one(pdb, md, body, spec_changed, created, now)
        finally:
            if created:  # one Event for what this pass (and a deployment-first pass) created
                self._event(body, "Normal", "Created", f"created {_join(created)}", now)
        child = builders.child_name(md.name)
        if pdb is None:
            # Only a PDB this operator created can be deleted, and those are labelled and so
            # watched: the cache is enough (no GET per pass for every object without a budget).
            existing = self.cluster.cached("PodDisruptionBudget", md.namespace, child)
            if existing is not None and _controlled_by(existing, md.metadata["uid"]):
                if self.cluster.delete_pdb(md.namespace, child):
                    self._event(body, "Normal", "Deleted", f"PodDisruptionBudget {child} deleted (no budget in spec)", now)
        return deployment

    def _apply_one(
        self, desired: Obj, md: api.ModelDeployment, body: Obj, spec_changed: bool, created: list[str],
        now: dt.datetime | None = None, *, before: Obj | None | object = ..., updated: str | None = None,
    ) -> Obj:  # fmt: skip
        """Apply one child unless the cache shows it as desired already; what it creates is
        added to ``created`` (the caller records one Event), updates get an Event here.
        ``before``: the child as this pass already read it (not read again); ``updated``: what
        the update Event says when it was not the spec that changed (a rollback)."""
        kind, name = desired["kind"], desired["metadata"]["name"]
        if before is ...:
            before = self.cluster.get(kind, md.namespace, name)
        assert before is None or isinstance(before, dict)
        if before is not None and not _controlled_by(before, md.metadata["uid"]):
            raise ChildConflict(f"a {kind} named {name} already exists and is not controlled by this ModelDeployment")
        if before is not None and covers(before, desired):
            return before  # nothing to apply: most passes (status moves, pod events) end here
        after = self.cluster.apply(desired)
        if before is None:
            created.append(f"{kind} {name}")
        elif now is not None and _essence(before) != _essence(after):
            if spec_changed:
                self._event(body, "Normal", "Updated", f"{kind} {name} {updated or 'updated to match the spec'}", now)
            else:
                self._event(body, "Normal", "DriftCorrected", f"{kind} {name} was changed outside modelship; restored", now)
        return after

    # -- status and events --------------------------------------------------------------

    def _problem(self, body: Obj, reason: str, message: str, now: dt.datetime) -> Result:
        previous = api.parse_status(body)
        generation = int(body.get("metadata", {}).get("generation") or 0)
        new = status.problem_status(previous, generation, reason, message, now)
        self._write_status(body, previous, new, now)
        logger.warning("%s/%s: %s: %s", body["metadata"].get("namespace"), body["metadata"].get("name"), reason, message)
        return Result(problem=message)

    def _write_status(
        self, body: Obj, old: api.ModelDeploymentStatus, new: api.ModelDeploymentStatus, now: dt.datetime
    ) -> bool:
        if new.wire() == old.wire():
            return False
        meta = body["metadata"]
        self.cluster.patch_status(meta.get("namespace", "default"), meta["name"], new.wire())
        self._transition_events(body, old, new, now)
        return True

    def _transition_events(
        self, body: Obj, old: api.ModelDeploymentStatus, new: api.ModelDeploymentStatus, now: dt.datetime
    ) -> None:
        """One Event per decision a user cares about: became ready, degraded (and why), recovered."""
        before = {c.type: c for c in old.conditions}
        for cond in new.conditions:
            prev = before.get(cond.type)
            same = prev is not None and (prev.status, prev.reason, prev.message) == (cond.status, cond.reason, cond.message)
            if same:
                continue
            if cond.type == "Ready" and cond.status == "True" and (prev is None or prev.status != "True"):
                self._event(body, "Normal", "Ready", cond.message, now)
            elif cond.type == "Degraded" and cond.status == "True" and (
                prev is None or (prev.status, prev.reason) != (cond.status, cond.reason)
            ):
                self._event(body, "Warning", cond.reason, cond.message, now)
            elif cond.type == "Degraded" and cond.status == "False" and prev is not None and prev.status == "True":
                self._event(body, "Normal", "Recovered", f"no longer degraded (was: {prev.reason})", now)

    def _event(self, body: Obj, type_: str, reason: str, message: str, now: dt.datetime) -> None:
        self.cluster.event(body, type_, reason, message, now)
