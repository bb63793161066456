"""A head start for new objects: their Deployment is created before anything else.

When a thousand ModelDeployments arrive at once, every Deployment - the start of the slowest
chain: ReplicaSet, scheduling, image pull, model load - should exist before any Service, Event
or status write is spent on the first ones. The controller queues a new object in the work
queue's urgent lane, and its first step is :meth:`HeadStart.create`: the same rollout plan as a
reconcile pass, but only the Deployment is applied. What it did and has not told (the Created
Event, the rollout's events, the rollout state its plan began) is handed to the full pass that
follows as an :class:`~modelship_operator.reconcile.Untold`, so the user sees the same Events
and status as without the head start.

An object the operator never acted on (no status yet) is created without reading first: one
server-side apply *without* force, which the API server refuses with a conflict where another
manager set the fields of an object of that name (someone else's Deployment is never taken
over); the full pass then reports the name conflict. That saves a GET (a quorum read) per
object of a burst.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from modelship_operator import kube
from modelship_operator.core import api, builders, rollout
from modelship_operator.reconcile import ChildConflict, Observation, Read, Reconciler, Result, Untold
from modelship_operator.runtime import metrics

Key = tuple[str, str]


class CreatesNew(Protocol):
    def apply_new(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], bool]: ...


def _never_acted_on(md: api.ModelDeployment) -> bool:
    return md.status.observed_generation is None and md.status.rollout.spec_hash is None and not md.status.history


class HeadStart:
    def __init__(self, reconciler: Reconciler, cluster: CreatesNew | None = None) -> None:
        self.reconciler = reconciler
        self.cluster = cluster
        self._untold: dict[Key, Untold] = {}

    def create(self, namespace: str, name: str) -> Untold | None:
        """Create the Deployment of a ModelDeployment that has none; None when there was nothing
        to create, or a problem the full pass reports (an invalid spec, a name taken, a refusal)."""
        got = self.reconciler.read(namespace, name)
        if isinstance(got, Result):
            return None
        try:
            if self.cluster is not None and _never_acted_on(got.md):
                plan = rollout.plan_rollout(got.md, rollout.Observed(), now=got.now)
                _, made = self.cluster.apply_new(rollout.desired_deployment(got.md, plan))
                created = [f"Deployment {builders.child_name(name)}"] if made else []
            else:
                plan, created = self._create_after_reading(got)
        except (kube.Rejected, kube.Refused, kube.NamespaceTerminating, ChildConflict, _Exists):
            return None  # the full pass reports it (or, for a namespace being deleted, skips it)
        metrics.observe_rollout(plan)
        untold = self._untold[(namespace, name)] = Untold.of(created, plan)
        return untold

    def _create_after_reading(self, got: Read) -> tuple[rollout.RolloutPlan, list[str]]:
        seen: Observation = self.reconciler.look(got)
        if seen.deployment is not None:
            raise _Exists
        created: list[str] = []
        desired = rollout.desired_deployment(seen.md, seen.plan)
        self.reconciler.apply_child(desired, seen.md, seen.body, created, before=None)
        return seen.plan, created

    def take(self, key: Key) -> Untold | None:
        """What the head start of ``key`` left for its full pass to tell (once)."""
        return self._untold.pop(key, None)

    def forget(self, key: Key) -> None:
        self._untold.pop(key, None)


class _Exists(Exception):
    """The Deployment exists already: no head start."""
