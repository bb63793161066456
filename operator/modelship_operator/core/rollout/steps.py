"""The transitions of the rollout engine: start, complete, roll back, halt, retry, switch surge.

Pure; each function updates one pass's scratch (:class:`Pass`: its own copies of the typed
rollout state and history) and nothing else. Called in order by
:func:`modelship_operator.core.rollout.plan_rollout`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping

from modelship_operator.core import api
from modelship_operator.core.rollout import evidence as ev
from modelship_operator.core.rollout.revisions import (
    IN_FLIGHT,
    RETRY_ANNOTATION,
    REVISION_HASH_LABEL,
    REVISION_LABEL,
    ROLLBACK_TO_ANNOTATION,
    Event,
    Obj,
    Observed,
    describe,
    entry,
    in_flight,
    model_of,
    next_revision,
    revision_pods,
    template_labels,
)


@dataclasses.dataclass
class Pass:
    """Mutable scratch for one pass: copies of the state and history, plus what happened."""

    state: api.RolloutState
    history: list[api.HistoryEntry]
    image: str | None
    now: dt.datetime
    policy: ev.RolloutPolicy
    events: list[Event] = dataclasses.field(default_factory=list)
    started: bool = False
    succeeded: bool = False
    rolled_back: str | None = None
    time_to_rollback_s: float | None = None
    wake_at: dt.datetime | None = None
    """When waiting evidence becomes established (nothing else would bring a watch event)."""

    def emit(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def entry(self, revision: int | None) -> api.HistoryEntry | None:
        return entry(self.history, revision)

    def wake(self, at: dt.datetime) -> None:
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)


def finish(item: api.HistoryEntry, outcome: api.Outcome, now: dt.datetime, reason: str = "", message: str = "") -> None:
    item.outcome = outcome
    item.finished_at = now
    if reason:
        item.reason = reason
    if message:
        item.message = message


def begin(p: Pass, template: dict[str, object], hash_: str, *, why: str, force: bool = False) -> None:
    """Start an attempt at ``template`` (or notice that the stable revision already is it)."""
    st = p.state
    st.spec_hash = hash_
    st.manual = False
    st.evidence = None
    current = in_flight(p.history)
    stable = p.entry(st.stable_revision)
    if not force and stable is not None and stable.hash == hash_:
        if current is not None:
            finish(current, "Superseded", p.now, "Superseded", f"spec changed back to {describe(stable)}")
        if st.serving_revision != st.stable_revision:
            p.emit("Normal", "ServingStable", f"spec matches stable {describe(stable)}; serving it")
        st.serving_revision, st.phase, st.message = st.stable_revision, "Complete", f"serving {describe(stable)}"
        return
    revision = next_revision(p.history)
    new = api.HistoryEntry(
        revision=revision, hash=hash_, image=str(template.get("image")), model=model_of(template),
        template=template, started_at=p.now, outcome="Progressing", reason=why,
    )
    if current is not None:
        finish(current, "Superseded", p.now, "Superseded", f"superseded by revision {revision}")
    p.history.append(new)
    st.serving_revision, st.phase, st.no_surge, st.no_surge_since = revision, "Progressing", False, None
    st.message = f"rolling out {describe(new)}"
    p.started = True
    p.emit("Normal", "RolloutStarted", f"rolling out {describe(new)} ({why}); stable is {describe(stable)}")


def adopt(p: Pass, deployment: Obj | None, template: dict[str, object], hash_: str) -> bool:
    """Recover lost rollout state from the Deployment's revision labels. True if adopted.

    Status can vanish (restored from a backup, pruned by an older CRD, edited by hand). Without
    this, every pass would see "spec changed" and start a new revision - a new ReplicaSet each
    time. If the Deployment already carries this spec's hash, that revision simply continues.
    """
    st = p.state
    labels = template_labels(deployment)
    number = str(labels.get(REVISION_LABEL) or "")
    if st.spec_hash is not None or labels.get(REVISION_HASH_LABEL) != hash_ or not number.isdigit() or number == "0":
        return False
    revision = int(number)
    found = p.entry(revision)
    if found is None:
        found = api.HistoryEntry(
            revision=revision, image=str(template.get("image")), model=model_of(template), started_at=p.now,
            outcome="Progressing", reason="Adopted",
        )
        p.history.append(found)
        p.history.sort(key=lambda e: e.revision)
    found.hash, found.template, found.model = hash_, template, model_of(template)
    st.spec_hash, st.serving_revision = hash_, revision
    if found.outcome == "Succeeded":
        st.stable_revision, st.phase = revision, "Complete"
    else:
        found.outcome, st.phase = "Progressing", "Progressing"
    st.message = f"resumed {describe(found)} from the Deployment (rollout state was missing)"
    p.emit("Normal", "RolloutResumed", st.message)
    return True


def _parse_rollback(value: str) -> str:
    return value.split("@", 1)[0].strip()


def _resolve_rollback(p: Pass, value: str) -> tuple[api.HistoryEntry | None, str]:
    """Find the revision a ``rollback-to`` value names, or explain why not."""
    st = p.state
    target = _parse_rollback(value)
    good = [e for e in p.history if e.outcome == "Succeeded" and e.template is not None]
    serving = p.entry(st.serving_revision)
    if target == "previous":
        serving_rev = st.serving_revision or 0
        serving_hash = serving.hash if serving else None
        older = [e for e in good if e.revision < serving_rev and e.hash != serving_hash]
        if not older:
            return None, "no earlier revision succeeded; nothing to roll back to"
        return older[-1], ""
    if not target.isdigit():
        return None, f"rollback-to value {value!r} is neither a revision number nor 'previous'"
    found = p.entry(int(target))
    known = ", ".join(str(e.revision) for e in p.history) or "none"
    if found is None:
        return None, f"revision {target} not found in history (known: {known})"
    if found.outcome != "Succeeded" or found.template is None:
        return None, f"revision {target} never succeeded (outcome {found.outcome}); retry it with a spec change"
    return found, ""


def _manual_rollback(p: Pass, target: api.HistoryEntry) -> None:
    st = p.state
    if target.revision == st.serving_revision and st.phase == "Complete":
        p.emit("Normal", "RollbackNotNeeded", f"{describe(target)} is already serving")
        return
    current = in_flight(p.history)
    if current is not None:
        finish(current, "RolledBack", p.now, "ManualRollback", f"manual rollback to {describe(target)}")
    st.serving_revision = st.stable_revision = target.revision
    st.phase, st.manual, st.evidence = "RolledBack", True, None
    st.message = f"serving {describe(target)} by manual rollback"
    p.rolled_back = "manual"
    p.emit("Normal", "RolledBack", f"manual rollback to {describe(target)}")


def apply_annotations(p: Pass, annotations: Mapping[str, str], desired: dict[str, object], desired_hash: str) -> None:
    st = p.state
    retry = annotations.get(RETRY_ANNOTATION)
    if retry is not None and retry != st.handled_retry:
        st.handled_retry = retry
        if st.phase in ("RolledBack", "Halted"):
            begin(p, desired, desired_hash, why="Retry", force=True)
        else:
            p.emit("Normal", "RetryIgnored", f"nothing to retry: {describe(p.entry(st.serving_revision))} is {st.phase}")
    rollback = annotations.get(ROLLBACK_TO_ANNOTATION)
    if rollback is not None and rollback != st.handled_rollback_to:
        st.handled_rollback_to = rollback
        target, error = _resolve_rollback(p, rollback)
        if target is None:
            p.emit("Warning", "RollbackRejected", error)
        else:
            _manual_rollback(p, target)


def converged(deployment: Obj | None, revision: int | None, replicas: int) -> tuple[bool, str]:
    """Is the Deployment fully on ``revision``? Also returns an "updated/available" progress text
    (the same text for a Deployment not created yet, so the first two passes agree)."""
    if not deployment or revision is None:
        return False, f"0/{replicas} updated, 0/{replicas} available"
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    want = int(spec.get("replicas", replicas) or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    progress = f"{updated}/{want} updated, {available}/{want} available"
    if template_labels(deployment).get(REVISION_LABEL) != str(revision):
        return False, progress
    current = int(status.get("observedGeneration") or 0) >= int((deployment.get("metadata") or {}).get("generation") or 0)
    return current and updated >= want and available >= want and total == want, progress


def budget_allows_no_surge(spec: api.ModelDeploymentSpec) -> bool:
    """Can one pod be down without breaking ``spec.disruptionBudget``?"""
    # With autoscaling the count moves; its floor is what the budget must hold at.
    replicas = spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas
    budget = spec.disruption_budget
    min_available = budget.min_available if budget else None
    max_unavailable = budget.max_unavailable if budget else None
    if isinstance(min_available, str):
        min_available = math.ceil(replicas * float(min_available.removesuffix("%")) / 100)
    if isinstance(max_unavailable, str):
        max_unavailable = math.floor(replicas * float(max_unavailable.removesuffix("%")) / 100)
    if min_available is not None and replicas - 1 < min_available:
        return False
    return not (max_unavailable is not None and max_unavailable < 1)


def _first_seen(p: Pass, candidate: ev.Evidence) -> dt.datetime:
    """When the condition started: from the API, else when this operator first saw it (kept in
    status; such candidates have no grace, so the remembered time is their evidence time)."""
    if candidate.since is not None:
        return candidate.since
    remembered = p.state.evidence
    if remembered is not None and remembered.key == candidate.key:
        return remembered.first_seen
    return p.now


def _surge_switch(p: Pass, spec: api.ModelDeploymentSpec, gpu_waits: list[ev.Evidence]) -> bool:
    """Under ``surge: auto``, switch to no-surge for a surge pod starved of GPUs. True if switched."""
    st = p.state
    if st.no_surge or not gpu_waits or st.stable_revision is None or not budget_allows_no_surge(spec):
        return False  # (no stable revision: no old pod whose GPUs could be handed over)
    waited = max((p.now - (c.since or p.now)).total_seconds() for c in gpu_waits)
    if waited < p.policy.surge_switch_grace_s:
        p.wake(p.now + dt.timedelta(seconds=p.policy.surge_switch_grace_s - waited))
        return False
    st.no_surge, st.no_surge_since = True, p.now
    p.emit("Normal", "SurgeDisabled", f"{gpu_waits[0].message}; continuing without surge (one pod at a time)")
    return True


def _labels(obj: Obj) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _evidence(p: Pass, spec: api.ModelDeploymentSpec, observed: Observed, item: api.HistoryEntry) -> ev.Evidence | None:
    """The earliest established evidence against the in-flight revision, remembering candidates."""
    st, policy = p.state, p.policy
    not_before = item.started_at - dt.timedelta(seconds=2) if item.started_at else None  # 1 s timestamps
    pods = revision_pods(observed.pods, item.revision)
    # Pods with this attempt's own hash are its pods, however old: a process killed between
    # applying the Deployment and writing status leaves pods older than the attempt the next
    # process records (found by the chaos campaign: they were all skipped, and the rollout
    # never rolled back). The time fence is for pods that carry no hash, or another one.
    ours = [x for x in pods if item.hash and _labels(x).get(REVISION_HASH_LABEL) == item.hash]
    others = [x for x in pods if x not in ours]
    startup = float(spec.probes.startup_timeout_seconds)
    candidates = ev.pod_evidence(ours, policy=policy, startup_timeout_s=startup, now=p.now)
    candidates += ev.pod_evidence(others, policy=policy, startup_timeout_s=startup, now=p.now, not_before=not_before)
    candidates += ev.deployment_evidence(
        observed.deployment,
        template_matches=template_labels(observed.deployment).get(REVISION_LABEL) == str(item.revision),
        not_before=not_before,
    )
    gpu_waits = [c for c in candidates if c.kind == ev.EvidenceKind.UNSCHEDULABLE and c.gpu]
    held: list[ev.Evidence] = []
    if spec.rollout.surge == "auto" and not st.no_surge and gpu_waits and st.stable_revision is not None \
            and budget_allows_no_surge(spec):
        if not _surge_switch(p, spec, gpu_waits):
            held = gpu_waits  # waiting for the switch: not evidence, but worth watching
        candidates = [c for c in candidates if c not in gpu_waits]
    switched_at = st.no_surge_since if st.no_surge else None
    best: tuple[dt.datetime, ev.Evidence] | None = None
    pending: tuple[dt.datetime, ev.Evidence] | None = None
    for cand in candidates:
        seen = _first_seen(p, cand)
        if cand.kind == ev.EvidenceKind.UNSCHEDULABLE and switched_at is not None:
            seen = max(seen, switched_at)  # the no-surge switch restarts the grace period
        start = seen + dt.timedelta(seconds=cand.grace_s)  # when the condition became evidence
        ready_at = start + dt.timedelta(seconds=cand.confirm_s)
        if ready_at <= p.now and (best is None or start < best[0]):
            best = (start, cand)
        elif ready_at > p.now:
            p.wake(ready_at)
            if pending is None or start < pending[0]:
                pending = (start, cand)
    keep = best or pending or ((_first_seen(p, held[0]), held[0]) if held else None)
    # Remembered in status: the first sighting survives a restart.
    st.evidence = (
        api.RolloutEvidence(key=keep[1].key, kind=keep[1].kind, message=keep[1].message, first_seen=keep[0])
        if keep
        else None
    )
    return best[1] if best else None


def evaluate(p: Pass, spec: api.ModelDeploymentSpec, observed: Observed) -> None:
    """Move the in-flight attempt on: complete, roll back, halt, or keep going."""
    st = p.state
    item = p.entry(st.serving_revision)
    if item is None or item.outcome not in IN_FLIGHT:
        return
    done, progress = converged(observed.deployment, st.serving_revision, spec.replicas)
    if done:
        finish(item, "Succeeded", p.now, "RolloutComplete", f"all replicas on {item.image}")
        st.stable_revision, st.phase, st.evidence, st.manual = st.serving_revision, "Complete", None, False
        st.message = f"serving {describe(item)}"
        p.succeeded = True
        p.emit("Normal", "RolloutSucceeded", f"{describe(item)} is serving ({progress})")
        return
    found = _evidence(p, spec, observed, item)
    if found is None:
        if st.phase != "Halted":
            st.message = f"rolling out {describe(item)}: {progress}" + (" (no surge)" if st.no_surge else "")
        return
    p.wake_at = None  # decided now: nothing to wait for
    auto = spec.rollout.auto_rollback
    stable = p.entry(st.stable_revision)
    first = st.evidence.first_seen if st.evidence is not None else p.now
    if auto and stable is not None and stable is not item:
        msg = f"rolled back {describe(item)} to stable {describe(stable)}: {found.message}"
        finish(item, "RolledBack", p.now, found.kind, found.message)
        st.serving_revision, st.phase, st.evidence = st.stable_revision, "RolledBack", None
        st.message = msg
        p.rolled_back = "auto"
        p.time_to_rollback_s = max(0.0, (p.now - first).total_seconds())
        p.emit("Warning", "RolledBack", msg)
        return
    why = "autoRollback is off" if not auto else "there is no stable revision to roll back to"
    msg = f"rollout of {describe(item)} halted ({why}): {found.message}"
    if st.phase != "Halted" or item.reason != found.kind:
        p.emit("Warning", "RolloutHalted", msg)
    item.outcome, item.reason, item.message = "Halted", found.kind, found.message
    st.phase, st.message = "Halted", msg
