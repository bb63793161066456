"""One reconcile pass: read -> plan -> apply what differs -> status -> events -> when to come back.

The imperative shell around the pure core (:mod:`modelship_operator.core`). A pass re-reads the
ModelDeployment, so it is idempotent and needs no memory between passes: a restarted operator
picks up from what the API shows. It returns a :class:`Result` whose ``requeue_after`` says
when to come back (controller-runtime's ``Result{RequeueAfter}``); *when* passes run, how
often, and for whom is the runtime's business (:mod:`modelship_operator.runtime`), and so is
the Deployment-first head start for new objects, which hands the pass an :class:`Untold`.

To make a new spec field reach the pod, nothing here changes: the model (``core/api.py``) and
the builder (``core/builders.py``) do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from modelship_operator import kube
from modelship_operator.core import api, autoscaling, builders, rollout, status

logger = logging.getLogger(__name__)

Obj = dict[str, Any]


def utcnow() -> dt.datetime:
    """Now, in UTC, to the second (conditions and events carry seconds)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Cluster(Protocol):
    """What a pass needs from the API (``runtime.cache.CachedCluster`` over ``kube.Kube``; a fake
    in unit tests). Failures raise the errors of :mod:`modelship_operator.kube`."""

    def get_model_deployment(self, namespace: str, name: str) -> Obj | None: ...
    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Obj | None: ...
    def apply(self, obj: Mapping[str, Any]) -> Obj: ...
    def get(self, kind: str, namespace: str, name: str) -> Obj | None: ...
    def cached(self, kind: str, namespace: str, name: str) -> Obj | None: ...  # no API call
    def delete_pdb(self, namespace: str, name: str) -> bool: ...
    def delete_hpa(self, namespace: str, name: str) -> bool: ...
    def hand_over(self, obj: Mapping[str, Any], manager: str) -> Obj | None: ...
    def list_pods(self, namespace: str, selector: str, owner: str) -> list[Obj]: ...
    def event(self, owner: Mapping[str, Any], type_: str, reason: str, message: str, now: dt.datetime) -> None: ...


@dataclasses.dataclass(frozen=True)
class Result:
    """What a pass did, and when to come back."""

    requeue_after: float | None = None
    """Seconds until the pass must run again although nothing will change in the API (rollout
    evidence being established); None: the next watch event (or the runtime's resync)."""
    problem: str | None = None
    """Set when the spec cannot be served as written (reported in status; not retried)."""
    skipped: bool = False
    """The object is gone or going (or its namespace is): nothing was done."""
    status_written: bool = False
    plan: rollout.RolloutPlan | None = None
    """The rollout decision of this pass (the runtime counts it in its metrics)."""


@dataclasses.dataclass(frozen=True)
class Untold:
    """What a head start (the runtime creating a new object's Deployment before anything else)
    did and has not told: the next pass tells it, and continues from the rollout state the head
    start's plan began, as if it had done both itself. Held for every new object of a burst
    until its full pass, so the status is kept as compact JSON (a thousand typed copies took
    ~10 MB)."""

    created: tuple[str, ...]
    events: tuple[rollout.Event, ...]
    status_json: bytes

    @classmethod
    def of(cls, created: list[str], plan: rollout.RolloutPlan) -> Untold:
        return cls(tuple(created), tuple(rollout.events_to_record(plan)), plan.status.model_dump_json().encode())

    def status(self) -> api.ModelDeploymentStatus:
        return api.ModelDeploymentStatus.model_validate_json(self.status_json)


@dataclasses.dataclass(frozen=True)
class Read:
    """A ModelDeployment as stored and parsed, and the time of the pass."""

    body: Obj
    md: api.ModelDeployment
    now: dt.datetime


@dataclasses.dataclass(frozen=True)
class Observation:
    """A ModelDeployment, what the cluster shows of it, and the rollout plan for it."""

    body: Obj
    md: api.ModelDeployment
    deployment: Obj | None
    pods: list[Obj]
    plan: rollout.RolloutPlan
    now: dt.datetime


class ChildConflict(Exception):
    """A child's name is taken by an object this ModelDeployment does not control."""


def _controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or [])


def _essence(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What an apply can change. Not resourceVersion: controllers bump it with status updates
    between our read and our apply, which would look like drift."""
    meta = obj.get("metadata", {})
    return obj.get("spec"), meta.get("labels"), meta.get("ownerReferences")


def covers(live: Any, desired: Any) -> bool:
    """Does the live object already hold every field of ``desired`` (as server-side apply would
    set it)? Fields the API server defaulted or other managers added are ignored; lists must
    match element by element. Numbers match their string form (quantities come back as strings).
    """
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(covers(live.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(covers, live, desired))
    if isinstance(desired, (int, float)) and not isinstance(desired, bool) and isinstance(live, str):
        return str(desired) == live
    return bool(live == desired)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


class Reconciler:
    def __init__(self, cluster: Cluster, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.cluster = cluster
        self.clock = clock

    def reconcile(self, namespace: str, name: str, *, untold: Untold | None = None) -> Result:
        """One pass. Children are applied only where they differ from the desired objects, so a
        pass for a pod or status event writes nothing but a changed status."""
        try:
            seen = self.observe(namespace, name, untold=untold)
            if isinstance(seen, Result):
                return seen
            return self._converge(seen, untold)
        except kube.NamespaceTerminating:
            return Result(skipped=True)  # the namespace takes the object and its children with it

    def observe(self, namespace: str, name: str, *, untold: Untold | None = None) -> Observation | Result:
        """Read the object and what the cluster shows, and plan the rollout; a Result when there
        is nothing to converge (gone, going, or an invalid spec, which is reported here)."""
        got = self.read(namespace, name)
        return got if isinstance(got, Result) else self.look(got, untold=untold)

    def read(self, namespace: str, name: str) -> Read | Result:
        """The ModelDeployment, parsed; a Result when it is gone, going, or invalid (reported)."""
        body = self.cluster.get_model_deployment(namespace, name)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return Result(skipped=True)  # gone or going: garbage collection handles children
        now = self.clock()
        try:
            md = api.parse(body)
        except api.InvalidSpec as error:
            return self._problem(body, "InvalidSpec", str(error), now)
        missing = self.missing_claim(md)
        if missing is not None:
            # Children are left alone: pods would only wait in Pending for the claim. Its
            # creation (PersistentVolumeClaims are watched) starts the next pass.
            return self._problem(body, "ModelClaimNotFound", missing, now)
        return Read(body, md, now)

    def missing_claim(self, md: api.ModelDeployment) -> str | None:
        """Why the claim of a ``pvc://`` model cannot be mounted (it does not exist), or None."""
        pvc = md.spec.model.pvc
        if pvc is None or self.cluster.get("PersistentVolumeClaim", md.namespace, pvc[0]) is not None:
            return None
        return (
            f"model.uri {md.spec.model.uri} names PersistentVolumeClaim {pvc[0]}, which does not exist in "
            f"namespace {md.namespace}: create it (pods cannot start without it)"
        )

    def look(self, got: Read, *, untold: Untold | None = None) -> Observation:
        """What the cluster shows of ``got``'s children and pods, and the rollout plan."""
        md = got.md if untold is None else got.md.model_copy(update={"status": untold.status()})
        # Rollouts decide from what the cluster shows *before* this pass's writes.
        deployment = self.cluster.get("Deployment", md.namespace, builders.child_name(md.name))
        pods = self.cluster.list_pods(md.namespace, builders.selector_string(md), md.name) if deployment else []
        plan = rollout.plan_rollout(md, rollout.Observed(deployment, pods), now=got.now)
        return Observation(got.body, md, deployment, pods, plan, got.now)

    def _converge(self, seen: Observation, untold: Untold | None) -> Result:
        md, body, plan, now = seen.md, seen.body, seen.plan, seen.now
        created = list(untold.created if untold else ())
        try:
            deployment = self._apply_children(seen, created)
        except kube.Rejected as error:
            return self._problem(body, "InvalidSpec", f"the API server rejected a child: {error}", now)
        except ChildConflict as error:
            return self._problem(body, "NameConflict", str(error), now)
        except kube.Refused as error:
            self._report_refusal(body, error, now)
            raise  # retried by the runtime, with backoff
        new = status.next_status(md, deployment, seen.pods, plan, now=now)
        new = new.model_copy(update={"autoscaling": self._hpa_status(md)})
        for event in (*(untold.events if untold else ()), *rollout.events_to_record(plan)):
            self._event(body, event.type, event.reason, event.message, now)
        written = self._write_status(body, api.parse_status(body), new, now)
        return Result(requeue_after=plan.requeue_after, status_written=written, plan=plan)

    # -- children -----------------------------------------------------------------------

    def _apply_children(self, seen: Observation, created: list[str]) -> Obj:
        """Apply the Deployment (the rollout plan's revision), Service and PDB (or delete a PDB
        no longer wanted); returns the Deployment as stored. What is created is told in one
        Event (with what a head start created, in ``created``)."""
        md, body, plan, now, observed = seen.md, seen.body, seen.plan, seen.now, seen.deployment
        spec_changed = md.status.observed_generation != md.generation
        moved = spec_changed or rollout.deployment_outdated(observed, plan)  # our decision, not drift
        by_rollout = not spec_changed and moved and observed is not None
        hpa = builders.desired_hpa(md)
        if hpa is None:
            self._delete_hpa(md, body, now)  # before replicas are applied again: the HPA would fight them
        try:
            desired = rollout.desired_deployment(md, plan)
            if md.spec.autoscaling is not None and observed is not None and not covers(observed, desired):
                self._hand_over_replicas(md.spec.autoscaling, observed)
            deployment = self.apply_child(
                desired, md, body, created, moved, now, before=observed,
                updated=f"moved to revision {plan.serving_revision} by the rollout" if by_rollout else None,
            )
            self.apply_child(builders.desired_service(md), md, body, created, spec_changed, now)
            pdb = builders.desired_pdb(md)
            if pdb is not None:
                self.apply_child(pdb, md, body, created, spec_changed, now)
            if hpa is not None:
                self.apply_child(hpa, md, body, created, spec_changed, now)
        finally:
            if created:
                self._event(body, "Normal", "Created", f"created {_join(created)}", now)
        child = builders.child_name(md.name)
        if pdb is None:
            # Only a PDB this operator created can be deleted, and those are labelled and so
            # watched: the cache is enough (no GET per pass for every object without a budget).
            existing = self.cluster.cached("PodDisruptionBudget", md.namespace, child)
            ours = existing is not None and _controlled_by(existing, md.metadata["uid"])
            if ours and self.cluster.delete_pdb(md.namespace, child):
                self._event(body, "Normal", "Deleted", f"PodDisruptionBudget {child} deleted (no budget in spec)", now)
        return deployment

    def _hand_over_replicas(self, spec: api.Autoscaling, observed: Obj) -> None:
        """Before an apply without ``replicas``: hold the field at its live value as a second
        manager, so the operator letting it go does not reset it (``core/autoscaling.py``)."""
        self.cluster.hand_over(
            autoscaling.replicas_seed(observed, autoscaling.seed_replicas(spec, observed)), autoscaling.HANDOVER_MANAGER
        )

    def _delete_hpa(self, md: api.ModelDeployment, body: Obj, now: dt.datetime) -> None:
        """Autoscaling off: delete the HPA this ModelDeployment controls (watched, so the cache
        knows it; no GET per pass for every object without autoscaling)."""
        child = builders.child_name(md.name)
        existing = self.cluster.cached(autoscaling.KIND, md.namespace, child)
        ours = existing is not None and _controlled_by(existing, md.metadata["uid"])
        if ours and self.cluster.delete_hpa(md.namespace, child):
            self._event(body, "Normal", "Deleted", f"HorizontalPodAutoscaler {child} deleted (no autoscaling in spec)", now)

    def _hpa_status(self, md: api.ModelDeployment) -> api.AutoscalingStatus | None:
        if md.spec.autoscaling is None:
            return None
        return autoscaling.observed(self.cluster.cached(autoscaling.KIND, md.namespace, builders.child_name(md.name)))

    def apply_child(
        self, desired: Obj, md: api.ModelDeployment, body: Obj, created: list[str], spec_changed: bool = False,
        now: dt.datetime | None = None, *, before: Obj | object | None = ..., updated: str | None = None,
    ) -> Obj:
        """Apply one child unless it is already as desired; what it creates is added to
        ``created`` (the caller records one Event), updates get an Event here. ``before``: the
        child as this pass already read it (not read again); ``updated``: what the update Event
        says when it was not the spec that changed (a rollback)."""
        kind, name = desired["kind"], desired["metadata"]["name"]
        current = self.cluster.get(kind, md.namespace, name) if before is ... else before
        if current is not None and not isinstance(current, dict):
            raise TypeError(f"before must be an object or None, not {type(current).__name__}")
        if current is not None and not _controlled_by(current, md.metadata["uid"]):
            raise ChildConflict(f"a {kind} named {name} already exists and is not controlled by this ModelDeployment")
        if current is not None and covers(current, desired):
            return current  # nothing to apply: most passes (status moves, pod events) end here
        after = self.cluster.apply(desired)
        if current is None:
            created.append(f"{kind} {name}")
        elif now is not None and _essence(current) != _essence(after):
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

    def _report_refusal(self, body: Obj, error: kube.Refused, now: dt.datetime) -> None:
        """An apply the API server refused (not as invalid: e.g. HTTP 500 "duplicate entries",
        403): Degraded with reason ApplyFailed and a Warning Event on the first failure, then the
        runtime retries. A status write that fails as well changes nothing: the retry reports."""
        try:
            self._problem(body, "ApplyFailed", str(error), now)
        except kube.KubeError as also:
            logger.warning("%s: could not report it in status either: %s", error, also)

    def _write_status(
        self, body: Obj, old: api.ModelDeploymentStatus, new: api.ModelDeploymentStatus, now: dt.datetime
    ) -> bool:
        if new == old:
            return False
        meta = body["metadata"]
        self.cluster.patch_status(meta.get("namespace", "default"), meta["name"], new.merge_patch())
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
