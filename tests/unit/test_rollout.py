"""Rollout decisions (modelship_operator.core.rollout): pure, driven pass by pass with a fake
clock, on the typed API objects."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from modelship_operator.core import api, builders
from modelship_operator.core import rollout as r
from modelship_operator.core.rollout import evidence as ev
from modelship_operator.core.rollout import steps

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
GOOD1, GOOD2, GOOD3 = "reg.example/ml/server:1.0", "reg.example/ml/server:1.1", "reg.example/ml/server:1.2"
BAD = "fail.modelship.test/server:imagepull"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def ts(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")  # as the API writes timestamps


def spec(image: str = GOOD1, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "image": image,
        "model": {"name": "resnet", "uri": "file:///models/resnet.pt2", "format": "torch-export"},
        "replicas": 2,
        "serving": {"port": 8000},
        "probes": {"startupTimeoutSeconds": 60},
        "rollout": {"autoRollback": True, "surge": "auto", "progressDeadlineSeconds": 600},
    }
    base.update(extra)
    return base


def typed(raw: dict[str, Any]) -> api.ModelDeploymentSpec:
    """The typed spec; an image the API would refuse (a test of what the kubelet does with it)
    is put in after validation."""
    valid = api.ModelDeploymentSpec.model_validate({**raw, "image": GOOD1})
    return valid.model_copy(update={"image": raw["image"]})


def deployment(revision: int, *, replicas: int = 2, updated: int | None = None, available: int | None = None,
               total: int | None = None, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    updated = replicas if updated is None else updated
    available = replicas if available is None else available
    return {
        "metadata": {"name": "resnet", "generation": 3},
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": {r.REVISION_LABEL: str(revision)}}}},
        "status": {
            "observedGeneration": 3,
            "replicas": replicas if total is None else total,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "readyReplicas": available,
            "conditions": conditions or [],
        },
    }


def pod(revision: int, name: str = "resnet-abc", *, created: float = 0.0, waiting: str | None = None,
        restarts: int = 0, running_since: float | None = None, unschedulable: str | None = None,
        unschedulable_since: float = 0.0, image: str = BAD) -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "server", "image": image, "ready": False, "restartCount": restarts, "state": {}}
    if waiting:
        cs["state"] = {"waiting": {"reason": waiting, "message": f"{waiting} for {image}"}}
    if running_since is not None:
        cs["state"] = {"running": {"startedAt": ts(running_since)}}
    status: dict[str, Any] = {"containerStatuses": [cs] if (waiting or running_since is not None or restarts) else []}
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": unschedulable, "lastTransitionTime": ts(unschedulable_since)}]
    return {"metadata": {"name": name, "labels": {r.REVISION_LABEL: str(revision)}, "creationTimestamp": ts(created)},
            "status": status}


class World:
    """Feeds each plan's status back into the next pass, like the API would."""

    def __init__(self, first_spec: dict[str, Any]) -> None:
        self.spec = first_spec
        self.status = api.ModelDeploymentStatus()
        self.annotations: dict[str, str] = {}
        self.events: list[r.Event] = []

    def md(self, status: api.ModelDeploymentStatus | None = None) -> api.ModelDeployment:
        meta = {"name": "resnet", "namespace": "ml", "uid": "u", "generation": 3, "annotations": dict(self.annotations)}
        return api.ModelDeployment(metadata=meta, spec=typed(self.spec), status=self.status if status is None else status)

    def step(self, seconds: float, *, deployment: dict[str, Any] | None = None,
             pods: list[dict[str, Any]] | None = None, policy: ev.RolloutPolicy | None = None) -> r.RolloutPlan:
        plan = r.plan_rollout(self.md(), r.Observed(deployment=deployment, pods=pods or []), now=at(seconds),
                              policy=policy)
        self.status = plan.status
        self.events += plan.events
        return plan

    def stable_on(self, image: str, seconds: float) -> r.RolloutPlan:
        """Roll ``image`` out successfully (start pass, converged pass)."""
        self.spec = spec(image) if self.spec["image"] != image else self.spec
        plan = self.step(seconds)
        return self.step(seconds + 1, deployment=deployment(plan.serving_revision))

    def history(self) -> list[tuple[int, str, str]]:
        return [(e.revision, e.image, e.outcome) for e in self.status.history]


def cond(plan: r.RolloutPlan, type_: str) -> api.Condition:
    return next(c for c in plan.conditions if c.type == type_)


# ------------------------------------------------------------------ revision identity


def test_revision_hash_ignores_key_order_and_non_pod_fields() -> None:
    a = spec()
    b = dict(reversed(list(spec().items())))
    assert r.revision_hash(r.pod_template(typed(a))) == r.revision_hash(r.pod_template(typed(b)))
    scaled = spec(replicas=7, rollout={"autoRollback": False}, disruptionBudget={"minAvailable": 1})
    assert r.revision_hash(r.pod_template(typed(scaled))) == r.revision_hash(r.pod_template(typed(a)))


@pytest.mark.parametrize("change", [
    {"image": GOOD2},
    {"model": {"name": "resnet", "uri": "file:///models/resnet-v2.pt2", "format": "torch-export"}},
    {"serving": {"port": 9000}},
    {"env": [{"name": "X", "value": "1"}]},
    {"gpu": {"count": 1}},
])
def test_each_pod_relevant_change_is_a_new_revision(change: dict[str, Any]) -> None:
    assert r.revision_hash(r.pod_template(typed(spec(**change)))) != r.revision_hash(r.pod_template(typed(spec())))


def test_serving_spec_replaces_pod_fields_only() -> None:
    old = r.pod_template(typed(spec(GOOD1)))
    new = spec(GOOD2, replicas=5, env=[{"name": "A", "value": "b"}])
    eff = r.serving_spec(typed(new), old)
    assert eff.image == GOOD1 and eff.replicas == 5 and not eff.env


def test_stamp_deployment_labels_the_pod_template() -> None:
    w = World(spec())
    plan = w.step(0)
    dep = r.stamp_deployment({"spec": {"template": {"metadata": {"labels": {"app": "x"}}}}}, plan)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels == {"app": "x", r.REVISION_LABEL: "1", r.REVISION_HASH_LABEL: plan.serving_hash}


# ------------------------------------------------------------------ happy path


def test_first_rollout_completes_and_becomes_stable() -> None:
    w = World(spec())
    plan = w.step(0)
    assert plan.started and plan.phase == "Progressing" and plan.serving_revision == 1
    assert plan.ready_blocker is not None and plan.ready_blocker.reason == "RollingOut"
    assert plan.requeue_after is None  # nothing waits on time: pod and Deployment events drive it
    plan = w.step(5, deployment=deployment(1, updated=1, available=1, total=2))
    assert plan.phase == "Progressing" and "1/2 updated" in cond(plan, "Progressing").message
    plan = w.step(9, deployment=deployment(1))
    assert plan.succeeded and plan.phase == "Complete" and plan.ready_blocker is None
    assert plan.status.image == GOOD1 and plan.status.stable_image == GOOD1
    assert plan.requeue_after is None
    entry = plan.status.history[0]
    assert entry.outcome == "Succeeded" and entry.started_at == at(0) and entry.finished_at == at(9)
    assert [e.reason for e in w.events] == ["RolloutStarted", "RolloutSucceeded"]


def test_same_spec_again_does_nothing() -> None:
    w = World(spec())
    w.stable_on(GOOD1, 0)
    plan = w.step(30, deployment=deployment(1))
    assert not plan.events and plan.phase == "Complete" and len(plan.status.history) == 1


def test_scale_only_change_is_not_a_rollout() -> None:
    w = World(spec())
    w.stable_on(GOOD1, 0)
    w.spec = spec(replicas=4)
    plan = w.step(30, deployment=deployment(1, replicas=4, available=2))
    assert not plan.started and len(plan.status.history) == 1


def test_new_image_rolls_out_and_stays_on_old_image_until_complete() -> None:
    w = World(spec())
    w.stable_on(GOOD1, 0)
    w.spec = spec(GOOD2)
    plan = w.step(10, deployment=deployment(1))
    assert plan.started and plan.serving_revision == 2 and plan.serving_template["image"] == GOOD2
    assert plan.status.image == GOOD1  # not converged yet: honest
    plan = w.step(20, deployment=deployment(2))
    assert plan.status.image == GOOD2 and plan.status.stable_image == GOOD2
    assert w.history() == [(1, GOOD1, "Succeeded"), (2, GOOD2, "Succeeded")]


def test_spec_change_during_rollout_supersedes_it() -> None:
    w = World(spec())
    w.stable_on(GOOD1, 0)
    w.spec = spec(GOOD2)
    w.step(10, deployment=deployment(1))
    w.spec = spec(GOOD3)
    plan = w.step(12, deployment=deployment(2, updated=1, available=1))
    assert plan.serving_revision == 3
    assert w.history() == [(1, GOOD1, "Succeeded"), (2, GOOD2, "Superseded"), (3, GOOD3, "Progressing")]


# ------------------------------------------------------------------ automatic rollback


def start_bad(image: str = BAD, **extra: Any) -> World:
    w = World(spec())
    w.stable_on(GOOD1, 0)
    w.spec = spec(image, **extra)
    w.step(100, deployment=deployment(1))
    return w


def test_image_pull_failure_rolls_back_after_confirmation() -> None:
    w = start_bad()
    pods = [pod(2, waiting="ImagePullBackOff", created=100)]
    plan = w.step(103, deployment=deployment(2, updated=1, available=2, total=3), pods=pods)
    assert plan.phase == "Progressing" and plan.status.rollout.evidence.first_seen == at(103)
    plan = w.step(106, deployment=deployment(2, updated=1, available=2, total=3), pods=pods)
    assert plan.phase == "Progressing"  # 3 s < 5 s confirmation
    plan = w.step(108, deployment=deployment(2, updated=1, available=2, total=3), pods=pods)
    assert plan.rolled_back == "auto" and plan.time_to_rollback_s == pytest.approx(5.0)
    assert plan.serving_revision == 1 and plan.serving_template["image"] == GOOD1
    degraded = cond(plan, "Degraded")
    assert degraded.status == "True" and degraded.reason == "RolledBack"
    assert BAD in degraded.message and "ImagePullBackOff" in degraded.message and GOOD1 in degraded.message
    assert plan.ready_blocker is not None and plan.ready_blocker.reason == "RolledBack"
    assert w.history()[-1] == (2, BAD, "RolledBack")
    assert w.status.history[-1].reason == ev.EvidenceKind.IMAGE_PULL
    assert w.events[-1].type == "Warning" and w.events[-1].reason == "RolledBack"
    assert plan.status.image == GOOD1 and plan.status.stable_image == GOOD1


def test_no_flapping_when_the_same_bad_spec_is_reapplied() -> None:
    w = start_bad()
    pods = [pod(2, waiting="ImagePullBackOff", created=100)]
    w.step(101, deployment=deployment(2, updated=1, total=3), pods=pods)
    w.step(107, deployment=deployment(2, updated=1, total=3), pods=pods)
    for t in (110, 200, 900):  # GitOps sync after sync, same spec
        plan = w.step(t, deployment=deployment(1))
        assert not plan.events and not plan.started and plan.serving_revision == 1
        assert plan.phase == "RolledBack" and cond(plan, "Degraded").reason == "RolledBack"
    assert len(w.status.history) == 2


def test_crash_loop_rolls_back_at_restart_threshold() -> None:
    w = start_bad("fail.modelship.test/server:crashloop")
    plan = w.step(104, deployment=deployment(2, updated=1, total=3), pods=[pod(2, waiting="CrashLoopBackOff", restarts=1, created=100)])
    assert plan.phase == "Progressing"
    plan = w.step(108, deployment=deployment(2, updated=1, total=3), pods=[pod(2, waiting="CrashLoopBackOff", restarts=2, created=100)])
    assert plan.rolled_back == "auto" and "crash-loops" in cond(plan, "Degraded").message


def _exited(p: dict[str, Any], code: int, message: str, *, restarts: int = 1) -> dict[str, Any]:
    """The pod after its server exited with ``code`` (restarted, now waiting in back-off)."""
    cs = {"name": "server", "image": BAD, "ready": False, "restartCount": restarts,
          "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
          "lastState": {"terminated": {"exitCode": code, "reason": "Error", "message": message,
                                       "finishedAt": ts(102)}}}
    return {**p, "status": {"containerStatuses": [cs]}}


def test_model_load_failure_rolls_back_at_once_with_the_servers_reason() -> None:
    w = start_bad()
    why = "model mlp failed to load: invalid TorchScript archive"
    failed = _exited(pod(2, created=100), builders.MODEL_LOAD_FAILED_EXIT_CODE, why)
    plan = w.step(103, deployment=deployment(2, updated=1, total=3), pods=[failed])
    assert plan.rolled_back == "auto"
    degraded = cond(plan, "Degraded")
    assert degraded.reason == "RolledBack" and why in degraded.message
    assert plan.status.history[-1].reason == ev.EvidenceKind.MODEL_LOAD


def test_other_exit_codes_wait_for_the_crash_loop_threshold() -> None:
    w = start_bad()
    crashed = _exited(pod(2, created=100), 1, "Traceback ...")
    assert w.step(103, deployment=deployment(2, updated=1, total=3), pods=[crashed]).phase == "Progressing"


def test_startup_never_succeeding_rolls_back_after_budget() -> None:
    w = start_bad("fail.modelship.test/server:neverready")
    pods = [pod(2, running_since=101, created=100)]
    assert w.step(150, deployment=deployment(2, updated=1, total=3), pods=pods).phase == "Progressing"
    plan = w.step(101 + 60 + 10, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert plan.rolled_back == "auto" and "never became ready" in cond(plan, "Degraded").message


def test_a_container_killed_for_its_startup_budget_counts_at_once() -> None:
    """The kubelet restarts a container whose startup probe never passed; its last run lasting
    the whole budget is the evidence (the running-too-long check restarts with each run)."""
    w = start_bad("fail.modelship.test/server:neverready", probes={"startupTimeoutSeconds": 60})
    killed = pod(2, created=100, running_since=170, restarts=1)
    killed["status"]["containerStatuses"][0]["lastState"] = {
        "terminated": {"exitCode": 137, "reason": "Error", "startedAt": ts(101), "finishedAt": ts(169)}}
    plan = w.step(171, deployment=deployment(2, updated=1, total=3), pods=[killed])
    assert plan.rolled_back == "auto" and "without passing its startup probe" in cond(plan, "Degraded").message
    short = pod(2, created=100, running_since=110, restarts=1)
    short["status"]["containerStatuses"][0]["lastState"] = {
        "terminated": {"exitCode": 1, "reason": "Error", "startedAt": ts(101), "finishedAt": ts(109)}}
    w2 = start_bad("fail.modelship.test/server:neverready", probes={"startupTimeoutSeconds": 60})
    assert w2.step(111, deployment=deployment(2, updated=1, total=3), pods=[short]).phase == "Progressing"


def test_progress_deadline_exceeded_rolls_back() -> None:
    w = start_bad(GOOD2)
    stuck = deployment(2, updated=1, available=2, total=3, conditions=[{
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "resnet-x" has timed out progressing.', "lastUpdateTime": ts(700)}])
    plan = w.step(701, deployment=stuck)
    assert plan.rolled_back == "auto" and cond(plan, "Degraded").message.endswith("has timed out progressing.")


def test_stale_progress_deadline_from_before_the_attempt_is_ignored() -> None:
    w = start_bad(GOOD2)
    stale = deployment(2, updated=1, total=3, conditions=[{
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "lastUpdateTime": ts(50)}])
    assert w.step(101, deployment=stale).phase == "Progressing"


def test_unschedulable_counts_after_grace() -> None:
    w = start_bad(GOOD2)
    pods = [pod(2, unschedulable="0/4 nodes are available: 4 Insufficient memory.", unschedulable_since=101, created=100)]
    assert w.step(115, deployment=deployment(2, updated=1, total=3), pods=pods).phase == "Progressing"
    plan = w.step(121, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert plan.rolled_back == "auto" and "Insufficient memory" in cond(plan, "Degraded").message


def test_evidence_on_other_revisions_and_deleted_pods_is_ignored() -> None:
    w = start_bad(GOOD2)
    old = pod(1, name="old", waiting="CrashLoopBackOff", restarts=9, image=GOOD1)
    going = pod(2, name="going", waiting="ImagePullBackOff", created=100)
    going["metadata"]["deletionTimestamp"] = ts(102)
    plan = w.step(200, deployment=deployment(2, updated=1, total=3), pods=[old, going])
    assert plan.phase == "Progressing"


def test_first_seen_survives_operator_restart() -> None:
    """The first sighting is persisted in status, so a restart does not reset the clock."""
    w = start_bad()
    pods = [pod(2, waiting="ImagePullBackOff", created=100)]
    w.step(101, deployment=deployment(2, updated=1, total=3), pods=pods)
    restarted = r.plan_rollout(w.md(), r.Observed(deployment(2, updated=1, total=3), pods), now=at(106))
    assert restarted.rolled_back == "auto" and restarted.time_to_rollback_s == pytest.approx(5.0)


def test_a_pass_whose_status_was_lost_is_recomputed_identically() -> None:
    w = start_bad()
    before = w.status
    pods = [pod(2, waiting="ImagePullBackOff", created=100)]
    obs = r.Observed(deployment(2, updated=1, total=3), pods)
    w.step(101, deployment=obs.deployment, pods=pods)
    a = r.plan_rollout(w.md(), obs, now=at(107))
    b = r.plan_rollout(w.md(), obs, now=at(107))
    assert a == b and a.rolled_back == "auto"
    # and a pass from the older status starts nothing new: same revisions, no duplicates
    c = r.plan_rollout(w.md(status=before), obs, now=at(108))
    assert [e.revision for e in c.status.history] == [1, 2]


def test_fix_forward_after_rollback() -> None:
    w = start_bad()
    pods = [pod(2, waiting="ImagePullBackOff", created=100)]
    w.step(101, deployment=deployment(2, updated=1, total=3), pods=pods)
    w.step(107, deployment=deployment(2, updated=1, total=3), pods=pods)
    w.spec = spec(GOOD2)
    plan = w.step(200, deployment=deployment(1))
    assert plan.started and plan.serving_revision == 3
    plan = w.step(210, deployment=deployment(3))
    assert plan.phase == "Complete" and cond(plan, "Degraded").status == "False" and plan.ready_blocker is None
    assert w.history() == [(1, GOOD1, "Succeeded"), (2, BAD, "RolledBack"), (3, GOOD2, "Succeeded")]


def test_reverting_spec_to_the_stable_image_is_not_a_new_rollout() -> None:
    w = start_bad()
    pods = [pod(2, waiting="ImagePullBackOff", created=100)]
    w.step(101, deployment=deployment(2, updated=1, total=3), pods=pods)
    w.step(107, deployment=deployment(2, updated=1, total=3), pods=pods)
    w.spec = spec(GOOD1)
    plan = w.step(200, deployment=deployment(1))
    assert not plan.started and plan.phase == "Complete" and plan.ready_blocker is None
    assert len(w.status.history) == 2


# ------------------------------------------------------------------ halting


def test_auto_rollback_off_halts_and_says_why() -> None:
    w = start_bad(rollout={"autoRollback": False, "surge": "auto"})
    pods = [pod(2, waiting="ImagePullBackOff", created=100)]
    w.step(101, deployment=deployment(2, updated=1, total=3), pods=pods)
    plan = w.step(107, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert plan.phase == "Halted" and plan.rolled_back is None and plan.serving_revision == 2
    degraded = cond(plan, "Degraded")
    assert degraded.reason == "RolloutHalted" and "autoRollback is off" in degraded.message
    assert w.history()[-1] == (2, BAD, "Halted")
    plan = w.step(110, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert not plan.events  # no repeated Warning every pass
    # the image turns out to be pullable after all: the halted rollout completes
    plan = w.step(300, deployment=deployment(2))
    assert plan.phase == "Complete" and w.history()[-1] == (2, BAD, "Succeeded")


def test_first_revision_failing_halts_for_lack_of_stable() -> None:
    w = World(spec(BAD))
    w.step(0)
    pods = [pod(1, waiting="ErrImagePull", created=0)]
    w.step(1, deployment=deployment(1, updated=2, available=0), pods=pods)
    plan = w.step(7, deployment=deployment(1, updated=2, available=0), pods=pods)
    assert plan.phase == "Halted" and "no stable revision" in cond(plan, "Degraded").message


def test_invalid_image_name_counts_at_once() -> None:
    w = start_bad("bad image")
    plan = w.step(101, deployment=deployment(2, updated=1, total=3), pods=[pod(2, waiting="InvalidImageName", created=100)])
    assert plan.rolled_back == "auto" and plan.time_to_rollback_s == 0


# ------------------------------------------------------------------ GPU-aware surge

GPU_MSG = "0/4 nodes are available: 2 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's node affinity/selector."


def test_gpu_starved_surge_pod_switches_to_no_surge() -> None:
    w = start_bad(GOOD2, gpu={"count": 1})
    pods = [pod(2, unschedulable=GPU_MSG, unschedulable_since=100, created=100)]
    plan = w.step(101, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert plan.surge_mode == "surge"  # within the switch grace
    plan = w.step(104, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert plan.surge_mode == "no-surge" and plan.events[-1].reason == "SurgeDisabled"
    assert "nvidia.com/gpu" in plan.events[-1].message
    # still unschedulable 15 s after the switch: not yet evidence (grace restarts at the switch)
    plan = w.step(119, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert plan.phase == "Progressing" and plan.surge_mode == "no-surge" and not plan.events
    plan = w.step(130, deployment=deployment(2))
    assert plan.phase == "Complete" and plan.surge_mode == "no-surge"
    # the next rollout starts with surge again
    w.spec = spec(GOOD3, gpu={"count": 1})
    assert w.step(200, deployment=deployment(2)).surge_mode == "surge"


def test_gpu_starved_after_switch_beyond_grace_rolls_back() -> None:
    w = start_bad(GOOD2, gpu={"count": 1})
    pods = [pod(2, unschedulable=GPU_MSG, unschedulable_since=100, created=100)]
    w.step(104, deployment=deployment(2, updated=1, total=3), pods=pods)
    plan = w.step(125, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert plan.rolled_back == "auto" and "nvidia.com/gpu" in cond(plan, "Degraded").message


def test_explicit_surge_is_respected() -> None:
    w = start_bad(GOOD2, gpu={"count": 1}, rollout={"surge": "surge"})
    pods = [pod(2, unschedulable=GPU_MSG, unschedulable_since=100, created=100)]
    plan = w.step(110, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert plan.surge_mode == "surge" and not any(e.reason == "SurgeDisabled" for e in plan.events)
    assert w.step(121, deployment=deployment(2, updated=1, total=3), pods=pods).rolled_back == "auto"


def test_explicit_no_surge_is_respected() -> None:
    w = start_bad(GOOD2, rollout={"surge": "no-surge"})
    assert w.step(101, deployment=deployment(2, updated=1, total=3)).surge_mode == "no-surge"


def test_no_surge_switch_never_breaks_the_disruption_budget() -> None:
    w = start_bad(GOOD2, gpu={"count": 1}, disruptionBudget={"maxUnavailable": 0})
    pods = [pod(2, unschedulable=GPU_MSG, unschedulable_since=100, created=100)]
    plan = w.step(110, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert plan.surge_mode == "surge"
    assert w.step(121, deployment=deployment(2, updated=1, total=3), pods=pods).rolled_back == "auto"


@pytest.mark.parametrize(("replicas", "budget", "ok"), [
    (2, {"minAvailable": 1}, True),
    (2, {"minAvailable": "50%"}, True),
    (2, {"minAvailable": "100%"}, False),
    (4, {"maxUnavailable": "25%"}, True),
    (2, {"maxUnavailable": "25%"}, False),
    (1, None, True),
])
def test_budget_arithmetic(replicas: int, budget: dict[str, Any] | None, ok: bool) -> None:
    s = spec(replicas=replicas)
    if budget:
        s["disruptionBudget"] = budget
    assert steps.budget_allows_no_surge(typed(s)) is ok


# ------------------------------------------------------------------ retry and manual rollback


def rolled_back_world() -> World:
    w = start_bad()
    pods = [pod(2, waiting="ImagePullBackOff", created=100)]
    w.step(101, deployment=deployment(2, updated=1, total=3), pods=pods)
    w.step(107, deployment=deployment(2, updated=1, total=3), pods=pods)
    return w


def test_retry_annotation_starts_a_fresh_attempt_once() -> None:
    w = rolled_back_world()
    w.annotations[r.RETRY_ANNOTATION] = "1732662000"
    plan = w.step(200, deployment=deployment(1))
    assert plan.started and plan.serving_revision == 3 and plan.serving_template["image"] == BAD
    assert plan.status.rollout.handled_retry == "1732662000"
    plan = w.step(203, deployment=deployment(3, updated=1, total=3), pods=[pod(2, waiting="ImagePullBackOff", created=100)])
    assert plan.phase == "Progressing"  # the old attempt's pods are not this attempt's evidence
    assert not w.step(210, deployment=deployment(3, updated=1, total=3)).started


def test_retry_when_nothing_failed_is_ignored_with_an_event() -> None:
    w = World(spec())
    w.stable_on(GOOD1, 0)
    w.annotations[r.RETRY_ANNOTATION] = "x"
    plan = w.step(10, deployment=deployment(1))
    assert not plan.started and plan.events[-1].reason == "RetryIgnored"


def three_good() -> World:
    w = World(spec())
    w.stable_on(GOOD1, 0)
    w.stable_on(GOOD2, 10)
    w.stable_on(GOOD3, 20)
    return w


def test_manual_rollback_to_revision() -> None:
    w = three_good()
    w.annotations[r.ROLLBACK_TO_ANNOTATION] = "1@abc"
    plan = w.step(30, deployment=deployment(3))
    assert plan.rolled_back == "manual" and plan.serving_revision == 1 and plan.serving_template["image"] == GOOD1
    assert plan.ready_blocker is not None and plan.ready_blocker.reason == "ManualRollback"
    assert cond(plan, "Degraded").status == "False" and "manual rollback" in cond(plan, "Progressing").message
    assert plan.status.stable_image == GOOD1 and plan.status.image == GOOD3  # not converged yet
    plan = w.step(35, deployment=deployment(1))
    assert plan.status.image == GOOD1 and not plan.events
    # a later spec change takes precedence
    w.spec = spec("reg.example/ml/server:2.0")
    plan = w.step(40, deployment=deployment(1))
    assert plan.started and plan.serving_revision == 4


def test_manual_rollback_to_previous() -> None:
    w = three_good()
    w.annotations[r.ROLLBACK_TO_ANNOTATION] = "previous@1"
    assert w.step(30, deployment=deployment(3)).serving_revision == 2
    w.annotations[r.ROLLBACK_TO_ANNOTATION] = "previous@2"
    assert w.step(31, deployment=deployment(2)).serving_revision == 1


def test_manual_rollback_during_a_rollout_marks_it_rolled_back() -> None:
    w = three_good()
    w.spec = spec("reg.example/ml/server:2.0")
    w.step(30, deployment=deployment(3))
    w.annotations[r.ROLLBACK_TO_ANNOTATION] = "previous"
    plan = w.step(31, deployment=deployment(4, updated=1, total=3))
    assert plan.serving_revision == 3
    assert w.history()[-1] == (4, "reg.example/ml/server:2.0", "RolledBack")
    assert w.status.history[-1].reason == "ManualRollback"


@pytest.mark.parametrize(("value", "needle"), [
    ("9", "revision 9 not found in history (known: 1, 2)"),
    ("2", "revision 2 never succeeded"),
    ("latest", "neither a revision number nor 'previous'"),
])
def test_manual_rollback_rejects_bad_targets(value: str, needle: str) -> None:
    w = rolled_back_world()
    w.annotations[r.ROLLBACK_TO_ANNOTATION] = value
    plan = w.step(200, deployment=deployment(1))
    assert plan.events[-1].type == "Warning" and plan.events[-1].reason == "RollbackRejected"
    assert needle in plan.events[-1].message and plan.serving_revision == 1
    assert not w.step(201, deployment=deployment(1)).events  # handled once


def test_annotations_present_at_creation_are_not_acted_on() -> None:
    w = World(spec())
    w.annotations = {r.RETRY_ANNOTATION: "old", r.ROLLBACK_TO_ANNOTATION: "1"}
    plan = w.step(0)
    assert plan.serving_revision == 1 and [e.reason for e in plan.events] == ["RolloutStarted"]
    assert not w.step(1, deployment=deployment(1, updated=0, available=0)).events


# ------------------------------------------------------------------ bounded history


def test_history_is_bounded_but_keeps_the_stable_revision() -> None:
    w = World(spec())
    w.stable_on(GOOD1, 0)
    policy = ev.RolloutPolicy(history_limit=4)
    for i in range(6):
        w.spec = spec(f"{BAD}-{i}")
        w.step(10 + 10 * i, deployment=deployment(1), policy=policy)
        pods = [pod(2 + i, waiting="InvalidImageName", created=10 + 10 * i)]
        w.step(11 + 10 * i, deployment=deployment(2 + i, updated=1, total=3), pods=pods, policy=policy)
    revisions = [e.revision for e in w.status.history]
    assert revisions == [1, 5, 6, 7] and w.status.rollout.stable_revision == 1


def test_first_revision_short_of_gpus_does_not_switch_surge_and_halts() -> None:
    w = World(spec(gpu={"count": 2}, replicas=3))
    w.step(0)
    pods = [pod(1, unschedulable=GPU_MSG, unschedulable_since=1, created=0)]
    plan = w.step(10, deployment=deployment(1, replicas=3, updated=3, available=2), pods=pods)
    assert plan.surge_mode == "surge" and not any(e.reason == "SurgeDisabled" for e in plan.events)
    plan = w.step(25, deployment=deployment(1, replicas=3, updated=3, available=2), pods=pods)
    assert plan.phase == "Halted" and "nvidia.com/gpu" in cond(plan, "Degraded").message


def _labelled(revision: int, hash_: str, **kw: Any) -> dict[str, Any]:
    dep = deployment(revision, **kw)
    dep["spec"]["template"]["metadata"]["labels"][r.REVISION_HASH_LABEL] = hash_
    return dep


def test_lost_state_is_recovered_from_the_deployment_labels() -> None:
    w = World(spec())
    w.stable_on(GOOD1, 0)
    w.spec = spec(GOOD2)
    plan = w.step(10, deployment=deployment(1))
    hash2 = plan.serving_hash
    # whole status gone / only the rollout state gone
    for lost in (api.ModelDeploymentStatus(), api.ModelDeploymentStatus(history=w.status.history)):
        plan = r.plan_rollout(w.md(status=lost), r.Observed(_labelled(2, hash2, updated=1, available=1)), now=at(20))
        assert not plan.started and plan.serving_revision == 2 and plan.phase == "Progressing"
        assert [e.reason for e in plan.events] == ["RolloutResumed"]
        again = r.plan_rollout(w.md(status=plan.status), r.Observed(_labelled(2, hash2)), now=at(25))
        assert again.phase == "Complete" and again.serving_revision == 2 and not again.started


def test_lost_state_with_a_different_deployment_starts_fresh() -> None:
    plan = r.plan_rollout(World(spec()).md(), r.Observed(_labelled(7, "otherhash")), now=T0)
    assert plan.started and plan.serving_revision == 1


def test_pending_evidence_is_recorded_so_the_timer_keeps_looking() -> None:
    """Conditions that only time turns into evidence leave a pending record in status."""
    w = start_bad("fail.modelship.test/server:neverready")
    plan = w.step(120, deployment=deployment(2, updated=1, total=3), pods=[pod(2, running_since=101, created=100)])
    assert plan.status.rollout.evidence.kind == ev.EvidenceKind.STARTUP
    assert plan.status.rollout.evidence.first_seen == at(101 + 60 + 10)  # when it will count
    plan = w.step(171, deployment=deployment(2, updated=1, total=3), pods=[pod(2, running_since=101, created=100)])
    assert plan.rolled_back == "auto" and plan.time_to_rollback_s == 0


def test_gpu_wait_before_the_switch_is_recorded_as_pending() -> None:
    w = start_bad(GOOD2, gpu={"count": 1})
    pods = [pod(2, unschedulable=GPU_MSG, unschedulable_since=100, created=100)]
    plan = w.step(101, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert plan.surge_mode == "surge" and plan.status.rollout.evidence.kind == ev.EvidenceKind.UNSCHEDULABLE


def test_time_to_rollback_for_unschedulable_counts_from_the_end_of_the_grace() -> None:
    w = start_bad(GOOD2)
    pods = [pod(2, unschedulable="0/4 nodes are available: 4 Insufficient memory.", unschedulable_since=101,
                created=100)]
    plan = w.step(124, deployment=deployment(2, updated=1, total=3), pods=pods)
    assert plan.rolled_back == "auto" and plan.time_to_rollback_s == pytest.approx(3.0)


def test_a_started_container_that_is_not_ready_is_not_a_startup_failure() -> None:
    w = start_bad(GOOD2)
    started = pod(2, running_since=101, created=100)
    started["status"]["containerStatuses"][0]["started"] = True
    plan = w.step(500, deployment=deployment(2, updated=1, total=3), pods=[started])
    assert plan.phase == "Progressing" and plan.status.rollout.evidence is None
