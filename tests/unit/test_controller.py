"""The runtime: watch events feed the cache and the work queue; a worker pass is followed by
the right next step from its one answer (nothing, the plan's requeue, resync, retry with
backoff); legacy kopf finalizers are taken off; a standby replica does nothing."""

from __future__ import annotations

import logging

import kopf

from modelship_operator import kube
from modelship_operator.core import api, builders
from modelship_operator.reconcile import Result
from modelship_operator.runtime import controller as handlers
from modelship_operator.runtime import metrics, watches
from modelship_operator.runtime.settings import Settings

KEY = ("ml", "x")


class StubReconciler:
    def __init__(self, result=None, error=None):
        self.result, self.error, self.calls = result or Result(), error, []

    def reconcile(self, namespace, name, *, untold=None):
        self.calls.append((namespace, name))
        if self.error:
            raise self.error
        return self.result


class StubClient:
    def __init__(self):
        self.removed = []

    def remove_legacy(self, namespace, name, meta, finalizer, annotations):
        self.removed.append((namespace, name, finalizer))
        return {"metadata": {**meta, "resourceVersion": str(int(meta["resourceVersion"]) + 1), "finalizers": []}}


def _md(rv="1", **meta):
    return {"kind": api.KIND, "metadata": {"name": "x", "namespace": "ml", "resourceVersion": rv, **meta}}


def _child(kind, rv, owner="x"):
    return {"kind": kind, "metadata": {"name": owner, "namespace": "ml", "resourceVersion": rv,
                                       "annotations": {builders.OWNER_ANNOTATION: owner}}}


class StubHeadStart:
    """Creates the Deployment of every object it is asked about once."""

    def __init__(self):
        self.created = []

    def create(self, namespace, name):
        if (namespace, name) in self.created:
            return None
        self.created.append((namespace, name))
        return Untold()

    def take(self, key):
        return None

    def forget(self, key):
        pass


class Untold:
    pass


def _controller(reconciler=None, gate=lambda: True, **settings):
    c = handlers.Controller(StubClient(), Settings(**settings), reconciler=reconciler or StubReconciler(), gate=gate)
    c.head_start = StubHeadStart()
    return c


def _drain(controller):
    keys = []
    while (key := controller.queue.get(timeout=0)) is not None:
        keys.append(key)
        controller.queue.done(key)
    return keys


def _count(trigger, result):
    return metrics.REGISTRY.get_sample_value("modelship_reconciles_total", {"trigger": trigger, "result": result}) or 0


def test_events_for_one_object_coalesce_into_one_pass():
    c = _controller()
    c.model_deployment_event(None, _md("1"))
    for rv in ("2", "3", "4"):
        c.child_event("Deployment", "MODIFIED", _child("Deployment", rv))
    c.pod_event("ADDED", _child("Pod", "5"))
    assert _drain(c) == [KEY]


def test_the_echo_of_our_own_write_queues_nothing():
    c = _controller()
    c.store.put(_child("Deployment", "7"))  # what our apply returned
    c.child_event("Deployment", "MODIFIED", _child("Deployment", "7"))
    c.child_event("Deployment", "MODIFIED", _child("Deployment", "6"))  # older, late
    assert _drain(c) == []
    c.child_event("Deployment", "MODIFIED", _child("Deployment", "8"))
    assert _drain(c) == [KEY]


def test_a_deleted_child_queues_its_owner_and_leaves_the_cache():
    c = _controller()
    c.child_event("Deployment", None, _child("Deployment", "3"))
    _drain(c)
    c.child_event("Deployment", "DELETED", _child("Deployment", "4"))
    assert _drain(c) == [KEY]
    assert c.store.get("Deployment", "ml", "x") is None


def test_after_a_pass_the_object_is_resynced_and_polled_while_evidence_waits():
    rec = StubReconciler()
    c = _controller(rec, resync_seconds=60)
    c.model_deployment_event(None, _md())
    c.head_start.created.append(KEY)  # (not new: its Deployment exists)
    before = _count("resume", "ok")
    c.process(c.queue.get(timeout=0))
    assert _count("resume", "ok") == before + 1
    assert c.queue._due[KEY] > c.queue._clock() + 50  # resync only
    c.queue.done(KEY)
    rec.result = Result(requeue_after=3.0)  # the plan waits for evidence to be established
    c.process(KEY)
    assert c.queue._due[KEY] < c.queue._clock() + 10  # the rollout poll, from the pass's one answer


def test_api_trouble_is_retried_with_growing_delays_then_forgotten_on_success():
    rec = StubReconciler(error=kube.Retryable("HTTP 429"))
    c = _controller(rec, retry_delay_seconds=2, retry_max_seconds=5)
    delays = []
    for _ in range(4):
        c.process(KEY)
        delays.append(round(c.queue._due.pop(KEY) - c.queue._clock()))
    assert delays == [2, 4, 5, 5]
    rec.error = None
    c.store.put(_md())
    c.process(KEY)
    assert KEY not in c._failures


def test_a_bug_in_a_pass_is_logged_and_retried_not_raised(caplog):
    c = _controller(StubReconciler(error=KeyError("spec")))
    with caplog.at_level(logging.ERROR):
        c.process(KEY)
    assert "reconcile failed" in caplog.text and KEY in c.queue._due


def test_an_invalid_spec_is_not_retried_before_the_resync():
    c = _controller(StubReconciler(Result(problem="spec.image: bad")), resync_seconds=60)
    c.store.put(_md())
    c.process(KEY)
    assert c.queue._due[KEY] > c.queue._clock() + 50


def test_a_gone_object_is_not_scheduled_again():
    c = _controller(StubReconciler(Result(skipped=True)))
    c.process(KEY)
    assert KEY not in c.queue._due


def test_the_legacy_kopf_finalizer_is_taken_off_before_the_pass():
    c = _controller()
    c.model_deployment_event(None, _md("3", finalizers=["kopf.zalando.org/KopfFinalizerMarker", "other"]))
    c.process(KEY)
    assert c.client.removed == [("ml", "x", handlers.LEGACY_FINALIZER)]
    assert c.store.get(api.KIND, "ml", "x")["metadata"]["resourceVersion"] == "4"
    c.process(KEY)
    assert len(c.client.removed) == 1


def test_a_standby_replica_runs_no_pass_and_the_new_leader_passes_everything():
    rec = StubReconciler()
    leading = False
    c = _controller(rec, gate=lambda: leading, burst_hold_seconds=0)
    c.model_deployment_event(None, _md())
    c.process(c.queue.get(timeout=0))
    c.queue.done(KEY)
    assert rec.calls == [] and KEY not in c.queue._due  # the standby keeps its cache, does nothing
    leading = True
    c.lead()  # the Lease acquired
    assert c.queue.get(timeout=0) == KEY
    c.process(KEY)
    assert rec.calls == [KEY]


def test_a_pass_that_finds_the_lease_lost_stops_without_a_retry():
    c = _controller(StubReconciler(error=kube.NotLeader("apply Deployment ml/x: not written")))
    c.process(KEY)
    assert KEY not in c.queue._due and KEY not in c._failures


def test_the_registry_has_only_event_handlers_so_kopf_adds_no_finalizer():
    registry = watches.build_registry(_controller(), Settings())
    plurals = {h.selector.any_name for h in registry._watching.get_all_handlers()}
    assert plurals == {"modeldeployments", "deployments", "services", "poddisruptionbudgets", "horizontalpodautoscalers",
                       "pods", "persistentvolumeclaims"}
    assert not registry._changing.get_all_handlers() and not registry._spawning.get_all_handlers()


def test_a_new_object_jumps_the_queue_for_its_deployment_then_queues_the_rest():
    rec = StubReconciler()
    c = _controller(rec, burst_hold_seconds=0)
    c.child_event("Deployment", None, _child("Deployment", "1", owner="old"))
    c.model_deployment_event(None, {**_md("1"), "metadata": {**_md("1")["metadata"], "name": "old"}})
    c.model_deployment_event("ADDED", _md("2"))  # no Deployment known: new
    key = c.queue.get(timeout=0)
    assert key == KEY
    c.process(key)
    c.queue.done(key)
    assert c.head_start.created == [KEY] and rec.calls == []  # its Deployment only
    assert [c.queue.get(timeout=0), c.queue.get(timeout=0)] == [("ml", "old"), KEY]  # the rest: behind


def test_the_server_side_watch_filter_matches_what_the_builders_label():
    from .samples import md

    watched = watches.filter_watches(Settings().kopf_settings()).watching.label_selectors
    (key, value), = (term.split("=") for term in set(watched.values()))
    model = md(disruptionBudget={"maxUnavailable": 1}, resources={"requests": {"cpu": "1"}},
               autoscaling={"maxReplicas": 3}, podLabels={"team": "vision"})
    deployment = builders.desired_deployment(model)
    hpa = builders.desired_hpa(model)
    assert hpa is not None
    for labels in (
        deployment["metadata"]["labels"],
        deployment["spec"]["template"]["metadata"]["labels"],  # the pods
        builders.desired_service(model)["metadata"]["labels"],
        builders.desired_pdb(model)["metadata"]["labels"],
        hpa["metadata"]["labels"],
    ):
        assert labels[key] == value
    assert {s.any_name for s in watched} == {"deployments", "services", "poddisruptionbudgets",
                                             "horizontalpodautoscalers", "pods"}
    pods = kopf.Resource(group="", version="v1", plural="pods", kind="Pod", namespaced=True)
    mds = kopf.Resource(group=api.GROUP, version=api.VERSION, plural=api.PLURAL, kind=api.KIND, namespaced=True)
    assert list(watched.collect(pods)) == [f"{key}={value}"] and not list(watched.collect(mds))
