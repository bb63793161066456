"""The reconcile pass against an in-memory fake of the API: apply only what differs, drift,
ownership, invalid specs, refused applies, status writes and events. (The real API is the e2e
tier's job.)"""

from __future__ import annotations

import copy
import datetime as dt
import itertools

import pytest

from modelship_operator import kube
from modelship_operator import reconcile as reconcile_module
from modelship_operator.core import builders
from modelship_operator.reconcile import Reconciler, covers
from modelship_operator.runtime.head_start import HeadStart

from .samples import body, md

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def merge_patch(target, patch):
    """RFC 7386, as the API server applies a merge patch: null removes, objects merge, the rest
    (lists included) replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class FakeCluster:
    """Stores objects by (kind, ns, name); bumps resourceVersion only on real changes, like SSA."""

    def __init__(self, md: dict) -> None:
        self.md = md
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.events: list[tuple[str, str, str]] = []
        self.status_patches = 0
        self.pods: list[dict] = []
        self._rv = itertools.count(1)
        self.reject: str | None = None
        self.handovers: list[tuple[str, dict]] = []
        #: Fields of an object that another field manager owns (server-side apply keeps them when
        #: the operator's apply leaves them out; a field nobody else owns is removed).
        self.held: dict[tuple[str, str, str], dict] = {}

    def get_model_deployment(self, namespace, name):
        return copy.deepcopy(self.md) if self.md and self.md["metadata"]["name"] == name else None

    def patch_status(self, namespace, name, status):
        self.status_patches += 1
        self.md["status"] = merge_patch(self.md.get("status") or {}, copy.deepcopy(dict(status)))

    def apply(self, obj):
        if self.reject:
            raise kube.Rejected(self.reject)
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        old = self.objects.get(key)
        new = copy.deepcopy(dict(obj))
        for field, value in self.held.get(key, {}).items():  # owned by another field manager: kept
            new["spec"].setdefault(field, value)
        new.setdefault("status", (old or {}).get("status", {}))
        if old is not None and {k: v for k, v in old.items() if k != "metadata"} | {"metadata": {
                k: v for k, v in old["metadata"].items() if k != "resourceVersion"}} == new:
            return copy.deepcopy(old)
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = new
        return copy.deepcopy(new)

    def get(self, kind, namespace, name):
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj else None

    cached = get

    def delete_pdb(self, namespace, name):
        return self.objects.pop(("PodDisruptionBudget", namespace, name), None) is not None

    def delete_hpa(self, namespace, name):
        return self.objects.pop(("HorizontalPodAutoscaler", namespace, name), None) is not None

    def hand_over(self, obj, manager):
        """Records the hand-over and sets the fields it carries (one manager's view is enough here)."""
        self.handovers.append((manager, copy.deepcopy(obj)))
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        self.objects[key]["spec"].update(obj["spec"])
        self.held.setdefault(key, {}).update(obj["spec"])
        return copy.deepcopy(self.objects[key])

    def list_pods(self, namespace, selector, owner=None):
        return copy.deepcopy(self.pods)

    def event(self, owner, type_, reason, message, now):
        self.events.append((type_, reason, message))


def _reasons(fake):
    return [r for _, r, _ in fake.events]


def _cond(fake, type_):
    return next(c for c in fake.md["status"]["conditions"] if c["type"] == type_)


def _make(**spec):
    fake = FakeCluster(body(**spec))
    return fake, Reconciler(fake, clock=lambda: NOW)


def test_first_pass_creates_children_and_reports_progress():
    fake, rec = _make(disruptionBudget={"maxUnavailable": 1})
    result = rec.reconcile("ml", "resnet")
    assert result.status_written and not result.problem
    assert {k[0] for k in fake.objects} == {"Deployment", "Service", "PodDisruptionBudget"}
    created = [m for _, r, m in fake.events if r == "Created"]
    assert created == ["created Deployment resnet, Service resnet and PodDisruptionBudget resnet"]
    assert _cond(fake, "Ready")["status"] == "False"
    assert fake.md["status"]["observedGeneration"] == 3


def test_deployment_first_creates_only_the_deployment_and_the_full_pass_tells_it():
    fake, rec = _make()
    head = HeadStart(rec)
    untold = head.create("ml", "resnet")
    assert untold is not None and {k[0] for k in fake.objects} == {"Deployment"}
    assert fake.events == [] and fake.status_patches == 0
    assert head.create("ml", "resnet") is None  # it exists now: a full pass
    assert not rec.reconcile("ml", "resnet", untold=head.take(("ml", "resnet"))).problem
    assert {k[0] for k in fake.objects} == {"Deployment", "Service"}
    assert [m for _, r, m in fake.events if r == "Created"] == ["created Deployment resnet and Service resnet"]
    assert _reasons(fake).count("RolloutStarted") == 1  # decided by the first pass, told by the second
    assert "RolloutResumed" not in _reasons(fake)  # the full pass continues the head start's rollout
    assert fake.md["status"]["observedGeneration"] == 3
    assert fake.md["status"]["rollout"]["servingRevision"] == 1 and fake.md["status"]["history"][0]["reason"] == "Created"


def test_a_child_already_as_desired_is_not_applied_again():
    fake, rec = _make()
    rec.reconcile("ml", "resnet")
    applied = []
    fake.apply = lambda obj: applied.append(obj["kind"])
    fake.objects[("Deployment", "ml", "resnet")]["status"] = {"replicas": 2, "readyReplicas": 2}  # status only
    rec.reconcile("ml", "resnet")
    assert applied == []


def test_second_pass_is_a_no_op():
    fake, rec = _make()
    rec.reconcile("ml", "resnet")
    events, patches = len(fake.events), fake.status_patches
    assert not rec.reconcile("ml", "resnet").status_written
    assert (len(fake.events), fake.status_patches) == (events, patches)


def test_ready_when_the_deployment_is_rolled_out():
    fake, rec = _make()
    rec.reconcile("ml", "resnet")
    dep = fake.objects[("Deployment", "ml", "resnet")]
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                     "availableReplicas": 2}
    rec.reconcile("ml", "resnet")
    assert _cond(fake, "Ready")["status"] == "True"
    assert fake.md["status"]["image"] == fake.md["spec"]["image"]
    assert "Ready" in _reasons(fake)


def test_drift_is_corrected_with_an_event():
    fake, rec = _make()
    rec.reconcile("ml", "resnet")
    fake.md["status"]["observedGeneration"] = 3
    dep = fake.objects[("Deployment", "ml", "resnet")]
    dep["spec"]["replicas"] = 7
    rec.reconcile("ml", "resnet")
    assert fake.objects[("Deployment", "ml", "resnet")]["spec"]["replicas"] == 2
    assert "DriftCorrected" in _reasons(fake)


def test_deleted_child_is_recreated():
    fake, rec = _make()
    rec.reconcile("ml", "resnet")
    del fake.objects[("Service", "ml", "resnet")]
    rec.reconcile("ml", "resnet")
    assert ("Service", "ml", "resnet") in fake.objects


def test_pdb_removed_from_spec_is_deleted():
    fake, rec = _make(disruptionBudget={"minAvailable": 1})
    rec.reconcile("ml", "resnet")
    del fake.md["spec"]["disruptionBudget"]
    rec.reconcile("ml", "resnet")
    assert ("PodDisruptionBudget", "ml", "resnet") not in fake.objects
    assert "Deleted" in _reasons(fake)


def test_foreign_pdb_is_left_alone():
    fake, rec = _make()
    fake.objects[("PodDisruptionBudget", "ml", "resnet")] = {"metadata": {"name": "resnet", "ownerReferences": []}}
    rec.reconcile("ml", "resnet")
    assert ("PodDisruptionBudget", "ml", "resnet") in fake.objects


def test_name_taken_by_a_foreign_object_is_a_conflict_not_a_takeover():
    fake, rec = _make()
    foreign = {"kind": "Deployment", "metadata": {"name": "resnet", "namespace": "ml", "resourceVersion": "9"}}
    fake.objects[("Deployment", "ml", "resnet")] = foreign
    result = rec.reconcile("ml", "resnet")
    assert result.problem and "not controlled" in result.problem
    assert fake.objects[("Deployment", "ml", "resnet")] is foreign
    assert _cond(fake, "Degraded")["reason"] == "NameConflict"


def test_invalid_spec_sets_degraded_once_and_touches_nothing():
    fake, rec = _make(model={"name": "m", "uri": "/m", "format": "onnx"})
    result = rec.reconcile("ml", "resnet")
    assert result.problem and "spec.model.format" in result.problem
    assert fake.objects == {}
    assert (_cond(fake, "Degraded")["status"], _cond(fake, "Degraded")["reason"]) == ("True", "InvalidSpec")
    assert _cond(fake, "Ready")["status"] == "False"
    assert fake.events == [("Warning", "InvalidSpec", result.problem)]
    rec.reconcile("ml", "resnet")
    assert len(fake.events) == 1  # resyncs do not repeat the event


def test_fixing_the_spec_recovers():
    fake, rec = _make(model={"name": "m", "uri": "/m", "format": "onnx"})
    rec.reconcile("ml", "resnet")
    fake.md["spec"]["model"]["format"] = "torchscript"
    fake.md["metadata"]["generation"] = 4
    rec.reconcile("ml", "resnet")
    assert _cond(fake, "Degraded")["status"] == "False"
    assert "Recovered" in _reasons(fake)


def test_a_refused_apply_reaches_status_and_an_event_on_the_first_failure_then_is_retried():
    """Not "invalid" (400/422) but refused all the same, e.g. HTTP 500 for a server-side apply
    with two env entries of one name: reported at once, whatever the retry policy."""
    fake, rec = _make()
    refused = kube.Refused("apply Deployment ml/resnet: duplicate entries for key [name=\"X\"]", 500)

    def refuse(obj):
        raise refused

    fake.apply = refuse
    with pytest.raises(kube.Refused):
        rec.reconcile("ml", "resnet")
    degraded = _cond(fake, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ApplyFailed") and "duplicate entries" in degraded["message"]
    assert _cond(fake, "Ready")["status"] == "False"
    assert ("Warning", "ApplyFailed") in [(t, r) for t, r, _ in fake.events]
    with pytest.raises(kube.Refused):
        rec.reconcile("ml", "resnet")  # the retry: no second Event, no status rewrite
    assert [r for _, r, _ in fake.events].count("ApplyFailed") == 1 and fake.status_patches == 1


def test_rejected_child_becomes_invalid_spec():
    fake, rec = _make()
    fake.reject = "apply Deployment ml/resnet: quantities must match the regular expression"
    result = rec.reconcile("ml", "resnet")
    assert "rejected a child" in result.problem
    assert _cond(fake, "Degraded")["reason"] == "InvalidSpec"


def test_a_pass_returns_when_to_come_back_from_the_plan():
    _, rec = _make()
    assert rec.reconcile("ml", "resnet").requeue_after is None  # nothing waits on time: events will come


def test_gone_or_deleting_model_deployment_is_skipped():
    fake, rec = _make()
    fake.md["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert rec.reconcile("ml", "resnet").skipped
    assert rec.reconcile("ml", "other").skipped
    assert fake.objects == {}


def test_pod_failures_reach_status_and_events():
    fake, rec = _make()
    rec.reconcile("ml", "resnet")
    fake.pods = [{
        "metadata": {"name": "resnet-1"},
        "spec": {"containers": [{"name": "server", "image": fake.md["spec"]["image"]}]},
        "status": {"containerStatuses": [{"name": "server", "restartCount": 5,
                                          "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
    }]
    rec.reconcile("ml", "resnet")
    assert _cond(fake, "Degraded")["reason"] == "CrashLoopBackOff"
    assert ("Warning", "CrashLoopBackOff") in [(t, r) for t, r, _ in fake.events]


def test_selector_for_the_scale_subresource():
    fake, rec = _make()
    rec.reconcile("ml", "resnet")
    assert fake.md["status"]["selector"] == "app.kubernetes.io/instance=resnet,app.kubernetes.io/name=modelship-server"


def test_retryable_errors_propagate():
    fake, rec = _make()

    def boom(*_a, **_k):
        raise kube.Retryable("HTTP 429")

    fake.get_model_deployment = boom
    with pytest.raises(kube.Retryable):
        rec.reconcile("ml", "resnet")


def test_child_names_for_long_model_deployment_names():
    long = "a" * 100
    data = body()
    data["metadata"]["name"] = long
    fake = FakeCluster(data)
    Reconciler(fake, clock=lambda: NOW).reconcile("ml", long)
    assert {k[2] for k in fake.objects} == {builders.child_name(long)}


@pytest.mark.parametrize("drifted", [False, True], ids=["status-only", "spec-edited"])
def test_status_writes_by_controllers_are_not_drift(monkeypatch, drifted):
    """An apply whose answer differs from what the pass read only in resourceVersion and status
    (the Deployment controller wrote status in between) is no drift; one whose spec differs is
    (the control case: the same path does raise DriftCorrected, so the first case can fail)."""
    fake, rec = _make()
    rec.reconcile("ml", "resnet")
    events = len(fake.events)
    real_apply = fake.apply
    applied = []

    def apply_after_a_status_update(obj):
        stored = fake.objects.get((obj["kind"], "ml", obj["metadata"]["name"]))
        if stored is not None:  # the Deployment controller wrote status between our read and apply
            stored["metadata"]["resourceVersion"] = str(int(stored["metadata"]["resourceVersion"]) + 100)
            stored["status"] = {"observedGeneration": 1}
        applied.append(obj["kind"])
        return real_apply(obj)

    if drifted:  # someone edited the Deployment's spec before this pass read it
        fake.objects[("Deployment", "ml", "resnet")]["spec"]["replicas"] = 7
    fake.apply = apply_after_a_status_update
    # The pass applies only what its read does not cover; here it must apply (as after a
    # watch event it has not seen yet), or the comparison under test is never reached.
    monkeypatch.setattr(reconcile_module, "covers", lambda live, desired: False)
    rec.reconcile("ml", "resnet")
    assert "Deployment" in applied, "the pass never applied: the test checks nothing"
    drift = [r for r in _reasons(fake)[events:] if r in ("DriftCorrected", "Updated")]
    assert drift == (["DriftCorrected"] if drifted else [])


def test_terminating_namespace_is_skipped_quietly():
    fake, rec = _make()

    def terminating(obj):
        raise kube.NamespaceTerminating("being terminated")

    fake.apply = terminating
    assert rec.reconcile("ml", "resnet").skipped


def test_covers_ignores_defaulted_and_foreign_fields_but_not_changed_or_missing_ones():
    desired = builders.desired_deployment(md(gpu={"count": 1}))
    live = builders.desired_deployment(md(gpu={"count": 1}))
    live["metadata"]["labels"]["team"] = "x"  # another manager's label
    live["spec"]["progressDeadlineSeconds"] = 600  # defaulted by the API server
    live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"  # as a string
    assert covers(live, desired)
    live["spec"]["replicas"] = 7  # kubectl edit
    assert not covers(live, desired)
    live = builders.desired_deployment(md(gpu={"count": 1}))
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    assert not covers(live, desired)  # lists match element by element
    assert not covers(None, desired) and not covers({"spec": "x"}, {"spec": {"a": 1}})
    assert not covers("true", True)  # a bool is not its string


def _apply_new(fake):
    """Server-side apply without force, as the API server answers it: a conflict where another
    manager's object holds the name, 201 when it creates."""

    def apply_new(obj):
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        existing = fake.objects.get(key)
        if existing is not None and not existing["metadata"].get("ownerReferences"):
            raise kube.Refused(f"Apply failed with 1 conflict: conflict with \"kubectl\": .spec.selector ({key[2]})", 409)
        return fake.apply(obj), existing is None

    return apply_new


def test_a_never_reconciled_object_gets_its_deployment_without_a_read_and_the_full_pass_tells_it():
    fake, rec = _make()
    reads = []
    real_get = fake.get
    fake.get = lambda kind, ns, name: reads.append(kind) or real_get(kind, ns, name)
    head = HeadStart(rec, type("C", (), {"apply_new": staticmethod(_apply_new(fake))})())
    assert head.create("ml", "resnet") is not None
    assert reads == [] and {k[0] for k in fake.objects} == {"Deployment"} and fake.events == []
    rec.reconcile("ml", "resnet", untold=head.take(("ml", "resnet")))
    assert [m for _, r, m in fake.events if r == "Created"] == ["created Deployment resnet and Service resnet"]
    assert _reasons(fake).count("RolloutStarted") == 1 and "RolloutResumed" not in _reasons(fake)


def test_a_head_start_never_takes_over_someone_elses_deployment():
    fake, rec = _make()
    foreign = {"kind": "Deployment", "metadata": {"name": "resnet", "namespace": "ml", "resourceVersion": "9"},
               "spec": {"replicas": 7}}
    fake.objects[("Deployment", "ml", "resnet")] = foreign
    head = HeadStart(rec, type("C", (), {"apply_new": staticmethod(_apply_new(fake))})())
    assert head.create("ml", "resnet") is None
    assert fake.objects[("Deployment", "ml", "resnet")] is foreign
    assert rec.reconcile("ml", "resnet").problem and _cond(fake, "Degraded")["reason"] == "NameConflict"


def test_a_head_start_in_a_namespace_being_deleted_leaves_it_to_the_pass_which_skips_it():
    fake, rec = _make()

    def terminating(obj):
        raise kube.NamespaceTerminating("unable to create new content in namespace ml because it is being terminated")

    head = HeadStart(rec, type("C", (), {"apply_new": staticmethod(terminating)})())
    assert head.create("ml", "resnet") is None
    fake.apply = terminating
    assert rec.reconcile("ml", "resnet").skipped


# ---------------------------------------------------------------- autoscaling (issue 15)

AUTOSCALED = {"resources": {"requests": {"cpu": "1"}}, "autoscaling": {"minReplicas": 2, "maxReplicas": 6}}
HPA = ("HorizontalPodAutoscaler", "ml", "resnet")
DEP = ("Deployment", "ml", "resnet")


def test_autoscaling_makes_an_hpa_and_leaves_replicas_out_of_the_deployment():
    fake, rec = _make(**AUTOSCALED)
    rec.reconcile("ml", "resnet")
    assert "replicas" not in fake.objects[DEP]["spec"]
    hpa = fake.objects[HPA]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "resnet"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
    assert "HorizontalPodAutoscaler resnet" in next(m for _, r, m in fake.events if r == "Created")
    assert fake.md["status"]["autoscaling"] == {"name": "resnet", "message": ""}  # the HPA has not reported yet


def test_the_hpas_replica_count_is_not_drift_and_reaches_status():
    fake, rec = _make(**AUTOSCALED)
    rec.reconcile("ml", "resnet")
    fake.md["status"]["observedGeneration"] = 3
    fake.objects[DEP]["spec"]["replicas"] = 5  # the HPA scaled through the scale subresource
    fake.objects[HPA]["status"] = {"currentReplicas": 4, "desiredReplicas": 5, "lastScaleTime": "2026-01-01T11:59:00Z",
                                   "conditions": [{"type": "ScalingActive", "status": "False",
                                                   "reason": "FailedGetResourceMetric", "message": "no metrics"}]}
    applied = []
    real_apply = fake.apply
    fake.apply = lambda obj: applied.append(obj["kind"]) or real_apply(obj)
    rec.reconcile("ml", "resnet")
    assert applied == [] and fake.objects[DEP]["spec"]["replicas"] == 5
    assert "DriftCorrected" not in _reasons(fake)
    st = fake.md["status"]["autoscaling"]
    assert (st["currentReplicas"], st["desiredReplicas"]) == (4, 5)
    assert st["message"] == "ScalingActive: FailedGetResourceMetric: no metrics"


def test_turning_autoscaling_on_hands_replicas_over_before_letting_them_go():
    fake, rec = _make(replicas=3)
    rec.reconcile("ml", "resnet")
    assert fake.objects[DEP]["spec"]["replicas"] == 3
    fake.md["spec"].update(copy.deepcopy(AUTOSCALED))
    fake.md["metadata"]["generation"] = 4
    rec.reconcile("ml", "resnet")
    (manager, seed), = fake.handovers
    assert manager == "modelship-replicas-handover" and seed["spec"] == {"replicas": 3}
    assert fake.objects[DEP]["spec"]["replicas"] == 3  # not reset to the default of 1
    assert HPA in fake.objects


def test_the_handed_over_count_is_kept_within_the_bounds():
    fake, rec = _make(replicas=9)
    rec.reconcile("ml", "resnet")
    fake.md["spec"].update(copy.deepcopy(AUTOSCALED))
    fake.md["metadata"]["generation"] = 4
    rec.reconcile("ml", "resnet")
    assert fake.handovers[0][1]["spec"] == {"replicas": 6}


def test_turning_autoscaling_off_deletes_the_hpa_and_applies_spec_replicas_again():
    fake, rec = _make(**AUTOSCALED)
    rec.reconcile("ml", "resnet")
    fake.objects[DEP]["spec"]["replicas"] = 5
    del fake.md["spec"]["autoscaling"]
    fake.md["metadata"]["generation"] = 4
    rec.reconcile("ml", "resnet")
    assert HPA not in fake.objects
    assert "HorizontalPodAutoscaler resnet deleted (no autoscaling in spec)" in [m for _, _, m in fake.events]
    assert fake.objects[DEP]["spec"]["replicas"] == 2
    assert "autoscaling" not in fake.md["status"] or fake.md["status"]["autoscaling"] is None


def test_a_foreign_hpa_is_left_alone():
    fake, rec = _make()
    fake.objects[HPA] = {"metadata": {"name": "resnet", "ownerReferences": []}}
    rec.reconcile("ml", "resnet")
    assert HPA in fake.objects
