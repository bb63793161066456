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

Failure evidence (:mod:`modelship_operator.evidence`), whichever comes first: image pull
failures, crash loops, startup never succeeding, unschedulable beyond a grace period,
``ProgressDeadlineExceeded``. With ``spec.rollout.autoRollback`` (default true) the Deployment goes
back to the stable revision; otherwise the rollout halts and status says why.

GPU-aware surge (``spec.rollout.surge``): ``surge`` starts new pods before old ones stop
(maxUnavailable 0); ``no-surge`` replaces one at a time (maxSurge 0, maxUnavailable 1); ``auto`` starts with surge and
switches to no-surge when a surge pod cannot get ``nvidia.com/gpu`` — unless that would break the
disruption budget, in which case the pod's unschedulability becomes ordinary evidence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from modelship_operator import evidence as ev

__all__ = [
    "POD_FIELDS",
    "REVISION_LABEL",
    "REVISION_HASH_LABEL",
    "ROLLBACK_TO_ANNOTATION",
    "RETRY_ANNOTATION",
    "Observed",
    "Event",
    "Condition",
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

REVISION_LABEL = "modelship.io/revision"
"""Pod-template label: the revision number the pods belong to."""
REVISION_HASH_LABEL = "modelship.io/revision-hash"
"""Pod-template label: hash of the revision's pod-relevant spec."""
ROLLBACK_TO_ANNOTATION = "modelship.io/rollback-to"
RETRY_ANNOTATION = "modelship.io/retry"

POD_FIELDS: tuple[str, ...] = (
    "image",
    "model",
    "serving",
    "resources",
    "gpu",
    "env",
    "probes",
    "nodeSelector",
    "tolerations",
    "affinity",
)
"""Spec fields that end up in the pod template: changing any of them is a new revision."""

DEFAULT_STARTUP_TIMEOUT_S = 900.0
"""Mirrors ``spec.probes.startupTimeoutSeconds``' default when the spec passed in lacks it."""


class Phase:
    PROGRESSING = "Progressing"
    COMPLETE = "Complete"
    ROLLED_BACK = "RolledBack"
    HALTED = "Halted"


class Outcome:
    PROGRESSING = "Progressing"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"
    HALTED = "Halted"


IN_FLIGHT = (Outcome.PROGRESSING, Outcome.HALTED)


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the shell read from the API this pass (plain dicts)."""

    deployment: Obj | None = None
    pods: Sequence[Obj] = ()


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False"
    reason: str
    message: str


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


# ---------------------------------------------------------------- revision identity


def pod_template(spec: Obj) -> dict[str, Any]:
    """The pod-relevant part of a spec (``None`` fields dropped, so absent == null)."""
    return {k: spec[k] for k in POD_FIELDS if spec.get(k) is not None}


def revision_hash(template: Obj) -> str:
    """Stable short hash of a pod template (key order and whitespace do not matter)."""
    blob = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def effective_spec(spec: Obj, template: Obj) -> dict[str, Any]:
    """The spec with its pod-relevant fields replaced by ``template`` (to build the Deployment)."""
    rest = {k: v for k, v in spec.items() if k not in POD_FIELDS}
    return {**rest, **template}


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def revision_pods(pods: Sequence[Obj], revision: int) -> list[Obj]:
    """The pods labelled with ``revision``."""
    want = str(revision)
    return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL) == want]


def stamp_deployment(deployment: dict[str, Any], plan: RolloutPlan) -> dict[str, Any]:
    """Put the plan's revision labels on a built Deployment's pod template (in place)."""
    spec = deployment.setdefault("spec", {})
    meta = spec.setdefault("template", {}).setdefault("metadata", {})
    labels = meta.setdefault("labels", {})
    labels[REVISION_LABEL] = str(plan.serving_revision)
    labels[REVISION_HASH_LABEL] = plan.serving_hash
    return deployment


# ---------------------------------------------------------------- state in status


@dataclasses.dataclass
class _State:
    history: list[dict[str, Any]]
    spec_hash: str | None = None
    phase: str | None = None
    serving: int | None = None
    stable: int | None = None
    manual: bool = False
    no_surge: bool = False
    no_surge_since: str | None = None
    evidence: dict[str, Any] | None = None
    handled_retry: str | None = None
    handled_rollback: str | None = None
    image: str | None = None
    message: str = ""

    @classmethod
    def load(cls, status: Obj) -> _State:
        r = dict(status.get("rollout") or {})
        evidence = dict(r.get("evidence") or {})
        return cls(
            history=[dict(e) for e in status.get("history") or () if isinstance(e, Mapping)],
            spec_hash=r.get("specHash") or None,
            phase=r.get("phase") or None,
            serving=r.get("servingRevision") or None,
            stable=r.get("stableRevision") or None,
            manual=bool(r.get("manual")),
            no_surge=bool(r.get("noSurge")),
            no_surge_since=r.get("noSurgeSince") or None,
            evidence=evidence if evidence.get("key") else None,
            handled_retry=r.get("handledRetry") or None,
            handled_rollback=r.get("handledRollbackTo") or None,
            image=status.get("image"),
            message=r.get("message") or "",
        )

    def entry(self, revision: int | None) -> dict[str, Any] | None:
        for e in self.history:
            if e.get("revision") == revision:
                return e
        return None

    def in_flight(self) -> dict[str, Any] | None:
        for e in reversed(self.history):
            if e.get("outcome") in IN_FLIGHT:
                return e
        return None

    def next_revision(self) -> int:
        return max((int(e.get("revision") or 0) for e in self.history), default=0) + 1

    def trim(self, limit: int) -> None:
        keep = {self.serving, self.stable}
        while len(self.history) > limit:
            drop = next((e for e in self.history if e.get("revision") not in keep), None)
            if drop is None:
                return
            self.history.remove(drop)

    def dump(self) -> dict[str, Any]:
        stable = self.entry(self.stable)
        return {
            "image": self.image,
            "stableImage": stable.get("image") if stable else None,
            "history": self.history,
            # Never None below: status is merge-patched, where an omitted key keeps its old value,
            # so "cleared" must be written as "" / 0 (the empty values load() reads back as unset).
            "rollout": {
                "specHash": self.spec_hash or "",
                "phase": self.phase or "",
                "servingRevision": self.serving or 0,
                "stableRevision": self.stable or 0,
                "manual": self.manual,
                "noSurge": self.no_surge,
                "noSurgeSince": self.no_surge_since or "",
                "evidence": self.evidence or {"key": "", "kind": "", "message": "", "firstSeen": ""},
                "handledRetry": self.handled_retry or "",
                "handledRollbackTo": self.handled_rollback or "",
                "message": self.message,
            },
        }


@dataclasses.dataclass
class _Pass:
    """Mutable scratch for one pass: the state plus what happened."""

    st: _State
    now: dt.datetime
    policy: ev.RolloutPolicy
    events: list[Event] = dataclasses.field(default_factory=list)
    started: bool = False
    succeeded: bool = False
    rolled_back: str | None = None
    time_to_rollback_s: float | None = None

    def emit(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))


def _describe(entry: Obj | None) -> str:
    if not entry:
        return "nothing"
    return f"revision {entry.get('revision')} ({entry.get('image')})"


# ---------------------------------------------------------------- transitions


def _finish(entry: dict[str, Any], outcome: str, now: dt.datetime, reason: str = "", message: str = "") -> None:
    entry["outcome"] = outcome
    entry["finishedAt"] = format_time(now)
    if reason:
        entry["reason"] = reason
    if message:
        entry["message"] = message


def _begin(p: _Pass, template: dict[str, Any], hash_: str, *, why: str, force: bool = False) -> None:
    """Start an attempt at ``template`` (or notice that the stable revision already is it)."""
    st = p.st
    st.spec_hash = hash_
    st.manual = False
    st.evidence = None
    current = st.in_flight()
    stable = st.entry(st.stable)
    if not force and stable is not None and stable.get("hash") == hash_:
        if current is not None:
            _finish(current, Outcome.SUPERSEDED, p.now, "Superseded", f"spec changed back to {_describe(stable)}")
        if st.serving != st.stable:
            p.emit("Normal", "ServingStable", f"spec matches stable {_describe(stable)}; serving it")
        st.serving, st.phase, st.message = st.stable, Phase.COMPLETE, f"serving {_describe(stable)}"
        return
    revision = st.next_revision()
    entry = {
        "revision": revision,
        "hash": hash_,
        "image": template.get("image"),
        "model": (template.get("model") or {}).get("uri") or (template.get("model") or {}).get("name"),
        "template": template,
        "startedAt": format_time(p.now),
        "finishedAt": None,
        "outcome": Outcome.PROGRESSING,
        "reason": why,
        "message": "",
    }
    if current is not None:
        _finish(current, Outcome.SUPERSEDED, p.now, "Superseded", f"superseded by revision {revision}")
    st.history.append(entry)
    st.serving, st.phase, st.no_surge, st.no_surge_since = revision, Phase.PROGRESSING, False, None
    st.message = f"rolling out {_describe(entry)}"
    p.started = True
    p.emit("Normal", "RolloutStarted", f"rolling out {_describe(entry)} ({why}); stable is {_describe(stable)}")


def _parse_rollback(value: str) -> str:
    return value.split("@", 1)[0].strip()


def _resolve_rollback(st: _State, value: str) -> tuple[dict[str, Any] | None, str]:
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


def _manual_rollback(p: _Pass, target: dict[str, Any]) -> None:
    st = p.st
    if target.get("revision") == st.serving and st.phase == Phase.COMPLETE:
        p.emit("Normal", "RollbackNotNeeded", f"{_describe(target)} is already serving")
        return
    current = st.in_flight()
    if current is not None:
        _finish(current, Outcome.ROLLED_BACK, p.now, "ManualRollback", f"manual rollback to {_describe(target)}")
    st.serving = st.stable = target["revision"]
    st.phase, st.manual, st.evidence = Phase.ROLLED_BACK, True, None
    st.message = f"serving {_describe(target)} by manual rollback"
    p.rolled_back = "manual"
    p.emit("Normal", "RolledBack", f"manual rollback to {_describe(target)}")


def _annotations(p: _Pass, annotations: Obj, desired: dict[str, Any], desired_hash: str) -> None:
    st = p.st
    retry = annotations.get(RETRY_ANNOTATION)
    if retry is not None and retry != st.handled_retry:
        st.handled_retry = retry
        if st.phase in (Phase.ROLLED_BACK, Phase.HALTED):
            _begin(p, desired, desired_hash, why="Retry", force=True)
        else:
            p.emit("Normal", "RetryIgnored", f"nothing to retry: {_describe(st.entry(st.serving))} is {st.phase}")
    rollback = annotations.get(ROLLBACK_TO_ANNOTATION)
    if rollback is not None and rollback != st.handled_rollback:
        st.handled_rollback = rollback
        target, error = _resolve_rollback(st, rollback)
        if target is None:
            p.emit("Warning", "RollbackRejected", error)
        else:
            _manual_rollback(p, target)


def _converged(deployment: Obj | None, revision: int | None) -> tuple[bool, str]:
    """Is the Deployment fully on ``revision``? Also returns an "updated/ready" progress text."""
    if not deployment or revision is None:
        return False, "no Deployment yet"
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    want = int(spec.get("replicas", 1) or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    progress = f"{updated}/{want} updated, {available}/{want} available"
    if labels.get(REVISION_LABEL) != str(revision):
        return False, progress
    current = int(status.get("observedGeneration") or 0) >= int((deployment.get("metadata") or {}).get("generation") or 0)
    return current and updated >= want and available >= want and total == want, progress


def _budget_allows_no_surge(spec: Obj) -> bool:
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


def _first_seen(p: _Pass, candidate: ev.Evidence) -> dt.datetime:
    if candidate.since is not None:
        return candidate.since
    remembered = p.st.evidence
    if remembered and remembered.get("key") == candidate.key:
        return ev.parse_time(remembered.get("firstSeen")) or p.now
    return p.now


def _surge_switch(p: _Pass, spec: Obj, gpu_waits: list[ev.Evidence]) -> bool:
    """Under ``surge: auto``, switch to no-surge for a surge pod starved of GPUs. True if switched."""
    if p.st.no_surge or not gpu_waits or not _budget_allows_no_surge(spec):
        return False
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


def _evidence(p: _Pass, spec: Obj, observed: Observed, entry: Obj) -> ev.Evidence | None:
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
    if surge_auto and not p.st.no_surge and gpu_waits and _budget_allows_no_surge(spec):
        _surge_switch(p, spec, gpu_waits)
        candidates = [c for c in candidates if c not in gpu_waits]
    switched_at = ev.parse_time(p.st.no_surge_since) if p.st.no_surge else None
    best: tuple[dt.datetime, ev.Evidence] | None = None
    pending: tuple[dt.datetime, ev.Evidence] | None = None
    for cand in candidates:
        seen = _first_seen(p, cand)
        if cand.kind == ev.EvidenceKind.UNSCHEDULABLE and switched_at is not None:
            seen = max(seen, switched_at)  # the no-surge switch restarts the grace period
        ready_at = seen + dt.timedelta(seconds=cand.confirm_s)
        if ready_at <= p.now and (best is None or seen < best[0]):
            best = (seen, cand)
        elif ready_at > p.now and (pending is None or seen < pending[0]):
            pending = (seen, cand)
    keep = best or pending
    p.st.evidence = (
        {"key": keep[1].key, "kind": keep[1].kind, "message": keep[1].message, "firstSeen": format_time(keep[0])}
        if keep
        else None
    )
    return best[1] if best else None


def _evaluate(p: _Pass, spec: Obj, observed: Observed) -> None:
    """Move the in-flight attempt on: complete, roll back, halt, or keep going."""
    st = p.st
    entry = st.entry(st.serving)
    if entry is None or entry.get("outcome") not in IN_FLIGHT:
        return
    done, progress = _converged(observed.deployment, st.serving)
    if done:
        _finish(entry, Outcome.SUCCEEDED, p.now, "RolloutComplete", f"all replicas on {entry.get('image')}")
        st.stable, st.phase, st.evidence, st.manual = st.serving, Phase.COMPLETE, None, False
        st.message = f"serving {_describe(entry)}"
        p.succeeded = True
        p.emit("Normal", "RolloutSucceeded", f"{_describe(entry)} is serving ({progress})")
        return
    found = _evidence(p, spec, observed, entry)
    if found is None:
        if st.phase != Phase.HALTED:
            st.message = f"rolling out {_describe(entry)}: {progress}" + (" (no surge)" if st.no_surge else "")
        return
    auto = (spec.get("rollout") or {}).get("autoRollback", True) is not False
    stable = st.entry(st.stable)
    first = ev.parse_time((st.evidence or {}).get("firstSeen")) or p.now
    if auto and stable is not None and stable is not entry:
        msg = f"rolled back {_describe(entry)} to stable {_describe(stable)}: {found.message}"
        _finish(entry, Outcome.ROLLED_BACK, p.now, found.kind, found.message)
        st.serving, st.phase, st.evidence = st.stable, Phase.ROLLED_BACK, None
        st.message = msg
        p.rolled_back = "auto"
        p.time_to_rollback_s = max(0.0, (p.now - first).total_seconds())
        p.emit("Warning", "RolledBack", msg)
        return
    why = "autoRollback is off" if not auto else "there is no stable revision to roll back to"
    msg = f"rollout of {_describe(entry)} halted ({why}): {found.message}"
    if st.phase != Phase.HALTED or entry.get("reason") != found.kind:
        p.emit("Warning", "RolloutHalted", msg)
    entry.update(outcome=Outcome.HALTED, reason=found.kind, message=found.message)
    st.phase, st.message = Phase.HALTED, msg


# ---------------------------------------------------------------- outputs


def _surge_mode(spec: Obj, st: _State) -> str:
    mode = (spec.get("rollout") or {}).get("surge") or "auto"
    if mode == "no-surge" or (mode == "auto" and st.no_surge):
        return "no-surge"
    return "surge"


def _conditions(st: _State, desired_hash: str) -> tuple[tuple[Condition, ...], Condition | None]:
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
    st = _State.load(status or {})
    p = _Pass(st, now, policy)
    desired = pod_template(spec)
    desired_hash = revision_hash(desired)
    if not st.history:
        # First pass: annotations from before the object existed have nothing to act on.
        st.handled_retry = (annotations or {}).get(RETRY_ANNOTATION)
        st.handled_rollback = (annotations or {}).get(ROLLBACK_TO_ANNOTATION)
        _begin(p, desired, desired_hash, why="Created")
    else:
        _annotations(p, annotations or {}, desired, desired_hash)
        if st.spec_hash != desired_hash:  # after annotations: a spec change takes precedence
            _begin(p, desired, desired_hash, why="SpecChanged")
    _evaluate(p, spec, observed)
    serving = st.entry(st.serving)
    if serving is None:  # damaged status (entry trimmed or hand-edited): restart from the spec
        _begin(p, desired, desired_hash, why="StatusReset", force=True)
        serving = st.history[-1]
    if _converged(observed.deployment, st.serving)[0]:
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
