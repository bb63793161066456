"""How a rollout plan lands on the API objects: the Deployment to apply, the status to write.

Pure glue between :mod:`modelship_operator.rollout` (plain dicts) and the typed world of
:mod:`modelship_operator.api`, :mod:`modelship_operator.builders` and
:mod:`modelship_operator.status`. The reconciler calls :func:`plan`, applies
:func:`desired_deployment`, and writes :func:`merge_status`.

Condition merge rules (the rollout knows things the Deployment cannot show, e.g. that it is
serving the stable revision on purpose while ``spec.image`` names a bad one):

- ``Progressing``: the rollout's view while a revision is rolling out, rolled back or halted;
  otherwise what the Deployment shows.
- ``Degraded``: the rollout's ``True`` (``RolledBack``, ``RolloutHalted``) wins; otherwise the
  Deployment/pod view (so a crash loop is reported at once, before the rollback decision).
- ``Ready``: never ``True`` while the desired revision is not fully serving.
- ``Reconciling`` / ``Stalled`` mirror ``Progressing`` / ``Degraded`` (kstatus).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from modelship_operator.core import api, builders, rollout, status

Obj = Mapping[str, Any]

#: Plan events that the Degraded transition already reports (one Event per decision, not two).
_COVERED_BY_DEGRADED = frozenset({"RolledBack", "RolloutHalted"})


def plan(
    md: api.ModelDeployment, deployment: Obj | None, pods: Sequence[Obj], *, now: dt.datetime
) -> rollout.RolloutPlan:
    """This pass's rollout decision for ``md`` given what the cluster shows."""
    annotations = md.metadata.get("annotations") or {}
    return rollout.plan_rollout(
        md.spec.wire(), md.status.wire(), annotations, rollout.Observed(deployment, list(pods)), now=now
    )


def serving_model(md: api.ModelDeployment, plan_: rollout.RolloutPlan) -> api.ModelDeployment:
    """``md`` with its pod-relevant spec replaced by the serving revision's template.

    A template recorded by an older operator may no longer validate; then only the image is
    taken from it (rollbacks are by image first and foremost).
    """
    spec = md.spec.wire()
    if rollout.revision_hash(rollout.pod_template(spec)) == plan_.serving_hash:
        return md
    try:
        new_spec = api.ModelDeploymentSpec.model_validate(rollout.effective_spec(spec, plan_.serving_template))
    except ValidationError:
        new_spec = md.spec.model_copy(update={"image": plan_.serving_template.get("image", md.spec.image)})
    return md.model_copy(update={"spec": new_spec})


def desired_deployment(md: api.ModelDeployment, plan_: rollout.RolloutPlan) -> dict[str, Any]:
    """The Deployment serving the plan's revision with the plan's surge mode, labelled."""
    built = builders.desired_deployment(serving_model(md, plan_), surge=plan_.surge_mode)  # type: ignore[arg-type]
    return rollout.stamp_deployment(dict(built), plan_)


def deployment_outdated(deployment: Obj | None, plan_: rollout.RolloutPlan) -> bool:
    """Does the live Deployment lack the plan's revision or strategy (the rollout moved it, not
    the spec)? Rollbacks are decided on pod events; they must not wait for a resync."""
    if not deployment:
        return True
    spec = deployment.get("spec") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if labels.get(rollout.REVISION_LABEL) != str(plan_.serving_revision):
        return True
    wanted = builders.SURGE if plan_.surge_mode == "surge" else builders.NO_SURGE
    live = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    return any(str(live.get(k)) != str(v) for k, v in wanted.items())


def _pick(
    derived: api.Condition, mine: rollout.Condition, use_mine: bool
) -> tuple[str, str, str]:
    if use_mine:
        return mine.status, mine.reason, mine.message
    return derived.status, derived.reason, derived.message


def merge_status(
    previous: api.ModelDeploymentStatus,
    derived: api.ModelDeploymentStatus,
    plan_: rollout.RolloutPlan,
    *,
    generation: int,
    now: dt.datetime,
) -> api.ModelDeploymentStatus:
    """``derived`` (from the Deployment) with the rollout's fields and condition rules applied."""
    by_type = {c.type: c for c in derived.conditions}
    mine = {c.type: c for c in plan_.conditions}
    phase = plan_.phase
    progressing = _pick(by_type["Progressing"], mine["Progressing"], phase != rollout.Phase.COMPLETE)
    degraded = _pick(by_type["Degraded"], mine["Degraded"], mine["Degraded"].status == "True")
    ready_d = by_type["Ready"]
    blocker = plan_.ready_blocker
    if blocker is not None and (ready_d.status == "True" or phase in (rollout.Phase.ROLLED_BACK, rollout.Phase.HALTED)):
        ready = (blocker.status, blocker.reason, blocker.message)
    else:
        ready = (ready_d.status, ready_d.reason, ready_d.message)
    prev = previous.conditions
    conditions = [
        status.set_condition(prev, "Ready", *ready, generation, now),
        status.set_condition(prev, "Progressing", *progressing, generation, now),
        status.set_condition(prev, "Degraded", *degraded, generation, now),
        status.set_condition(prev, "Reconciling", *progressing, generation, now),
        status.set_condition(prev, "Stalled", *degraded, generation, now),
    ]
    fields = plan_.status
    return derived.model_copy(
        update={
            "conditions": conditions,
            "image": fields.get("image") or derived.image,
            "stable_image": fields.get("stableImage") or derived.stable_image,
            "history": [api.HistoryEntry.model_validate(e) for e in fields.get("history") or ()],
            "rollout": api.RolloutState.model_validate(fields.get("rollout") or {}),
        }
    )


def events(plan_: rollout.RolloutPlan) -> list[rollout.Event]:
    """The plan's events minus those the Degraded-condition transition already records."""
    return [e for e in plan_.events if not (e.type == "Warning" and e.reason in _COVERED_BY_DEGRADED)]
