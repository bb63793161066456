"""Rollouts through the reconcile shell (in-memory cluster): the Deployment follows the plan,
spec is never written, status and events say what happened, nothing flaps."""

from __future__ import annotations

import datetime as dt

from modelship_operator.core import rollout
from modelship_operator.reconcile import Reconciler

from .samples import body
from .test_reconcile import FakeCluster

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
GOOD = "registry.example.com/ml/resnet-server:1.4.2"
BAD = "fail.modelship.test/server:imagepull"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _dep(fake: FakeCluster) -> dict:
    return fake.objects[("Deployment", "ml", "resnet")]


def _converge(fake: FakeCluster) -> None:
    """Play the Deployment controller: everything on the current template, all available."""
    dep = _dep(fake)
    n = dep["spec"]["replicas"]
    dep["metadata"].setdefault("generation", 1)
    dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
                     "readyReplicas": n, "availableReplicas": n}


def _image(fake: FakeCluster) -> str:
    return _dep(fake)["spec"]["template"]["spec"]["containers"][0]["image"]


def _cond(fake: FakeCluster, type_: str) -> dict:
    return next(c for c in fake.md["status"]["conditions"] if c["type"] == type_)


class RolloutCluster(FakeCluster):
    """The fake, plus what the API server does on a Deployment spec change: bump generation."""

    def apply(self, obj):
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        before = self.objects.get(key)
        after = super().apply(obj)
        if before is not None and before["spec"] != after["spec"]:
            self.objects[key]["metadata"]["generation"] = before["metadata"].get("generation", 0) + 1
            after["metadata"]["generation"] = self.objects[key]["metadata"]["generation"]
        return after


def _stable() -> tuple[FakeCluster, Reconciler, Clock]:
    fake, clock = RolloutCluster(body(image=GOOD)), Clock()
    rec = Reconciler(fake, clock=clock)
    rec.reconcile("ml", "resnet")
    _converge(fake)
    clock.advance(2)
    rec.reconcile("ml", "resnet")
    assert fake.md["status"]["rollout"]["phase"] == "Complete" and _cond(fake, "Ready")["status"] == "True"
    return fake, rec, clock


def _pull_failure(revision: int, created: dt.datetime) -> dict:
    return {
        "metadata": {"name": f"resnet-{revision}", "labels": {rollout.REVISION_LABEL: str(revision)},
                     "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "spec": {"containers": [{"name": "server", "image": BAD}]},
        "status": {"containerStatuses": [{"name": "server", "image": BAD, "ready": False, "restartCount": 0,
                                          "state": {"waiting": {"reason": "ImagePullBackOff"}}}]},
    }


def test_bad_image_is_rolled_back_from_a_pod_event_pass_and_does_not_flap() -> None:
    fake, rec, clock = _stable()
    fake.md["spec"]["image"] = BAD
    fake.md["metadata"]["generation"] = 4
    rec.reconcile("ml", "resnet")
    assert _image(fake) == BAD
    assert _dep(fake)["spec"]["template"]["metadata"]["labels"][rollout.REVISION_LABEL] == "2"
    fake.pods = [_pull_failure(2, clock.now)]
    clock.advance(1)
    rec.reconcile("ml", "resnet")  # first sighting: not yet confirmed
    assert _image(fake) == BAD and _cond(fake, "Degraded")["reason"] == "ImagePullBackOff"
    clock.advance(5)
    rec.reconcile("ml", "resnet")  # the rollout poll
    assert _image(fake) == GOOD, "a pass for a pod event must roll the Deployment back"
    assert fake.md["spec"]["image"] == BAD
    degraded = _cond(fake, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack") and BAD in degraded["message"]
    assert _cond(fake, "Ready")["status"] == "False"
    warnings = [(t, r) for t, r, _ in fake.events if t == "Warning" and r == "RolledBack"]
    assert len(warnings) == 1, fake.events
    updated = [m for _, r, m in fake.events if r == "Updated"]
    assert updated[-1] == "Deployment resnet moved to revision 1 by the rollout", updated
    assert "DriftCorrected" not in [r for _, r, _ in fake.events]
    fake.pods = []
    _converge(fake)
    events = len(fake.events)
    for _ in range(3):  # GitOps re-syncs, resyncs, pod events
        clock.advance(30)
        rec.reconcile("ml", "resnet")
        rec.reconcile("ml", "resnet")
    assert _image(fake) == GOOD and len(fake.md["status"]["history"]) == 2
    assert fake.md["status"]["image"] == GOOD and fake.md["status"]["stableImage"] == GOOD
    assert [r for _, r, _ in fake.events[events:]] == []


def test_rollback_annotation_moves_the_deployment() -> None:
    fake, rec, clock = _stable()
    for image in ("registry.example.com/ml/resnet-server:1.5.0", "registry.example.com/ml/resnet-server:1.6.0"):
        fake.md["spec"]["image"] = image
        fake.md["metadata"]["generation"] += 1
        clock.advance(10)
        rec.reconcile("ml", "resnet")
        _converge(fake)
        rec.reconcile("ml", "resnet")
    assert fake.md["status"]["rollout"]["servingRevision"] == 3
    fake.md["metadata"]["annotations"] = {rollout.ROLLBACK_TO_ANNOTATION: "1@x"}
    rec.reconcile("ml", "resnet")
    assert _image(fake) == GOOD and fake.md["status"]["rollout"]["handledRollbackTo"] == "1@x"
    assert _cond(fake, "Ready")["reason"] == "ManualRollback"


def test_gpu_rollout_starts_with_surge() -> None:
    fake = RolloutCluster(body(image=GOOD, gpu={"count": 1}))
    Reconciler(fake, clock=Clock()).reconcile("ml", "resnet")
    assert _dep(fake)["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_rollout_requests_and_evidence_waits_reach_the_queue() -> None:
    """A rollback/retry annotation is a new resourceVersion like any change: it queues a pass
    (kopf's own change detection ignored the modelship.io/ prefix); evidence waits come back as
    the pass's requeue_after, and the queue schedules from that one answer."""
    from modelship_operator.reconcile import Result
    from modelship_operator.runtime.controller import Controller
    from modelship_operator.runtime.settings import Settings

    def md(annotations: dict, handled: dict, rv: str = "1") -> dict:
        meta = {"name": "resnet", "namespace": "ml", "resourceVersion": rv, "annotations": annotations}
        return {"metadata": meta, "status": {"rollout": handled}}

    controller = Controller(client=None, settings=Settings())
    controller.model_deployment_event(None, md({}, {}))
    assert controller.queue.get(timeout=0) == ("ml", "resnet")
    controller.queue.done(("ml", "resnet"))
    controller.model_deployment_event("MODIFIED", md({rollout.ROLLBACK_TO_ANNOTATION: "2@a"}, {}, rv="2"))
    assert controller.queue.get(timeout=0) == ("ml", "resnet")
    controller.queue.done(("ml", "resnet"))

    class Waiting:  # a pass whose plan waits 4 s for a pull failure to be confirmed
        def reconcile(self, namespace, name, *, untold=None):
            return Result(requeue_after=4.0)

    controller.reconciler = Waiting()
    controller.process(("ml", "resnet"))
    assert controller.queue._due[("ml", "resnet")] - controller.queue._clock() < 5  # not the 60 s resync


def test_a_pending_pull_failure_is_looked_at_again_when_it_is_confirmed() -> None:
    fake, rec, clock = _stable()
    fake.md["spec"]["image"] = BAD
    fake.md["metadata"]["generation"] = 4
    rec.reconcile("ml", "resnet")
    fake.pods = [_pull_failure(2, clock.now)]
    clock.advance(1)
    assert rec.reconcile("ml", "resnet").requeue_after == 5.0  # first seen now, confirmed after 5 s
    clock.advance(5)
    result = rec.reconcile("ml", "resnet")
    assert result.plan is not None and result.plan.rolled_back == "auto" and result.requeue_after is None
