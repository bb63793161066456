"""Rollouts and rollbacks by image tag: the pure decision core.

``plan_rollout(md, observed, now=...)`` reads the typed ModelDeployment (its spec, the user's
annotations, and the rollout state and history it left in ``md.status`` last time) and the
observed Deployment and pods, and returns a :class:`RolloutPlan`: which revision the Deployment
must carry, with which update strategy, the new typed status (history, ``status.rollout``,
serving and stable image), its view of the conditions, the events, and when to look again. No
API calls, no clock, no environment: the reconcile pass does the I/O, and every pass is
idempotent, so a restarted operator resumes from status alone (and a pass whose status write
failed is simply recomputed).

Revisions
    A revision is one distinct *pod-relevant* spec (``api.pod_fields()``: every spec field not
    marked ``OUTSIDE_POD`` - image, model, serving config, resources, GPU, env, probes,
    placement); ``replicas``, ``rollout`` and ``disruptionBudget`` changes are not revisions. Each attempt gets the next revision number; the
    Deployment's pod template is labelled ``modelship.io/revision: "<N>"`` (and the template hash
    in ``modelship.io/revision-hash``), so pods of an attempt are told apart from everything else,
    and a retry of the same spec gets fresh pods. ``status.history`` keeps the last
    :attr:`RolloutPolicy.history_limit` attempts (never dropping the stable or serving one) with
    outcome ``Progressing`` | ``Succeeded`` | ``RolledBack`` | ``Superseded`` | ``Halted`` and the
    template, so a rollback needs nothing but status.

GitOps safety
    The operator never writes ``spec``. After an automatic rollback ``spec.image`` still names the
    bad tag; ``status.rollout.specHash`` remembers that this spec was already tried, so a GitOps
    tool re-applying the same spec does not start the bad rollout again (no flapping). A changed
    spec, or an explicit retry, does.

Annotation contract (work from plain ``kubectl annotate`` as well as from ``kubectl modelship``)
    ``modelship.io/rollback-to: "<N>" | "previous"``
        Serve revision ``N`` (which must have ``Succeeded``), or the last good revision before the
        one serving now. Anything after an ``@`` is a nonce and ignored (``"2@1732662000"``): the
        operator acts once per distinct *value* and records it in
        ``status.rollout.handledRollbackTo``, so re-syncs never repeat it and repeating the same
        rollback later needs a new nonce (the plugin always adds one). A later spec change takes
        precedence: it starts a new rollout.
    ``modelship.io/retry: "<any nonce>"``
        Try the spec again after a rollback or halt (a new revision number, fresh pods). Handled
        once per distinct value (``status.rollout.handledRetry``).
    Setting one is a change like any other: its watch event queues a pass, which compares the
    value with the handled one.

Timing
    Most evidence arrives as watch events (pods, the Deployment). What only time turns into
    evidence (a pull failure to confirm, a grace period or startup budget to end, a GPU wait
    before the surge switch) leaves a pending record in ``status.rollout.evidence`` and sets
    :attr:`RolloutPlan.requeue_after` to the moment it is established: the reconcile pass
    returns it and the work queue comes back then. With the default thresholds a rollback
    starts 5-8 s after the first evidence (target: 30 s).

Failure evidence (:mod:`modelship_operator.core.rollout.evidence`), whichever comes first: image pull
failures, crash loops, startup never succeeding, unschedulable beyond a grace period,
``ProgressDeadlineExceeded``. With ``spec.rollout.autoRollback`` (default true) the Deployment goes
back to the stable revision; otherwise the rollout halts and status says why.

GPU-aware surge (``spec.rollout.surge``, resolved by ``builders.resolve_surge``): ``surge``
starts new pods before old ones stop (maxUnavailable 0); ``no-surge`` replaces one at a time
(maxSurge 0, maxUnavailable 1); ``auto`` starts with surge and switches to no-surge when a surge
pod cannot get ``nvidia.com/gpu`` - unless that would break the disruption budget, in which case
the pod's unschedulability becomes ordinary evidence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from modelship_operator.core import api, builders
from modelship_operator.core.rollout import evidence as ev
from modelship_operator.core.rollout import steps
from modelship_operator.core.rollout.revisions import (  # re-exported: this package is the entry point
    RETRY_ANNOTATION,
    REVISION_HASH_LABEL,
    REVISION_LABEL,
    ROLLBACK_TO_ANNOTATION,
    Event,
    Observed,
    pod_template,
    revision_hash,
    revision_pods,
    serving_spec,
    template_labels,
    trim,
)

__all__ = [
    "RETRY_ANNOTATION",
    "REVISION_HASH_LABEL",
    "REVISION_LABEL",
    "ROLLBACK_TO_ANNOTATION",
    "Event",
    "Observed",
    "RolloutPlan",
    "deployment_outdated",
    "desired_deployment",
    "events_to_record",
    "plan_rollout",
    "pod_template",
    "revision_hash",
    "revision_pods",
    "serving_model",
    "serving_spec",
    "stamp_deployment",
]

#: Plan events that the Degraded-condition transition already reports (one Event per decision).
_COVERED_BY_DEGRADED = frozenset({"RolledBack", "RolloutHalted"})


@dataclasses.dataclass(frozen=True)
class RolloutPlan:
    """The decision of one pass. The reconcile pass applies it verbatim."""

    phase: api.RolloutPhase
    serving_revision: int
    serving_template: dict[str, Any]
    """Pod-relevant spec to build the Deployment from (see :func:`serving_spec`)."""
    serving_hash: str
    surge_mode: builders.Resolved
    """The update strategy the Deployment must use now."""
    status: api.ModelDeploymentStatus
    """``md.status`` with the fields rollouts own updated: image, stableImage, history, rollout."""
    conditions: tuple[api.Condition, ...]
    """Progressing and Degraded, from the rollout's point of view."""
    ready_blocker: api.Condition | None
    """A Ready=False condition when the desired revision is not (fully) serving."""
    events: tuple[Event, ...]
    requeue_after: float | None
    """Seconds until waiting evidence is established (nothing else would bring an event); None
    when nothing waits on time."""
    started: bool = False
    succeeded: bool = False
    rolled_back: str | None = None
    """``"auto"`` or ``"manual"`` when this pass rolled back."""
    time_to_rollback_s: float | None = None
    """Seconds from the first evidence to this (automatic) rollback."""


def _condition(type_: str, status: api.ConditionStatus, reason: str, message: str, now: dt.datetime) -> api.Condition:
    return api.Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=now)


def _conditions(
    p: steps.Pass, desired_hash: str
) -> tuple[tuple[api.Condition, ...], api.Condition | None]:
    st, now = p.state, p.now
    serving = p.entry(st.serving_revision)
    msg = st.message
    if st.phase == "Progressing":
        progressing = _condition("Progressing", "True", "RollingOut", msg, now)
    elif st.phase == "Complete":
        progressing = _condition("Progressing", "False", "RolloutComplete", msg, now)
    else:
        progressing = _condition("Progressing", "False", st.phase or "Unknown", msg, now)
    if st.phase == "RolledBack" and not st.manual:
        degraded = _condition("Degraded", "True", "RolledBack", msg, now)
    elif st.phase == "Halted":
        degraded = _condition("Degraded", "True", "RolloutHalted", msg, now)
    else:
        degraded = _condition("Degraded", "False", "AsExpected", msg, now)
    blocker = None
    if st.phase != "Complete" or serving is None or serving.hash != desired_hash:
        reason = {
            "Progressing": "RollingOut",
            "Halted": "RolloutHalted",
            "RolledBack": "ManualRollback" if st.manual else "RolledBack",
        }.get(st.phase or "", "NotServingDesired")
        blocker = _condition("Ready", "False", reason, msg, now)
    return (progressing, degraded), blocker


def plan_rollout(
    md: api.ModelDeployment,
    observed: Observed,
    *,
    now: dt.datetime,
    policy: ev.RolloutPolicy | None = None,
) -> RolloutPlan:
    """Decide this pass for ``md`` (its spec, annotations and last status) given ``observed``."""
    policy = policy or ev.RolloutPolicy()
    annotations: Mapping[str, str] = md.metadata.get("annotations") or {}
    p = steps.Pass(
        state=md.status.rollout.model_copy(deep=True),
        history=[e.model_copy(deep=True) for e in md.status.history],
        image=md.status.image,
        now=now,
        policy=policy,
    )
    st = p.state
    desired = pod_template(md.spec)
    desired_hash = revision_hash(desired)
    if st.spec_hash is None:
        # First pass (or lost state): annotations from before have nothing to act on.
        st.handled_retry = annotations.get(RETRY_ANNOTATION)
        st.handled_rollback_to = annotations.get(ROLLBACK_TO_ANNOTATION)
        if not steps.adopt(p, observed.deployment, desired, desired_hash):
            steps.begin(p, desired, desired_hash, why="Created" if not p.history else "StateLost")
    else:
        steps.apply_annotations(p, annotations, desired, desired_hash)
        if st.spec_hash != desired_hash:  # after annotations: a spec change takes precedence
            steps.begin(p, desired, desired_hash, why="SpecChanged")
    steps.evaluate(p, md.spec, observed)
    serving = p.entry(st.serving_revision)
    if serving is None:  # damaged status (entry trimmed or hand-edited): restart from the spec
        steps.begin(p, desired, desired_hash, why="StatusReset", force=True)
        serving = p.history[-1]
    if steps.converged(observed.deployment, st.serving_revision, md.spec.replicas)[0]:
        p.image = serving.image
    trim(p.history, policy.history_limit, keep={st.serving_revision, st.stable_revision})
    conditions, blocker = _conditions(p, desired_hash)
    stable = p.entry(st.stable_revision)
    status = md.status.model_copy(
        update={
            "image": p.image,
            "stable_image": stable.image if stable else md.status.stable_image,
            "history": p.history,
            "rollout": st,
        }
    )
    wait = (p.wake_at - now).total_seconds() if p.wake_at is not None else None
    return RolloutPlan(
        phase=st.phase or "Progressing",
        serving_revision=serving.revision,
        serving_template=dict(serving.template or desired),
        serving_hash=serving.hash,
        surge_mode=builders.resolve_surge(md.spec.rollout.surge, gpus_short=st.no_surge),
        status=status,
        conditions=conditions,
        ready_blocker=blocker,
        events=tuple(p.events),
        requeue_after=None if wait is None else max(wait, policy.min_requeue_s),
        started=p.started,
        succeeded=p.succeeded,
        rolled_back=p.rolled_back,
        time_to_rollback_s=p.time_to_rollback_s,
    )


# ---------------------------------------------------------------- how a plan lands on the API objects


def serving_model(md: api.ModelDeployment, plan: RolloutPlan) -> api.ModelDeployment:
    """``md`` with its pod-relevant spec replaced by the serving revision's template."""
    if revision_hash(pod_template(md.spec)) == plan.serving_hash:
        return md
    return md.model_copy(update={"spec": serving_spec(md.spec, plan.serving_template)})


def desired_deployment(md: api.ModelDeployment, plan: RolloutPlan) -> dict[str, Any]:
    """The Deployment serving the plan's revision with the plan's surge mode, its pod template
    labelled with the revision (so pods of an attempt are told apart) and its hash."""
    return stamp_deployment(builders.desired_deployment(serving_model(md, plan), surge=plan.surge_mode), plan)


def stamp_deployment(deployment: dict[str, Any], plan: RolloutPlan) -> dict[str, Any]:
    """Put the plan's revision labels on a built Deployment's pod template (in place)."""
    spec = deployment.setdefault("spec", {})
    labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
    labels[REVISION_LABEL] = str(plan.serving_revision)
    labels[REVISION_HASH_LABEL] = plan.serving_hash
    return deployment


def deployment_outdated(deployment: Mapping[str, Any] | None, plan: RolloutPlan) -> bool:
    """Does the live Deployment lack the plan's revision or strategy (the rollout moved it, not
    the spec)? Rollbacks are decided on pod events; they must not wait for a resync."""
    if not deployment:
        return True
    if template_labels(deployment).get(REVISION_LABEL) != str(plan.serving_revision):
        return True
    wanted = builders.strategy(plan.surge_mode)
    live = ((deployment.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    return any(str(live.get(k)) != str(v) for k, v in wanted.items())


def events_to_record(plan: RolloutPlan) -> list[Event]:
    """The plan's events minus those the Degraded-condition transition already records."""
    return [e for e in plan.events if not (e.type == "Warning" and e.reason in _COVERED_BY_DEGRADED)]
