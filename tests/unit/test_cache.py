"""The watch cache: resourceVersion order, tombstones, per-owner pod sets, and which reads reach
the API."""

from __future__ import annotations

from modelship_operator.core import api
from modelship_operator.runtime.cache import CachedCluster, Store

from .samples import MonotonicClock


def _obj(kind: str, name: str, rv: str | None, **extra) -> dict:
    meta = {"name": name, "namespace": "ml", **({"resourceVersion": rv} if rv else {})}
    return {"kind": kind, "metadata": meta, **extra}


def test_an_object_is_never_replaced_by_an_older_one_and_an_echo_is_no_news():
    store = Store()
    assert store.put(_obj("Deployment", "a", "5"))
    assert not store.put(_obj("Deployment", "a", "5"))  # the watch echo of our own write
    assert not store.put(_obj("Deployment", "a", "4"))  # late
    assert store.get("Deployment", "ml", "a")["metadata"]["resourceVersion"] == "5"
    assert store.put(_obj("Deployment", "a", "6"))


def test_a_deletion_leaves_a_tombstone_an_apply_that_raced_with_it_cannot_undo():
    store = Store()
    store.put(_obj("Deployment", "a", "5"))
    store.delete(_obj("Deployment", "a", "8"))
    assert store.get("Deployment", "ml", "a") is None and store.deleted("Deployment", "ml", "a")
    assert not store.put(_obj("Deployment", "a", "7"))  # the response of an apply before the delete
    assert store.put(_obj("Deployment", "a", "9"))  # recreated
    assert not store.deleted("Deployment", "ml", "a")


def test_stored_objects_lose_managed_fields_and_reads_are_private_copies():
    store = Store()
    obj = _obj("Service", "a", "1", spec={"ports": [{"port": 80}]})
    obj["metadata"]["managedFields"] = [{"manager": "modelship"}]
    obj["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "1"}
    store.put(obj)
    got = store.get("Service", "ml", "a")
    assert "managedFields" not in got["metadata"] and got["metadata"]["annotations"] == {"keep": "1"}
    got["spec"]["ports"].clear()
    assert store.get("Service", "ml", "a")["spec"]["ports"] == [{"port": 80}]


def _pod(name: str, rv: str, ready: bool = False, **labels: str) -> dict:
    pod = _obj("Pod", name, rv, spec={"containers": [{"name": "server", "image": "x:1", "env": []}], "nodeName": "n"},
               status={"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]})
    pod["metadata"]["labels"] = {"app": "a", **labels}
    return pod


def test_pods_are_served_from_events_only_after_a_list_and_until_it_is_stale():
    clock = MonotonicClock()
    store = Store(pod_list_ttl=60, clock=clock)
    store.pod_event("ADDED", _pod("p1", "1"), owner="a")
    assert store.pods("ml", "a", "app=a") is None  # never listed: the pass lists
    store.set_pods("ml", "a", "app=a", [_pod("p1", "1")], started=clock.now)
    store.pod_event("MODIFIED", _pod("p1", "2", ready=True), owner="a")
    store.pod_event("ADDED", _pod("p2", "3"), owner="a")
    pods = {p["metadata"]["name"]: p for p in store.pods("ml", "a", "app=a")}
    assert set(pods) == {"p1", "p2"} and pods["p1"]["status"]["conditions"][0]["status"] == "True"
    assert pods["p1"]["spec"]["containers"] == [{"name": "server", "image": "x:1"}]  # slimmed
    store.pod_event("DELETED", _pod("p2", "4"), owner="a")
    store.pod_event("MODIFIED", _pod("p1", "5", app="b"), owner="a")  # relabelled away
    assert store.pods("ml", "a", "app=a") == []
    assert store.pods("ml", "a", "app=other") is None  # another selector: list again
    clock.now += 61
    assert store.pods("ml", "a", "app=a") is None  # stale: list again


def test_a_pod_deleted_while_the_list_was_on_its_way_does_not_come_back():
    clock = MonotonicClock()
    store = Store(clock=clock)
    store.pod_event("DELETED", _pod("p1", "9"), owner="a")  # before the list response arrives
    store.set_pods("ml", "a", "app=a", [_pod("p1", "8"), _pod("p2", "8")], started=clock.now)
    assert [p["metadata"]["name"] for p in store.pods("ml", "a", "app=a")] == ["p2"]


class CountingKube:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.objects: dict[tuple[str, str], dict] = {}

    def get(self, kind, namespace, name):
        self.calls.append(f"get {kind}")
        return self.objects.get((kind, name))

    def get_model_deployment(self, namespace, name):
        self.calls.append("get md")
        return self.objects.get((api.KIND, name))

    def list_pods(self, namespace, selector):
        self.calls.append("list pods")
        return []

    def apply(self, obj):
        self.calls.append(f"apply {obj['kind']}")
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": "3"}}


def test_reads_reach_the_api_only_on_a_miss_and_a_deleted_model_deployment_costs_none():
    kube, store = CountingKube(), Store()
    cluster = CachedCluster(kube, store, api.KIND)
    assert cluster.get("Deployment", "ml", "a") is None  # a miss is asked, never assumed
    cluster.apply(_obj("Deployment", "a", None, spec={"replicas": 1}))
    assert cluster.get("Deployment", "ml", "a")["metadata"]["resourceVersion"] == "3"  # from the apply response
    assert cluster.cached("PodDisruptionBudget", "ml", "a") is None
    cluster.list_pods("ml", "app=a", "a")
    cluster.list_pods("ml", "app=a", "a")
    store.delete(_obj(api.KIND, "a", "7"))
    assert cluster.get_model_deployment("ml", "a") is None
    assert kube.calls == ["get Deployment", "apply Deployment", "list pods"]
