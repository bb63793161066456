"""ModelDeployment status from what the cluster really shows.

Pure: the parsed ModelDeployment (with its previous status), the observed Deployment and pods
as plain API dicts, the rollout plan, and ``now``. No API calls, no clock. One function,
:func:`next_status`, makes the whole status; the rollout engine owns image, stableImage,
history and ``status.rollout`` (this module never recomputes them).

Condition merge rules (the rollout knows things the Deployment cannot show, e.g. that it is
serving the stable revision on purpose while ``spec.image`` names a bad one):

- ``Progressing``: the rollout's view while a revision is rolling out, rolled back or halted;
  otherwise what the Deployment shows.
- ``Degraded``: the rollout's ``True`` (``RolledBack``, ``RolloutHalted``) wins; otherwise the
  Deployment/pod view (so a crash loop is reported at once, before the rollback decision).
- ``Ready``: never ``True`` while the desired revision is not fully serving.

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
from modelship_operator.core.rollout import RolloutPlan, evidence

Obj = Mapping[str, Any]

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
    containers: Sequence[Obj] = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    image = next((c.get("image") for c in containers if c.get("name") == builders.CONTAINER), None)
    return None if image is None else str(image)


def _condition(obj: Obj, type_: str) -> Obj:
    conditions: Sequence[Obj] = obj.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


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
    previous: Sequence[api.Condition], type_: str, status: api.ConditionStatus, reason: str, message: str,
    generation: int, now: datetime,
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


View = tuple[api.ConditionStatus, str, str]
"""A condition's (status, reason, message) before it is stamped with its transition time."""


def _conditions(
    previous: api.ModelDeploymentStatus, generation: int, now: datetime, ready: View, progressing: View, degraded: View
) -> list[api.Condition]:
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
    an object it does not own, an apply the API server refused, ...). Children are left as they
    are; counts and rollout state keep their last values."""
    why: View = ("False", reason, message)
    conditions = _conditions(previous, generation, now, why, why, ("True", reason, message))
    return previous.model_copy(update={"observed_generation": generation, "conditions": conditions})


def _counts(deployment: Obj | None) -> dict[str, int]:
    st = (deployment or {}).get("status") or {}
    return {
        "replicas": int(st.get("replicas") or 0),
        "ready_replicas": int(st.get("readyReplicas") or 0),
        "updated_replicas": int(st.get("updatedReplicas") or 0),
        "available_replicas": int(st.get("availableReplicas") or 0),
    }


def deployment_view(md: api.ModelDeployment, deployment: Obj | None, pods: Sequence[Obj] = ()) -> tuple[View, View, View]:
    """Ready, Progressing and Degraded as the Deployment and its pods show them."""
    if deployment is None:
        return ("False", "DeploymentMissing", "the Deployment does not exist yet"), \
            ("True", "Creating", "creating the Deployment"), ("False", "AsExpected", "")
    counts = _counts(deployment)
    rollout = read_rollout(deployment)
    problems = pod_problems(pods, rollout.template_image)
    replica_failure = _condition(deployment, "ReplicaFailure")
    want, want_image = md.spec.replicas, md.spec.image
    if md.spec.autoscaling is not None:  # the HPA decides the count: the Deployment carries it
        want = int((deployment.get("spec") or {}).get("replicas", md.spec.autoscaling.min_replicas))
    on_spec_image = rollout.template_image == want_image
    serving = counts["ready_replicas"] >= want and rollout.complete and on_spec_image

    # Degraded: the first thing a human must look at.
    degraded: View
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

    progressing: View
    if rollout.complete:
        progressing = ("False", "RolloutComplete", f"{rollout.template_image} rolled out")
    elif rollout.failed:
        progressing = ("False", "ProgressDeadlineExceeded", rollout.message)
    else:
        progressing = ("True", "RolloutInProgress", f"rolling out {rollout.template_image}: {rollout.message}")

    ready: View
    if serving:
        reason = "ScaledToZero" if want == 0 else "Available"
        ready = ("True", reason, f"{counts['ready_replicas']}/{want} replicas ready, serving {want_image}")
    elif rollout.complete and not on_spec_image:
        ready = ("False", "ImageMismatch", f"serving {rollout.template_image}, spec asks for {want_image}")
    elif degraded[0] == "True":
        ready = ("False", degraded[1], degraded[2])
    else:
        ready = ("False", "RolloutInProgress", rollout.message)
    return ready, progressing, degraded


def _view(condition: api.Condition) -> View:
    return condition.status, condition.reason, condition.message


def next_status(
    md: api.ModelDeployment,
    deployment: Obj | None,
    pods: Sequence[Obj],
    plan: RolloutPlan,
    *,
    now: datetime,
) -> api.ModelDeploymentStatus:
    """The whole new status: counts and the Deployment's view of the conditions, merged with the
    rollout's view by the rules in this module's docstring; image, stableImage, history and
    ``status.rollout`` as the rollout plan left them."""
    ready, progressing, degraded = deployment_view(md, deployment, pods)
    mine = {c.type: c for c in plan.conditions}
    if plan.phase != "Complete":
        progressing = _view(mine["Progressing"])
    if mine["Degraded"].status == "True":
        degraded = _view(mine["Degraded"])
    blocker = plan.ready_blocker
    if blocker is not None and (ready[0] == "True" or plan.phase in ("RolledBack", "Halted")):
        ready = _view(blocker)
    return plan.status.model_copy(
        update={
            "observed_generation": md.generation,
            "selector": builders.selector_string(md),
            **_counts(deployment),
            "conditions": _conditions(md.status, md.generation, now, ready, progressing, degraded),
        }
    )
