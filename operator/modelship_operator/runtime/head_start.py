"""A head start for new objects: their Deployment is created before anything else.

When a thousand ModelDeployments arrive at once, every Deployment - the start of the slowest
chain: ReplicaSet, scheduling, image pull, model load - should exist before any Service, Event
or status write is spent on the first ones. The controller queues a new object in the work
queue's urgent lane, and its first step is :meth:`HeadStart.create`: the same observation and
rollout plan as a reconcile pass, but only the Deployment is applied. What it did and has not
told (the Created Event, the rollout's events, the rollout state its plan began) is handed to
the full pass that follows as an :class:`~modelship_operator.reconcile.Untold`, so the user
sees the same Events and status as without the head start.
"""

from __future__ import annotations

from modelship_operator import kube
from modelship_operator.core import rollout
from modelship_operator.reconcile import ChildConflict, Observation, Reconciler, Untold
from modelship_operator.runtime import metrics

Key = tuple[str, str]


class HeadStart:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self._untold: dict[Key, Untold] = {}

    def create(self, namespace: str, name: str) -> Untold | None:
        """Create the Deployment of a ModelDeployment that has none; None when there was nothing
        to create, or a problem the full pass reports (an invalid spec, a name taken, a refusal)."""
        seen = self.reconciler.observe(namespace, name)
        if not isinstance(seen, Observation) or seen.deployment is not None:
            return None
        created: list[str] = []
        desired = rollout.desired_deployment(seen.md, seen.plan)
        try:
            self.reconciler.apply_child(desired, seen.md, seen.body, created, before=None)
        except (kube.Rejected, kube.Refused, ChildConflict):
            return None
        metrics.observe_rollout(seen.plan)
        untold = self._untold[(namespace, name)] = Untold.of(created, seen.plan)
        return untold

    def take(self, key: Key) -> Untold | None:
        """What the head start of ``key`` left for its full pass to tell (once)."""
        return self._untold.pop(key, None)

    def forget(self, key: Key) -> None:
        self._untold.pop(key, None)
