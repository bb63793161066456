"""The transitions of the rollout core: start, complete, roll back, halt, retry, switch surge.

Pure; each function mutates one pass's scratch (:class:`Pass`) and nothing else. Called in order
by :func:`modelship_operator.rollout.plan_rollout`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

from modelship_operator.core.rollout import evidence as ev
from modelship_operator.core.rollout.revisions import (
    DEFAULT_STARTUP_TIMEOUT_S,
    IN_FLIGHT,
    RETRY_ANNOTATION,
    REVISION_HASH_LABEL,
    REVISION_LABEL,
    ROLLBACK_TO_ANNOTATION,
    Event,
    Obj,
    Observed,
    Outcome,
    Phase,
    State,
    describe,
    format_time,
    revision_pods,
)

@dataclasses.dataclass
class Pass:
    """Mutable scratch for one pass: the state plus what happened."""

    st: State
    now: dt.datetime
    policy: ev.RolloutPolicy
    events: list[Event] = dataclasses.field(default_factory=list)
    started: bool = False
    succeeded: bool = False
    rolled_back: str | None = None
    time_to_rollback_s: float | None = None

    def emit(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))



def finish(entry: dict[str, Any], outcome: str, now: dt.datetime, reason: str = "", message: str = "") -> None:
    entry["outcome"] = outcome
    entry["finishedAt"] = format_time(now)
    if reason:
        entry["reason"] = reason
    if message:
        entry["message"] = message


def begin(p: Pass, template: dict[str, Any], hash_: str, *, why: str, force: bool = False) -> None:
    """Start an attempt at ``template`` (or notice that the stable revision already is it)."""
    st = p.st
    st.spec_hash = hash_
    st.manual = False
    st.evidence = None
    current = st.in_flight()
    stable = st.entry(st.stable)
    if not force and stable is not None and stable.get("hash") == hash_:
        if current is not None:
            finish(current, Outcome.SUPERSEDED, p.now, "Superseded", f"spec changed back to {describe(stable)}")
        if st.serving != st.stable:
            p.emit("Normal", "ServingStable", f"spec matches stable {describe(stable)}; serving it")
        st.serving, st.phase, st.message = st.stable, Phase.COMPLETE, f"serving {describe(stable)}"
        return
    revision = st.next_revision()
    entry = {
        "revision": revision,
        "hash": hash_,
        "image": template.get("image"),
        "model": _model_of(template),
        "template": template,
        "startedAt": format_time(p.now),
        "finishedAt": None,
        "outcome": Outcome.PROGRESSING,
        "reason": why,
        "message": "",
    }
    if current is not None:
        finish(current, Outcome.SUPERSEDED, p.now, "Superseded", f"superseded by revision {revision}")
    st.history.append(entry)
    st.serving, st.phase, st.no_surge, st.no_surge_since = revision, Phase.PROGRESSING, False, None
    st.message = f"rolling out {describe(entry)}"
    p.started = True
    p.emit("Normal", "RolloutStarted", f"rolling out {describe(entry)} ({why}); stable is {describe(stable)}")


def adopt(p: Pass, deployment: Obj | None, template: dict[str, Any], hash_: str) -> bool:
    """Recover lost rollout state from the Deployment's revision labels. True if adopted.

    Status can vanish (restored from a backup, pruned by an older CRD, edited by hand). Without
    this, every pass would see "spec changed" and start a new revision - a new ReplicaSet each
    time. If the Deployment already carries this spec's hash, that revision simply continues.
    """
    st = p.st
    labels = ((((deployment or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    number = str(labels.get(REVISION_LABEL) or "")
    if st.spec_hash is not None or labels.get(REVISION_HASH_LABEL) != hash_ or not number.isdigit():
        return False
    revision = int(number)
    entry = st.entry(revision)
    if entry is None:
        entry = {"revision": revision, "image": template.get("image"), "startedAt": format_time(p.now),
                 "finishedAt": None, "outcome": Outcome.PROGRESSING, "reason": "Adopted", "message": ""}
        st.history.append(entry)
        st.history.sort(key=lambda e: int(e.get("revision") or 0))
    entry.update(hash=hash_, template=template, model=_model_of(template))
    st.spec_hash, st.serving = hash_, revision
    if entry.get("outcome") == Outcome.SUCCEEDED:
        st.stable, st.phase = revision, Phase.COMPLETE
    else:
        entry["outcome"], st.phase = Outcome.PROGRESSING, Phase.PROGRESSING
    st.message = f"resumed {describe(entry)} from the Deployment (rollout state was missing)"
    p.emit("Normal", "RolloutResumed", st.message)
    return True


def _model_of(template: Obj) -> str | None:
    model = template.get("model") or {}
    return model.get("uri") or model.get("name")


def _parse_rollback(value: str) -> str:
    return value.split("@", 1)[0].strip()


def _resolve_rollback(st: State, value: str) -> tuple[dict[str, Any] | None, str]:
    """Find the revision a ``rollback-to`` value names, or explain why not."""
    target = _parse_rollback(value)
    good = [e for e in st.history if e.get("outcome") == Outcome.SUCCEEDED and e.get("template") is not None]
    serving = st.entry(st.serving)
    if target == "previous":
        serving_rev = int(st.serving or 0)
        serving_hash = serving.get("hash") if serving else None
        older = [e for e in good if int(e["revision"]) < serving_rev and e.get("hash") != serving_hash]
        if not older:
            return None, "no earlier revision succeeded; nothing to roll back to"
        return older[-1], ""
    if not target.isdigit():
        return None, f"rollback-to value {value!r} is neither a revision number nor 'previous'"
    entry = st.entry(int(target))
    known = ", ".join(str(e.get("revision")) for e in st.history) or "none"
    if entry is None:
        return None, f"revision {target} not found in history (known: {known})"
    if entry.get("outcome") != Outcome.SUCCEEDED or entry.get("template") is None:
        return None, f"revision {target} never succeeded (outcome {entry.get('outcome')}); retry it with a spec change"
    return entry, ""


def _manual_rollback(p: Pass, target: dict[str, Any]) -> None:
    st = p.st
    if target.get("revision") == st.serving and st.phase == Phase.COMPLETE:
        p.emit("Normal", "RollbackNotNeeded", f"{describe(target)} is already serving")
        return
    current = st.in_flight()
    if current is not None:
        finish(current, Outcome.ROLLED_BACK, p.now, "ManualRollback", f"manual rollback to {describe(target)}")
    st.serving = st.stable = target["revision"]
    st.phase, st.manual, st.evidence = Phase.ROLLED_BACK, True, None
    st.message = f"serving {describe(target)} by manual rollback"
    p.rolled_back = "manual"
    p.emit("Normal", "RolledBack", f"manual rollback to {describe(target)}")


def apply_annotations(p: Pass, annotations: Obj, desired: dict[str, Any], desired_hash: str) -> None:
    st = p.st
    retry = annotations.get(RETRY_ANNOTATION)
    if retry is not None and retry != st.handled_retry:
        st.handled_retry = retry
        if st.phase in (Phase.ROLLED_BACK, Phase.HALTED):
            begin(p, desired, desired_hash, why="Retry", force=True)
        else:
            p.emit("Normal", "RetryIgnored", f"nothing to retry: {describe(st.entry(st.serving))} is {st.phase}")
    rollback = annotations.get(ROLLBACK_TO_ANNOTATION)
    if rollback is not None and rollback != st.handled_rollback:
        st.handled_rollback = rollback
        target, error = _resolve_rollback(st, rollback)
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
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    want = int(spec.get("replicas", replicas) or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    progress = f"{updated}/{want} updated, {available}/{want} available"
    if labels.get(REVISION_LABEL) != str(revision):
        return False, progress
    current = int(status.get("observedGeneration") or 0) >= int((deployment.get("metadata") or {}).get("generation") or 0)
    return current and updated >= want and available >= want and total == want, progress


def budget_allows_no_surge(spec: Obj) -> bool:
    """Can one pod be down without breaking ``spec.disruptionBudget``?"""
    replicas = int(spec.get("replicas", 1) or 0)
    budget = spec.get("disruptionBudget") or {}
    min_available = budget.get("minAvailable")
    max_unavailable = budget.get("maxUnavailable")
    if isinstance(min_available, str) and min_available.endswith("%"):
        min_available = math.ceil(replicas * float(min_available[:-1]) / 100)
    if isinstance(max_unavailable, str) and max_unavailable.endswith("%"):
        max_unavailable = math.floor(replicas * float(max_unavailable[:-1]) / 100)
    if min_available is not None and replicas - 1 < int(min_available):
        return False
    return not (max_unavailable is not None and int(max_unavailable) < 1)


def _first_seen(p: Pass, candidate: ev.Evidence) -> dt.datetime:
    """When the condition started: from the API, else when this operator first saw it (kept in
    status; such candidates have no grace, so the remembered time is their evidence time)."""
    if candidate.since is not None:
        return candidate.since
    remembered = p.st.evidence
    if remembered and remembered.get("key") == candidate.key:
        return ev.parse_time(remembered.get("firstSeen")) or p.now
    return p.now


def _surge_switch(p: Pass, spec: Obj, gpu_waits: list[ev.Evidence]) -> bool:
    """Under ``surge: auto``, switch to no-surge for a surge pod starved of GPUs. True if switched."""
    if p.st.no_surge or not gpu_waits or p.st.stable is None or not budget_allows_no_surge(spec):
        return False  # (no stable revision: no old pod whose GPUs could be handed over)
    waited = max((p.now - (c.since or p.now)).total_seconds() for c in gpu_waits)
    if waited < p.policy.surge_switch_grace_s:
        return False
    p.st.no_surge, p.st.no_surge_since = True, format_time(p.now)
    p.emit(
        "Normal",
        "SurgeDisabled",
        f"{gpu_waits[0].message}; continuing without surge (one pod at a time)",
    )
    return True


def _evidence(p: Pass, spec: Obj, observed: Observed, entry: Obj) -> ev.Evidence | None:
    """The earliest established evidence against the in-flight revision, remembering candidates."""
    policy = p.policy
    rollout_spec = spec.get("rollout") or {}
    startup = float((spec.get("probes") or {}).get("startupTimeoutSeconds") or DEFAULT_STARTUP_TIMEOUT_S)
    not_before = ev.parse_time(entry.get("startedAt"))
    if not_before is not None:
        not_before -= dt.timedelta(seconds=2)  # creationTimestamp has 1 s resolution
    pods = revision_pods(observed.pods, int(entry["revision"]))
    candidates = ev.pod_evidence(pods, policy=policy, startup_timeout_s=startup, now=p.now, not_before=not_before)
    labels = (((observed.deployment or {}).get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    candidates += ev.deployment_evidence(
        observed.deployment, template_matches=labels.get(REVISION_LABEL) == str(entry["revision"]), not_before=not_before
    )
    gpu_waits = [c for c in candidates if c.kind == ev.EvidenceKind.UNSCHEDULABLE and c.gpu]
    surge_auto = (rollout_spec.get("surge") or "auto") == "auto"
    held: list[ev.Evidence] = []
    if surge_auto and not p.st.no_surge and gpu_waits and p.st.stable is not None and budget_allows_no_surge(spec):
        if not _surge_switch(p, spec, gpu_waits):
            held = gpu_waits  # waiting for the switch: not evidence, but worth watching
        candidates = [c for c in candidates if c not in gpu_waits]
    switched_at = ev.parse_time(p.st.no_surge_since) if p.st.no_surge else None
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
        elif ready_at > p.now and (pending is None or start < pending[0]):
            pending = (start, cand)
    keep = best or pending or (held and (_first_seen(p, held[0]), held[0])) or None
    # Remembered in status: the first sighting survives a restart, and a pending record tells the
    # rollout timer to keep looking (nothing else may happen before the grace period ends).
    p.st.evidence = (
        {"key": keep[1].key, "kind": keep[1].kind, "message": keep[1].message, "firstSeen": format_time(keep[0])}
        if keep
        else None
    )
    return best[1] if best else None


def evaluate(p: Pass, spec: Obj, observed: Observed) -> None:
    """Move the in-flight attempt on: complete, roll back, halt, or keep going."""
    st = p.st
    entry = st.entry(st.serving)
    if entry is None or entry.get("outcome") not in IN_FLIGHT:
        return
    done, progress = converged(observed.deployment, st.serving, int(spec.get("replicas", 1) or 0))
    if done:
        finish(entry, Outcome.SUCCEEDED, p.now, "RolloutComplete", f"all replicas on {entry.get('image')}")
        st.stable, st.phase, st.evidence, st.manual = st.serving, Phase.COMPLETE, None, False
        st.message = f"serving {describe(entry)}"
        p.succeeded = True
        p.emit("Normal", "RolloutSucceeded", f"{describe(entry)} is serving ({progress})")
        return
    found = _evidence(p, spec, observed, entry)
    if found is None:
        if st.phase != Phase.HALTED:
            st.message = f"rolling out {describe(entry)}: {progress}" + (" (no surge)" if st.no_surge else "")
        return
    auto = (spec.get("rollout") or {}).get("autoRollback", True) is not False
    stable = st.entry(st.stable)
    first = ev.parse_time((st.evidence or {}).get("firstSeen")) or p.now
    if auto and stable is not None and stable is not entry:
        msg = f"rolled back {describe(entry)} to stable {describe(stable)}: {found.message}"
        finish(entry, Outcome.ROLLED_BACK, p.now, found.kind, found.message)
        st.serving, st.phase, st.evidence = st.stable, Phase.ROLLED_BACK, None
        st.message = msg
        p.rolled_back = "auto"
        p.time_to_rollback_s = max(0.0, (p.now - first).total_seconds())
        p.emit("Warning", "RolledBack", msg)
        return
    why = "autoRollback is off" if not auto else "there is no stable revision to roll back to"
    msg = f"rollout of {describe(entry)} halted ({why}): {found.message}"
    if st.phase != Phase.HALTED or entry.get("reason") != found.kind:
        p.emit("Warning", "RolloutHalted", msg)
    entry.update(outcome=Outcome.HALTED, reason=found.kind, message=found.message)
    st.phase, st.message = Phase.HALTED, msg

