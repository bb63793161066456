"""Rollouts and rollbacks by image tag: the pure decision core.

``plan_rollout(spec, status, annotations, observed, now=...)`` reads the ModelDeployment spec, the
rollout state it left in ``status`` last time, the user's annotations and the observed Deployment
and pods, and returns a :class:`RolloutPlan`: which revision the Deployment must carry, with which
update strategy, and the new status, conditions and events. No API calls, no clock, no
environment: the kopf shell does the I/O, and every pass is idempotent, so a restarted operator
resumes from status alone (and a pass whose status write failed is simply recomputed).

Revisions
    A revision is one distinct *pod-relevant* spec (:data:`POD_FIELDS`: image, model, serving
    config, resources, GPU, env, probes, placement); ``replicas``, ``rollout`` and
    ``disruptionBudget`` changes are not revisions. Each attempt gets the next revision number; the
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
    before the surge switch) leaves a pending record in ``status.rollout.evidence``; while it is
    there the work queue re-runs the pass every :attr:`RolloutPolicy.poll_interval_s` (3 s). With
    the default thresholds a rollback starts 5-8 s after the first evidence (target: 30 s).

Failure evidence (:mod:`modelship_operator.evidence`), whichever comes first: image pull
failures, crash loops, startup never succeeding, unschedulable beyond a grace period,
``ProgressDeadlineExceeded``. With ``spec.rollout.autoRollback`` (default true) the Deployment goes
back to the stable revision; otherwise the rollout halts and status says why.

GPU-aware surge (``spec.rollout.surge``): ``surge`` starts new pods before old ones stop
(maxUnavailable 0); ``no-surge`` replaces one at a time (maxSurge 0, maxUnavailable 1); ``auto``
starts with surge and switches to no-surge when a surge pod cannot get ``nvidia.com/gpu`` — unless that would break the
disruption budget, in which case the pod's unschedulability becomes ordinary evidence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from modelship_operator.core.rollout import evidence as ev
from modelship_operator.core.rollout import steps
from modelship_operator.core.rollout.revisions import (  # re-exported: this module is the entry point
    POD_FIELDS,
    RETRY_ANNOTATION,
    REVISION_HASH_LABEL,
    REVISION_LABEL,
    ROLLBACK_TO_ANNOTATION,
    Condition,
    Event,
    Observed,
    Outcome,
    Phase,
    State,
    effective_spec,
    format_time,
    pod_template,
    revision_hash,
    revision_pods,
)

__all__ = [
    "POD_FIELDS",
    "REVISION_LABEL",
    "REVISION_HASH_LABEL",
    "ROLLBACK_TO_ANNOTATION",
    "RETRY_ANNOTATION",
    "Observed",
    "Event",
    "Condition",
    "Outcome",
    "Phase",
    "RolloutPlan",
    "pod_template",
    "revision_hash",
    "plan_rollout",
    "effective_spec",
    "stamp_deployment",
    "revision_pods",
    "format_time",
]

Obj = Mapping[str, Any]

@dataclasses.dataclass(frozen=True)
class RolloutPlan:
    """The decision of one pass. The shell applies it verbatim."""

    phase: str
    serving_revision: int
    serving_template: dict[str, Any]
    """Pod-relevant spec to build the Deployment from (see :func:`effective_spec`)."""
    serving_hash: str
    surge_mode: str
    """``"surge"`` or ``"no-surge"``: the update strategy the Deployment must use now."""
    status: dict[str, Any]
    """Status fields owned by rollouts: image, stableImage, history, rollout."""
    conditions: tuple[Condition, ...]
    """Progressing and Degraded, from the rollout's point of view."""
    ready_blocker: Condition | None
    """A Ready=False condition when the desired revision is not (fully) serving."""
    events: tuple[Event, ...]
    requeue_after: float | None
    started: bool = False
    succeeded: bool = False
    rolled_back: str | None = None
    """``"auto"`` or ``"manual"`` when this pass rolled back."""
    time_to_rollback_s: float | None = None
    """Seconds from the first evidence to this (automatic) rollback."""


def stamp_deployment(deployment: dict[str, Any], plan: RolloutPlan) -> dict[str, Any]:
    """Put the plan's revision labels on a built Deployment's pod template (in place)."""
    spec = deployment.setdefault("spec", {})
    meta = spec.setdefault("template", {}).setdefault("metadata", {})
    labels = meta.setdefault("labels", {})
    labels[REVISION_LABEL] = str(plan.serving_revision)
    labels[REVISION_HASH_LABEL] = plan.serving_hash
    return deployment


# ---------------------------------------------------------------- outputs


def _surge_mode(spec: Obj, st: State) -> str:
    mode = (spec.get("rollout") or {}).get("surge") or "auto"
    if mode == "no-surge" or (mode == "auto" and st.no_surge):
        return "no-surge"
    return "surge"


def _conditions(st: State, desired_hash: str) -> tuple[tuple[Condition, ...], Condition | None]:
    serving = st.entry(st.serving)
    msg = st.message
    if st.phase == Phase.PROGRESSING:
        progressing = Condition("Progressing", "True", "RollingOut", msg)
    elif st.phase == Phase.COMPLETE:
        progressing = Condition("Progressing", "False", "RolloutComplete", msg)
    else:
        progressing = Condition("Progressing", "False", st.phase or "Unknown", msg)
    if st.phase == Phase.ROLLED_BACK and not st.manual:
        degraded = Condition("Degraded", "True", "RolledBack", msg)
    elif st.phase == Phase.HALTED:
        degraded = Condition("Degraded", "True", "RolloutHalted", msg)
    else:
        degraded = Condition("Degraded", "False", "AsExpected", msg)
    blocker = None
    if st.phase != Phase.COMPLETE or not serving or serving.get("hash") != desired_hash:
        reason = {
            Phase.PROGRESSING: "RollingOut",
            Phase.HALTED: "RolloutHalted",
            Phase.ROLLED_BACK: "ManualRollback" if st.manual else "RolledBack",
        }.get(st.phase or "", "NotServingDesired")
        blocker = Condition("Ready", "False", reason, msg)
    return (progressing, degraded), blocker


def plan_rollout(
    spec: Obj,
    status: Obj | None,
    annotations: Obj | None,
    observed: Observed,
    *,
    now: dt.datetime,
    policy: ev.RolloutPolicy | None = None,
) -> RolloutPlan:
    """Decide this pass. ``spec`` is the ModelDeployment spec with defaults applied (camelCase)."""
    policy = policy or ev.RolloutPolicy()
    st = State.load(status or {})
    p = steps.Pass(st, now, policy)
    desired = pod_template(spec)
    desired_hash = revision_hash(desired)
    if st.spec_hash is None:
        # First pass (or lost state): annotations from before have nothing to act on.
        st.handled_retry = (annotations or {}).get(RETRY_ANNOTATION)
        st.handled_rollback = (annotations or {}).get(ROLLBACK_TO_ANNOTATION)
        if not steps.adopt(p, observed.deployment, desired, desired_hash):
            steps.begin(p, desired, desired_hash, why="Created" if not st.history else "StateLost")
    else:
        steps.apply_annotations(p, annotations or {}, desired, desired_hash)
        if st.spec_hash != desired_hash:  # after annotations: a spec change takes precedence
            steps.begin(p, desired, desired_hash, why="SpecChanged")
    steps.evaluate(p, spec, observed)
    serving = st.entry(st.serving)
    if serving is None:  # damaged status (entry trimmed or hand-edited): restart from the spec
        steps.begin(p, desired, desired_hash, why="StatusReset", force=True)
        serving = st.history[-1]
    if steps.converged(observed.deployment, st.serving, int(spec.get("replicas", 1) or 0))[0]:
        st.image = serving.get("image")
    st.trim(policy.history_limit)
    conditions, blocker = _conditions(st, desired_hash)
    settled = st.phase in (Phase.COMPLETE, Phase.ROLLED_BACK) and st.image == serving.get("image")
    return RolloutPlan(
        phase=st.phase or Phase.PROGRESSING,
        serving_revision=int(serving["revision"]),
        serving_template=dict(serving.get("template") or desired),
        serving_hash=str(serving.get("hash")),
        surge_mode=_surge_mode(spec, st),
        status=st.dump(),
        conditions=conditions,
        ready_blocker=blocker,
        events=tuple(p.events),
        requeue_after=None if settled else policy.poll_interval_s,
        started=p.started,
        succeeded=p.succeeded,
        rolled_back=p.rolled_back,
        time_to_rollback_s=p.time_to_rollback_s,
    )
