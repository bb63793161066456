"""The CLI contract other areas rely on (e2e tests, the Helm chart, the demo)."""

import kopf
import pytest

from modelship_operator import __main__ as cli
from modelship_operator.runtime import controller, settings, watches


def test_defaults_watch_all_namespaces():
    s = cli.parse_args([])
    assert s.clusterwide and s.namespaces == ()
    assert (s.health_port, s.metrics_port) == (8080, 9090)
    assert s.kubeconfig is None
    assert s.liveness_endpoint == "http://0.0.0.0:8080/healthz"


def test_flags():
    s = cli.parse_args(["--namespace", "a", "-n", "b", "--namespace", "a", "--kubeconfig", "/k",
                        "--health-port", "1", "--metrics-port", "2"])
    assert s.namespaces == ("a", "b") and not s.clusterwide
    assert (s.kubeconfig, s.health_port, s.metrics_port) == ("/k", 1, 2)
    assert cli.parse_args(["--all-namespaces"]).clusterwide


def test_namespace_and_all_namespaces_are_exclusive():
    with pytest.raises(SystemExit):
        cli.parse_args(["--all-namespaces", "--namespace", "a"])


def test_kopf_settings_keep_progress_out_of_status_and_diff_nothing():
    ks = settings.Settings().kopf_settings()
    assert isinstance(ks.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    body = kopf.Body({"metadata": {"name": "x"}, "spec": {"image": "a"}})
    assert ks.persistence.diffbase_storage.build(body=body) == {}  # no per-event deep copy
    assert ks.persistence.diffbase_storage.fetch(body=body) is None


def test_registry_has_every_trigger():
    registry = watches.build_registry(controller.Controller(None, settings.Settings()), settings.Settings())
    resources = set()
    for sub in (registry._changing, registry._watching, registry._spawning):
        for handler in sub.get_all_handlers():
            resources.add((handler.selector.group, handler.selector.plural or handler.selector.any_name))
    assert {("modelship.io", "modeldeployments"), ("apps", "deployments"), ("", "services"),
            ("policy", "poddisruptionbudgets"), ("", "pods")} <= resources


def test_one_replica_by_default_lease_leader_election_on_request():
    s = cli.parse_args([])
    assert not s.leader_elect and s.kopf_settings().peering.standalone
    s = cli.parse_args(["--leader-elect", "--leader-elect-resource-name", "ms", "--leader-elect-resource-namespace",
                        "ops", "--leader-elect-lease-duration", "20"])
    assert s.leader_elect and s.kopf_settings().peering.standalone  # kopf peering is not used at all
    lease = s.lease_config("me")
    assert (lease.namespace, lease.name, lease.identity) == ("ops", "ms", "me")
    assert (lease.lease_duration, lease.renew_deadline, lease.retry_period) == (20, 10, 2)  # client-go's defaults
    with pytest.raises(SystemExit):  # the leader would not stop before another may start
        cli.parse_args(["--leader-elect", "--leader-elect-renew-deadline", "20"])
