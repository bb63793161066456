"""pvc:// models whose claim is missing: the pass reports it in status (Degraded and Ready False
with reason ModelClaimNotFound, a Warning Event) instead of creating pods that would wait in
Pending, and the claim's creation (a watch event) passes the ModelDeployment again."""

from __future__ import annotations

from modelship_operator.core import api
from modelship_operator.runtime.head_start import HeadStart

from .samples import body
from .test_controller import _controller, _drain, _md
from .test_reconcile import NOW, FakeCluster, Reconciler, _cond, _reasons

PVC_MODEL = {"name": "resnet", "uri": "pvc://models/resnet/model.pt", "format": "torchscript"}


def _claim(name: str = "models", rv: str = "1") -> dict:
    return {"kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "ml", "resourceVersion": rv}}


def test_a_missing_claim_is_reported_and_nothing_is_created() -> None:
    fake = FakeCluster(body(model=PVC_MODEL))
    rec = Reconciler(fake, clock=lambda: NOW)
    assert HeadStart(rec).create("ml", "resnet") is None  # no Deployment ahead of the report either
    result = rec.reconcile("ml", "resnet")
    assert result.problem and "PersistentVolumeClaim models" in result.problem
    assert fake.objects == {}
    degraded, ready = _cond(fake, "Degraded"), _cond(fake, "Ready")
    assert (degraded["status"], degraded["reason"]) == ("True", "ModelClaimNotFound")
    assert (ready["status"], ready["reason"]) == ("False", "ModelClaimNotFound")
    assert "does not exist in namespace ml" in degraded["message"]
    assert _reasons(fake).count("ModelClaimNotFound") == 1  # the Warning Event, once
    rec.reconcile("ml", "resnet")
    assert _reasons(fake).count("ModelClaimNotFound") == 1

    fake.objects[("PersistentVolumeClaim", "ml", "models")] = _claim()
    assert not rec.reconcile("ml", "resnet").problem
    assert ("Deployment", "ml", "resnet") in fake.objects
    assert _cond(fake, "Degraded")["reason"] != "ModelClaimNotFound"
    assert "Recovered" in _reasons(fake)


def test_a_claim_event_passes_the_model_deployments_on_it_only() -> None:
    c = _controller(burst_hold_seconds=0)
    on_claim = _md("1")
    on_claim["spec"] = {"model": PVC_MODEL}
    other = {"kind": api.KIND, "metadata": {"name": "y", "namespace": "ml", "resourceVersion": "2"},
             "spec": {"model": {**PVC_MODEL, "uri": "pvc://other/model.pt"}}}
    elsewhere = {"kind": api.KIND, "metadata": {"name": "x", "namespace": "prod", "resourceVersion": "3"},
                 "spec": {"model": PVC_MODEL}}
    for obj in (on_claim, other, elsewhere):
        c.model_deployment_event(None, obj)
    _drain(c)
    c.claim_event("ADDED", _claim())
    assert _drain(c) == [("ml", "x")]
    c.claim_event("MODIFIED", _claim())  # the same version again: no news
    assert _drain(c) == []
    c.claim_event("DELETED", _claim(rv="5"))
    assert _drain(c) == [("ml", "x")]
    assert c.store.get("PersistentVolumeClaim", "ml", "models") is None
