"""Evidence that a revision will not become ready, read from its pods and the Deployment.

Pure: takes plain dicts as the API returns them (``camelCase`` keys, RFC 3339 timestamps) and
``now``; no API calls, no clock. :mod:`modelship_operator.core.rollout` decides what to do with it.

Each :class:`Evidence` is a *candidate*: it carries ``grace_s``, how long the condition is
allowed at all (a pod may wait for the scheduler, a model may take its startup budget to load),
and ``confirm_s``, how long it must then persist before it counts. A failed image pull is usually final but a registry blip is not, so it gets a
few seconds; a Deployment's ``ProgressDeadlineExceeded`` is already a verdict and counts at once.
Waiting states carry no timestamp in the pod status, so their ``since`` is ``None`` and the
caller supplies the time it first saw them (persisted in status, so a restart does not reset it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modelship_operator.core import builders

__all__ = [
    "Evidence",
    "EvidenceKind",
    "RolloutPolicy",
    "deployment_evidence",
    "model_load_failure",
    "parse_time",
    "pod_evidence",
]

Obj = Mapping[str, Any]

PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"})
"""Waiting reasons of a container whose image cannot be pulled (retried by the kubelet)."""

FATAL_IMAGE = frozenset({"InvalidImageName"})
"""Waiting reasons that no retry can fix: they count at once."""

CONFIG_FAILURES = frozenset({"CreateContainerConfigError", "CreateContainerError"})
"""Waiting reasons of a container that cannot be created (missing Secret/ConfigMap...)."""


class EvidenceKind:
    """Names used as the ``reason`` in history entries, conditions and events."""

    IMAGE_PULL = "ImagePullFailed"
    MODEL_LOAD = "ModelLoadFailed"
    CRASH_LOOP = "CrashLoopBackOff"
    CONFIG = "ContainerConfigError"
    STARTUP = "StartupTimeout"
    UNSCHEDULABLE = "Unschedulable"
    PROGRESS_DEADLINE = "ProgressDeadlineExceeded"


@dataclasses.dataclass(frozen=True)
class RolloutPolicy:
    """Operator-wide thresholds for reading evidence (per-object knobs live in ``spec.rollout``).

    The defaults aim at the target "rollback starts within 30 s of the first evidence" while not
    rolling back on one transient blip.
    """

    pull_failure_confirm_s: float = 5.0
    """Seconds an ErrImagePull/ImagePullBackOff must persist before it counts. A short wait
    absorbs a registry hiccup; the kubelet's own back-off makes longer waits pointless."""

    config_failure_confirm_s: float = 10.0
    """Seconds a CreateContainerConfigError must persist (a Secret may be created just after)."""

    crashloop_restarts: int = 2
    """Restarts of a not-ready container of the new revision that count as a crash loop.
    One restart can be a transient dependency; two in a row while never ready is a pattern."""

    unschedulable_grace_s: float = 20.0
    """Seconds a new-revision pod may stay unschedulable before it counts (the scheduler retries
    on every cluster change; an autoscaler may add a node)."""

    surge_switch_grace_s: float = 3.0
    """Under ``surge: auto``, seconds a surge pod may wait for ``nvidia.com/gpu`` before the
    rollout switches to no-surge. Short: the scheduler has already said no."""

    startup_grace_s: float = 10.0
    """Seconds added to ``spec.probes.startupTimeoutSeconds`` before a never-ready container
    counts as a failed startup (the kubelet's own probe timing is not exact)."""

    history_limit: int = 10
    """History entries kept in status (the stable and serving revisions are always kept)."""

    min_requeue_s: float = 1.0
    """Shortest wait before a pass looks again at evidence about to be established (API
    timestamps have one-second resolution, so sooner could find it one second short)."""

@dataclasses.dataclass(frozen=True)
class Evidence:
    """One observation that the revision is failing."""

    kind: str
    """One of :class:`EvidenceKind`."""
    subject: str
    """What it was seen on: ``pod/NAME`` or ``deployment/NAME``."""
    message: str
    """Human text naming the image and what happened, for status and events."""
    since: dt.datetime | None
    """When the API says it started; ``None`` when the status carries no time."""
    confirm_s: float = 0.0
    """How long it must persist, once it is evidence, before it counts."""
    grace_s: float = 0.0
    """How long after ``since`` the condition is still normal (it becomes evidence after that)."""
    gpu: bool = False
    """Unschedulable for lack of ``nvidia.com/gpu`` (the surge-switch case)."""

    @property
    def key(self) -> str:
        """Identity used to remember when it was first seen across reconciles."""
        return f"{self.kind}:{self.subject}"


def parse_time(value: object) -> dt.datetime | None:
    """RFC 3339 string (or datetime) → aware datetime; ``None`` for missing/garbage."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _containers(pod: Obj) -> Iterable[Obj]:
    status = pod.get("status") or {}
    yield from status.get("initContainerStatuses") or ()
    yield from status.get("containerStatuses") or ()


def _condition(obj: Obj, type_: str) -> Obj | None:
    conditions: Sequence[Obj] = (obj.get("status") or {}).get("conditions") or ()
    return next((c for c in conditions if c.get("type") == type_), None)


def _waiting(cs: Obj) -> Obj:
    return ((cs.get("state") or {}).get("waiting")) or {}


def model_load_failure(cs: Obj) -> Obj | None:
    """The container's (last) termination when the server exited because its model failed to
    load: final for this revision (the same image and model fail the same way), so it counts
    at once instead of after the crash-loop restarts or the startup budget."""
    for state in (cs.get("state"), cs.get("lastState")):
        terminated = (state or {}).get("terminated") or {}
        if terminated.get("exitCode") == builders.MODEL_LOAD_FAILED_EXIT_CODE:
            return terminated
    return None


def _outlived_startup_budget(cs: Obj, startup_timeout_s: float) -> float | None:
    """Seconds the last run lasted when the kubelet ended it for its startup budget: the
    container never started (startup probe) and its last run was at least the budget long.
    The kubelet restarts such a container, so the running-too-long check below would start
    over with every restart."""
    if cs.get("ready") or cs.get("started") is True:
        return None
    last = ((cs.get("lastState") or {}).get("terminated")) or {}
    began, ended = parse_time(last.get("startedAt")), parse_time(last.get("finishedAt"))
    if began is None or ended is None:
        return None
    ran = (ended - began).total_seconds()
    return ran if ran >= startup_timeout_s else None


def _container_evidence(
    pod_name: str, cs: Obj, *, policy: RolloutPolicy, startup_timeout_s: float, now: dt.datetime
) -> Evidence | None:
    subject = f"pod/{pod_name}"
    image = cs.get("image") or "?"
    waiting = _waiting(cs)
    reason = waiting.get("reason") or ""
    detail = waiting.get("message") or reason
    if reason in FATAL_IMAGE or reason in PULL_FAILURES:
        confirm = 0.0 if reason in FATAL_IMAGE else policy.pull_failure_confirm_s
        msg = f"image {image} cannot be pulled ({reason}) on {subject}: {detail}"
        return Evidence(EvidenceKind.IMAGE_PULL, subject, msg, None, confirm)
    if reason in CONFIG_FAILURES:
        msg = f"container of image {image} cannot be created ({reason}) on {subject}: {detail}"
        return Evidence(EvidenceKind.CONFIG, subject, msg, None, policy.config_failure_confirm_s)
    load_failure = model_load_failure(cs)
    if load_failure is not None and not cs.get("ready"):
        reason = (load_failure.get("message") or "").strip() or "see the container's log"
        msg = f"image {image} cannot load its model on {subject}: {reason}"
        return Evidence(EvidenceKind.MODEL_LOAD, subject, msg, parse_time(load_failure.get("finishedAt")))
    outlived = _outlived_startup_budget(cs, startup_timeout_s)
    if outlived is not None:
        msg = (
            f"image {image} never became ready on {subject}: restarted after running "
            f"{int(outlived)}s without passing its startup probe (budget {int(startup_timeout_s)}s)"
        )
        last = ((cs.get("lastState") or {}).get("terminated")) or {}
        return Evidence(EvidenceKind.STARTUP, subject, msg, parse_time(last.get("finishedAt")))
    restarts = int(cs.get("restartCount") or 0)
    if not cs.get("ready") and restarts >= policy.crashloop_restarts:
        last = ((cs.get("lastState") or {}).get("terminated")) or {}
        exit_info = f", last exit code {last.get('exitCode')}" if last else ""
        msg = f"image {image} crash-loops on {subject}: {restarts} restarts{exit_info}"
        since = parse_time(last.get("finishedAt"))
        return Evidence(EvidenceKind.CRASH_LOOP, subject, msg, since)
    running = ((cs.get("state") or {}).get("running")) or {}
    started_at = parse_time(running.get("startedAt"))
    if running and not cs.get("ready") and cs.get("started") is not True and started_at is not None:
        # A candidate from the first moment, with the startup budget as its grace: the pending
        # record keeps the operator looking, so the budget's end is noticed without an event.
        msg = (
            f"image {image} never became ready on {subject}: running for "
            f"{int((now - started_at).total_seconds())}s, startup budget {int(startup_timeout_s)}s"
        )
        return Evidence(EvidenceKind.STARTUP, subject, msg, started_at,
                        grace_s=startup_timeout_s + policy.startup_grace_s)
    return None


def _scheduling_evidence(pod: Obj, *, policy: RolloutPolicy) -> Evidence | None:
    cond = _condition(pod, "PodScheduled")
    if not cond or cond.get("status") != "False" or cond.get("reason") != "Unschedulable":
        return None
    name = (pod.get("metadata") or {}).get("name", "?")
    message = cond.get("message") or "unschedulable"
    gpu = "nvidia.com/gpu" in message
    return Evidence(
        EvidenceKind.UNSCHEDULABLE,
        f"pod/{name}",
        f"pod/{name} cannot be scheduled: {message}",
        parse_time(cond.get("lastTransitionTime")),
        grace_s=policy.unschedulable_grace_s,
        gpu=gpu,
    )


def pod_evidence(
    pods: Sequence[Obj],
    *,
    policy: RolloutPolicy,
    startup_timeout_s: float,
    now: dt.datetime,
    not_before: dt.datetime | None = None,
) -> list[Evidence]:
    """Candidates from the given pods (the caller passes only the revision's own pods).

    Pods being deleted are ignored (they are on their way out, not evidence), and so are pods
    created before ``not_before`` (the start of this attempt): after a retry of the same
    template, leftovers from the previous attempt must not count against the new one.
    """
    found: list[Evidence] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        created = parse_time(meta.get("creationTimestamp"))
        if not_before is not None and created is not None and created < not_before:
            continue
        sched = _scheduling_evidence(pod, policy=policy)
        if sched is not None:
            found.append(sched)
            continue
        for cs in _containers(pod):
            ev = _container_evidence(
                meta.get("name", "?"), cs, policy=policy, startup_timeout_s=startup_timeout_s, now=now
            )
            if ev is not None:
                found.append(ev)
                break
    return found


def deployment_evidence(
    deployment: Obj | None, *, template_matches: bool, not_before: dt.datetime | None = None
) -> list[Evidence]:
    """``ProgressDeadlineExceeded`` on the Deployment, when it is about the revision in question.

    ``template_matches`` says the Deployment carries the revision's template; the condition must
    also be newer than the attempt (a retry resets the clock) and the status must be current.
    """
    if not deployment or not template_matches:
        return []
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return []
    cond = _condition(deployment, "Progressing")
    if not cond or cond.get("status") != "False" or cond.get("reason") != "ProgressDeadlineExceeded":
        return []
    since = parse_time(cond.get("lastUpdateTime")) or parse_time(cond.get("lastTransitionTime"))
    if not_before is not None and since is not None and since < not_before:
        return []
    name = meta.get("name", "?")
    msg = f"deployment/{name}: {cond.get('message') or 'progress deadline exceeded'}"
    return [Evidence(EvidenceKind.PROGRESS_DEADLINE, f"deployment/{name}", msg, since)]
