"""ModelDeployment status from what the cluster really shows.

Pure: the parsed ModelDeployment (with its previous status), the observed Deployment and pods
as plain API dicts, and ``now``. No API calls, no clock.

Conditions (all carry ``observedGeneration``):

- ``Ready``: True only when the Deployment has fully rolled out the image in ``spec.image``
  and every desired replica is ready. Never True while pods crash or another image serves.
- ``Progressing``: True while a rollout is under way, False when it completed or failed.
- ``Degraded``: True when something needs a human: InvalidSpec, ProgressDeadlineExceeded,
  pods failing (ImagePullBackOff, CrashLoopBackOff, ...), ReplicaFailure, Unschedulable.
- ``Reconciling`` / ``Stalled``: mirrors of Progressing / Degraded under the names kstatus
  (Flux, kpt, cli-utils) reads, so GitOps health checks need no custom rules.

``kubectl wait --for=condition=Ready md/NAME`` works as users expect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelship_operator.core import api, builders
from modelship_operator.core.rollout import evidence

Obj = Mapping[str, Any]

HISTORY_LIMIT = 10
#: Container waiting reasons that mean "this pod will not become ready by itself".
FAILING_WAITING = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class Rollout:
    """The Deployment's rollout state, read like ``kubectl rollout status`` does."""

    complete: bool
    failed: bool
    message: str
    template_image: str | None


def container_image(deployment: Obj) -> str | None:
    """The server container's image in the Deployment's pod template."""
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    for container in containers:
        if container.get("name") == builders.CONTAINER:
            return container.get("image")
    return None


def _condition(obj: Obj, type_: str) -> Obj:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return {}


def read_rollout(deployment: Obj) -> Rollout:
    """Complete / failed / in progress, with the message a user needs."""
    meta, spec, st = deployment.get("metadata", {}), deployment.get("spec", {}), deployment.get("status", {})
    image = container_image(deployment)
    want = int(spec.get("replicas", 1))
    updated = int(st.get("updatedReplicas") or 0)
    total = int(st.get("replicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    if int(meta.get("generation") or 0) > int(st.get("observedGeneration") or 0):
        return Rollout(False, False, "waiting for the Deployment controller to observe the new spec", image)
    progressing = _condition(deployment, "Progressing")
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Rollout(False, True, f"progress deadline exceeded: {progressing.get('message', '')}".strip(), image)
    if updated < want:
        return Rollout(False, False, f"{updated} of {want} replicas updated", image)
    if total > updated:
        return Rollout(False, False, f"{total - updated} old replicas pending termination", image)
    if available < updated:
        return Rollout(False, False, f"{available} of {updated} updated replicas available", image)
    return Rollout(True, False, f"{available} of {want} replicas available", image)


def pod_problems(pods: Sequence[Obj], image: str | None) -> list[tuple[str, str]]:
    """(reason, message) for pods of ``image`` that will not become ready by themselves."""
    problems: list[tuple[str, str]] = []
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        spec_images = {c.get("name"): c.get("image") for c in pod.get("spec", {}).get("containers", [])}
        if image is not None and spec_images.get(builders.CONTAINER) != image:
            continue
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            failure = evidence.model_load_failure(cs)
            if failure is not None and not cs.get("ready"):
                why = (failure.get("message") or "").strip() or "see the container's log"
                problems.append(("ModelLoadFailed", f"pod {name}: the model failed to load: {why}"))
            elif waiting.get("reason") in FAILING_WAITING:
                detail = waiting.get("message") or f"restarts: {cs.get('restartCount', 0)}"
                problems.append((waiting["reason"], f"pod {name}: {waiting['reason']} ({detail})"))
        scheduled = _condition(pod, "PodScheduled")
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            problems.append(("Unschedulable", f"pod {name}: unschedulable: {scheduled.get('message', '')}".strip()))
    return problems


def set_condition(
    previous: Sequence[api.Condition], type_: str, status: str, reason: str, message: str, generation: int, now: datetime
) -> api.Condition:
    """A condition that keeps lastTransitionTime unless its status changed."""
    old = next((c for c in previous if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    return api.Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def _conditions(
    previous: api.ModelDeploymentStatus, generation: int, now: datetime, ready: tuple[str, str, str],
    progressing: tuple[str, str, str], degraded: tuple[str, str, str],
) -> list[api.Condition]:  # fmt: skip
    prev = previous.conditions
    return [
        set_condition(prev, "Ready", *ready, generation, now),
        set_condition(prev, "Progressing", *progressing, generation, now),
        set_condition(prev, "Degraded", *degraded, generation, now),
        set_condition(prev, "Reconciling", *progressing, generation, now),
        set_condition(prev, "Stalled", *degraded, generation, now),
    ]


def problem_status(
    previous: api.ModelDeploymentStatus, generation: int, reason: str, message: str, now: datetime
) -> api.ModelDeploymentStatus:
    """The status of a ModelDeployment the operator cannot act on (InvalidSpec, a name taken by
    an object it does not own, ...). Children are left as they are; counts keep their last values."""
    why = ("False", reason, message)
    conditions = _conditions(previous, generation, now, why, why, ("True", reason, message))
    return previous.model_copy(update={"observed_generation": generation, "conditions": conditions})


def _history(md: api.ModelDeployment, serving: bool, now: datetime) -> list[api.HistoryEntry]:
    """One entry per distinct (image, model URI) attempted; bounded, newest last."""
    history = list(md.status.history)
    key = (md.spec.image, md.spec.model.uri)
    last = history[-1] if history else None
    if last is None or (last.image, last.model) != key:
        if last is not None and last.outcome == "Progressing":
            history[-1] = last.model_copy(update={"outcome": "Superseded", "finished_at": now})
        revision = (last.revision + 1) if last else 1
        history.append(
            api.HistoryEntry(revision=revision, image=key[0], model=key[1], started_at=now, outcome="Progressing")
        )
    if serving and history[-1].outcome == "Progressing":
        history[-1] = history[-1].model_copy(update={"outcome": "Succeeded", "finished_at": now})
    return history[-HISTORY_LIMIT:]


def derive_status(
    md: api.ModelDeployment,
    deployment: Obj | None,
    pods: Sequence[Obj] = (),
    *,
    now: datetime,
) -> api.ModelDeploymentStatus:
    """The whole new status: counts, conditions, serving/stable image, history."""
    want_image = md.spec.image
    base = {
        "observed_generation": md.generation,
        "selector": builders.selector_string(md),
    }
    if deployment is None:
        creating = ("True", "Creating", "creating the Deployment")
        conditions = _conditions(
            md.status, md.generation, now, ("False", "DeploymentMissing", "the Deployment does not exist yet"),
            creating, ("False", "AsExpected", ""),
        )
        return md.status.model_copy(
            update={**base, "conditions": conditions, "replicas": 0, "ready_replicas": 0,
                    "updated_replicas": 0, "available_replicas": 0, "history": _history(md, False, now)}
        )  # fmt: skip

    st = deployment.get("status", {})
    counts = {
        "replicas": int(st.get("replicas") or 0),
        "ready_replicas": int(st.get("readyReplicas") or 0),
        "updated_replicas": int(st.get("updatedReplicas") or 0),
        "available_replicas": int(st.get("availableReplicas") or 0),
    }
    rollout = read_rollout(deployment)
    problems = pod_problems(pods, rollout.template_image)
    replica_failure = _condition(deployment, "ReplicaFailure")
    want = md.spec.replicas
    all_ready = counts["ready_replicas"] >= want and rollout.complete
    on_spec_image = rollout.template_image == want_image
    serving = all_ready and on_spec_image

    # Degraded: the first thing a human must look at.
    if rollout.failed:
        degraded = ("True", "ProgressDeadlineExceeded", rollout.message)
    elif problems:
        degraded = ("True", problems[0][0], "; ".join(m for _, m in problems[:3]))
    elif replica_failure.get("status") == "True":
        degraded = ("True", "ReplicaFailure", str(replica_failure.get("message", "")))
    elif rollout.complete and counts["ready_replicas"] < want:
        degraded = ("True", "ReplicasUnavailable", f"{counts['ready_replicas']} of {want} replicas ready")
    else:
        degraded = ("False", "AsExpected", "")

    if rollout.complete:
        progressing = ("False", "RolloutComplete", f"{rollout.template_image} rolled out")
    elif rollout.failed:
        progressing = ("False", "ProgressDeadlineExceeded", rollout.message)
    else:
        progressing = ("True", "RolloutInProgress", f"rolling out {rollout.template_image}: {rollout.message}")

    if serving:
        reason = "ScaledToZero" if want == 0 else "Available"
        ready = ("True", reason, f"{counts['ready_replicas']}/{want} replicas ready, serving {want_image}")
    elif rollout.complete and not on_spec_image:
        ready = ("False", "ImageMismatch", f"serving {rollout.template_image}, spec asks for {want_image}")
    elif degraded[0] == "True":
        ready = ("False", degraded[1], degraded[2])
    else:
        ready = ("False", "RolloutInProgress", rollout.message)

    serving_image = rollout.template_image if rollout.complete else (md.status.image or None)
    return md.status.model_copy(
        update={
            **base,
            **counts,
            "image": serving_image,
            "stable_image": want_image if serving else md.status.stable_image,
            "conditions": _conditions(md.status, md.generation, now, ready, progressing, degraded),
            "history": _history(md, serving, now),
        }
    )
