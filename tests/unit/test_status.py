"""Status derived from sample Deployment (and pod) statuses: honest Ready, clear reasons.

Each status is what one pass writes: the rollout plan, then ``status.next_status``."""

from datetime import UTC, datetime, timedelta

from modelship_operator.core import api, builders, rollout, status
from modelship_operator.core.rollout import evidence

from .samples import body, md

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
IMAGE = "registry.example.com/ml/resnet-server:1.4.2"
OLD = "registry.example.com/ml/resnet-server:1.4.1"


def deployment(image=IMAGE, replicas=2, generation=5, observed=5, updated=2, total=2, ready=2, available=2,
               conditions=(), revision=1):
    """A Deployment the operator made for ``revision`` (None: not labelled by this rollout)."""
    labels = {} if revision is None else {rollout.REVISION_LABEL: str(revision)}
    return {
        "metadata": {"name": "resnet", "generation": generation},
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "server", "image": image}]}},
        },
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "conditions": list(conditions),
        },
    }


def pod(name="resnet-abc", image=IMAGE, waiting=None, unschedulable=False, restarts=0):
    statuses = []
    if waiting:
        statuses = [{"name": "server", "restartCount": restarts, "state": {"waiting": {"reason": waiting}}}]
    conditions = []
    if unschedulable:
        conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                       "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}]
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "server", "image": image}]},
        "status": {"containerStatuses": statuses, "conditions": conditions},
    }


def cond(st: api.ModelDeploymentStatus, type_: str) -> api.Condition:
    return next(c for c in st.conditions if c.type == type_)


def derive(model, dep, pods=(), *, now=NOW) -> api.ModelDeploymentStatus:
    """The status one pass writes for ``model`` given what the cluster shows."""
    plan = rollout.plan_rollout(model, rollout.Observed(dep, list(pods)), now=now)
    return status.next_status(model, dep, list(pods), plan, now=now)


def settled() -> api.ModelDeployment:
    """md() once revision 1 rolled out: the rollout has nothing left to decide, so what the
    Deployment shows next is the conditions' whole story."""
    data = body()
    data["status"] = derive(md(), deployment()).wire()
    return api.parse(data)


def test_complete_rollout_is_ready():
    st = derive(md(), deployment(), now=NOW)
    ready = cond(st, "Ready")
    assert (ready.status, ready.reason) == ("True", "Available")
    assert IMAGE in ready.message and ready.observed_generation == 3
    assert (cond(st, "Progressing").status, cond(st, "Progressing").reason) == ("False", "RolloutComplete")
    assert cond(st, "Degraded").status == "False"
    assert cond(st, "Reconciling").status == "False" and cond(st, "Stalled").status == "False"
    assert st.observed_generation == 3
    assert st.image == IMAGE and st.stable_image == IMAGE
    assert (st.replicas, st.ready_replicas, st.updated_replicas, st.available_replicas) == (2, 2, 2, 2)
    assert st.selector == builders.selector_string(md())
    assert [(h.revision, h.image, h.outcome) for h in st.history] == [(1, IMAGE, "Succeeded")]


def test_missing_deployment():
    st = derive(md(), None, now=NOW)
    assert cond(st, "Ready").reason == "DeploymentMissing" and cond(st, "Ready").status == "False"
    assert cond(st, "Progressing").status == "True"
    assert st.history[-1].outcome == "Progressing"


def test_not_ready_while_pods_are_not_ready():
    st = derive(md(), deployment(ready=1, available=1), now=NOW)
    assert cond(st, "Ready").status == "False"
    assert cond(st, "Progressing").status == "True"
    assert "1 of 2" in cond(st, "Ready").message


def test_not_ready_until_controller_observed_the_new_generation():
    st = derive(md(), deployment(generation=6, observed=5), now=NOW)
    assert cond(st, "Ready").status == "False"
    assert "observe" in cond(st, "Ready").message


def test_old_replicas_still_terminating():
    st = derive(md(), deployment(total=3), now=NOW)
    assert cond(st, "Ready").status == "False" and "old replicas" in cond(st, "Ready").message


def test_serving_another_image_is_never_ready():
    prev = body()
    prev["status"] = {"image": OLD, "stableImage": OLD}
    st = derive(api.parse(prev), deployment(image=OLD, revision=None), now=NOW)
    assert (cond(st, "Ready").status, cond(st, "Ready").reason) == ("False", "ImageMismatch")
    assert st.image == OLD and st.stable_image == OLD


def test_serving_image_stays_the_old_one_during_a_rollout():
    prev = body()
    prev["status"] = {"image": OLD, "stableImage": OLD}
    st = derive(api.parse(prev), deployment(updated=1, ready=2, total=3), now=NOW)
    assert st.image == OLD and st.stable_image == OLD


def test_crashloop_pods_are_degraded_and_not_ready():
    pods = [pod(waiting="CrashLoopBackOff", restarts=4), pod(name="resnet-ok")]
    st = derive(md(), deployment(ready=1, available=1), pods, now=NOW)
    assert (cond(st, "Degraded").status, cond(st, "Degraded").reason) == ("True", "CrashLoopBackOff")
    assert cond(st, "Stalled").status == "True"
    assert cond(st, "Ready").reason == "CrashLoopBackOff"
    assert "resnet-abc" in cond(st, "Degraded").message


def test_a_model_that_failed_to_load_is_named_with_the_servers_reason():
    crashed = pod(waiting="CrashLoopBackOff", restarts=1)
    crashed["status"]["containerStatuses"][0]["lastState"] = {"terminated": {
        "exitCode": builders.MODEL_LOAD_FAILED_EXIT_CODE, "message": "model resnet failed to load: bad zip file\n"}}
    st = derive(md(), deployment(ready=0, available=0), [crashed], now=NOW)
    degraded = cond(st, "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "ModelLoadFailed")
    assert "bad zip file" in degraded.message and "resnet-abc" in degraded.message


def test_image_pull_failure():
    st = derive(md(), deployment(ready=0, available=0), [pod(waiting="ImagePullBackOff")], now=NOW)
    assert cond(st, "Degraded").reason == "ImagePullBackOff"


def test_problems_of_pods_of_other_images_are_ignored():
    st = derive(md(), deployment(), [pod(image=OLD, waiting="CrashLoopBackOff")], now=NOW)
    assert cond(st, "Ready").status == "True"


def test_unschedulable_gpu_pod_is_reported():
    st = derive(md(), deployment(ready=1, available=1, updated=1), [pod(unschedulable=True)], now=NOW)
    assert cond(st, "Degraded").reason == "Unschedulable"
    assert "nvidia.com/gpu" in cond(st, "Degraded").message


def test_progress_deadline_exceeded():
    # On the stable revision (a scale-up that cannot progress): the Deployment's verdict stands.
    # (On a revision being rolled out it is rollout evidence: see test_rollout.)
    dep = deployment(updated=1, ready=1, available=1, total=3, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "resnet-x" has timed out progressing.'}])
    st = derive(settled(), dep, now=NOW)
    assert (cond(st, "Degraded").status, cond(st, "Degraded").reason) == ("True", "ProgressDeadlineExceeded")
    assert (cond(st, "Progressing").status, cond(st, "Progressing").reason) == ("False", "ProgressDeadlineExceeded")
    assert cond(st, "Ready").status == "False"


def test_replica_failure_from_admission():
    dep = deployment(updated=0, ready=0, available=0, total=0, conditions=[
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
         "message": 'pods "resnet-x" is forbidden: violates PodSecurity'}])
    st = derive(md(), dep, now=NOW)
    assert cond(st, "Degraded").reason == "ReplicaFailure" and "PodSecurity" in cond(st, "Degraded").message


def test_pods_lost_after_a_complete_rollout():
    st = derive(md(), deployment(ready=1, available=2), now=NOW)
    assert cond(st, "Ready").status == "False" and cond(st, "Degraded").reason == "ReplicasUnavailable"


def test_scaled_to_zero_is_ready():
    st = derive(md(replicas=0), deployment(replicas=0, updated=0, total=0, ready=0, available=0), now=NOW)
    assert (cond(st, "Ready").status, cond(st, "Ready").reason) == ("True", "ScaledToZero")


def test_transition_time_kept_while_status_unchanged():
    first = derive(md(), deployment(), now=NOW)
    prev = body()
    prev["status"] = first.wire()
    later = NOW + timedelta(minutes=5)
    second = derive(api.parse(prev), deployment(), now=later)
    assert cond(second, "Ready").last_transition_time == NOW
    assert second == first  # nothing changed: the handler patches nothing
    third = derive(api.parse(prev), deployment(ready=1, available=1), now=later)
    assert cond(third, "Ready").last_transition_time == later


def test_history_supersedes_and_succeeds():
    prev = body()
    prev["status"] = derive(md(), deployment(updated=0, ready=0, available=0), now=NOW).wire()
    assert [h.outcome for h in api.parse(prev).status.history] == ["Progressing"]
    prev["spec"]["image"] = "registry.example.com/ml/resnet-server:2.0.0"
    st = derive(api.parse(prev), deployment(image=prev["spec"]["image"], revision=2), now=NOW)
    assert [(h.revision, h.outcome) for h in st.history] == [(1, "Superseded"), (2, "Succeeded")]


def test_history_is_bounded():
    prev = body()
    for i in range(15):
        prev["spec"]["image"] = f"registry.example.com/ml/resnet-server:1.{i}"
        st = derive(api.parse(prev), deployment(image=prev["spec"]["image"], revision=i + 1), now=NOW)
        prev["status"] = st.wire()
    assert len(st.history) == evidence.RolloutPolicy().history_limit
    assert st.history[-1].revision == 15


def test_invalid_status():
    st = status.problem_status(md().status, 3, "InvalidSpec", "spec.model.format: Input should be ...", NOW)
    assert (cond(st, "Degraded").status, cond(st, "Degraded").reason) == ("True", "InvalidSpec")
    assert cond(st, "Ready").status == "False" and cond(st, "Ready").reason == "InvalidSpec"
    assert st.observed_generation == 3


def test_wire_form_uses_camel_case_and_rfc3339():
    wire = derive(md(), deployment(), now=NOW).wire()
    assert {"observedGeneration", "stableImage", "readyReplicas", "conditions", "history"} <= wire.keys()
    assert wire["conditions"][0]["lastTransitionTime"].startswith("2026-01-01T12:00:00")
