"""The chart as helm renders it: lint, every ci/ value set, the schema, security and RBAC.

Everything runs the real helm binary (`helm lint`, `helm template`); the checks read
the rendered manifests, so they hold for what `helm install` would send.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_support import CHART, CI_VALUES, CRD_FILE, by_kind, one, render, run_helm

pytestmark = pytest.mark.usefixtures("helm")

CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
RBAC_KINDS = ("Role", "ClusterRole")
#: Verbs that would let the operator grant itself more than the chart gives it.
ESCALATING_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}
#: Resources the operator must never be able to touch.
FORBIDDEN_RESOURCES = {"secrets", "configmaps", "nodes", "serviceaccounts", "roles", "rolebindings",
                       "clusterroles", "clusterrolebindings", "*", "pods/exec", "pods/log"}


def test_ci_value_sets_exist() -> None:
    assert {"default", "namespaced", "ha", "metrics"} <= set(CI_IDS), CI_IDS


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_lint_strict(values: Path) -> None:
    out = run_helm("lint", str(CHART), "--strict", "-f", str(values))
    assert "0 chart(s) failed" in out.stdout, out.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_template_renders_valid_objects(values: Path) -> None:
    docs = render([values])
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        assert doc["metadata"].get("name"), doc
    deploy = one(docs, "Deployment")
    assert deploy["metadata"]["namespace"] == "modelship-system"


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_restricted_security_context(values: Path) -> None:
    pod = one(render([values]), "Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 10001 and psc["runAsGroup"] == 10001 and psc["fsGroup"] == 10001
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # The read-only root filesystem leaves /tmp writable through an emptyDir.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_probes_hit_the_operator_health_endpoint(values: Path) -> None:
    (container,) = one(render([values]), "Deployment")["spec"]["template"]["spec"]["containers"]
    health = next(p for p in container["ports"] if p["name"] == "health")
    assert f"--health-port={health['containerPort']}" in container["args"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe


def _rules(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{d['kind']}/{d['metadata']['name']}", rule) for d in docs if d["kind"] in RBAC_KINDS
            for rule in d.get("rules", [])]


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_rbac_least_privilege(values: Path) -> None:
    docs = render([values])
    rules = _rules(docs)
    assert rules, "no RBAC rendered"
    for where, rule in rules:
        assert "*" not in rule["apiGroups"], (where, rule)
        assert not set(rule["resources"]) & FORBIDDEN_RESOURCES, (where, rule)
        assert not set(rule["verbs"]) & ESCALATING_VERBS, (where, rule)
        assert "resourceNames" not in rule or rule["resourceNames"], (where, rule)
        assert not rule.get("nonResourceURLs"), (where, rule)
    # Pods and ReplicaSets are evidence only: never written.
    for where, rule in rules:
        if {"pods", "replicasets"} & set(rule["resources"]):
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, (where, rule)


#: Exactly what the operator calls (operator/modelship_operator/kube.py, runtime/watches.py)
#: and what kopf needs (watch, CRD discovery). A new API call in the operator must be added
#: here and in templates/rbac.yaml on purpose.
EXPECTED_CLUSTER_RULES = {
    ("modelship.io", "modeldeployments"): {"get", "list", "watch", "patch"},
    ("modelship.io", "modeldeployments/status"): {"patch"},
    ("modelship.io", "modeldeployments/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch"},
    ("", "services"): {"get", "list", "watch", "create", "patch"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "persistentvolumeclaims"): {"get", "list", "watch"},
    ("", "events"): {"create"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
#: Leader election, in the release namespace only: create the Lease, read and renew that one.
EXPECTED_LEASE_RULES = {("coordination.k8s.io", "leases"): {"create", "get", "update"}}


def _flat(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_rbac_is_exactly_what_the_operator_uses() -> None:
    role = one(render(), "ClusterRole")
    assert _flat(role["rules"]) == EXPECTED_CLUSTER_RULES
    ha = render(set_values=["replicas=2", "leaderElection.enabled=true"])
    assert _flat(one(ha, "ClusterRole")["rules"]) == EXPECTED_CLUSTER_RULES
    lease_role = one(ha, "Role")
    assert lease_role["metadata"]["namespace"] == "modelship-system"
    assert _flat(lease_role["rules"]) == EXPECTED_LEASE_RULES
    for rule in lease_role["rules"]:  # reading and renewing: that one Lease only
        if set(rule["verbs"]) & {"get", "update"}:
            assert rule["resourceNames"] == ["modelship"], rule


def test_every_rbac_rule_says_why() -> None:
    """Each rule in the RBAC template is preceded by a comment line explaining it."""
    lines = (CHART / "templates" / "rbac.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*- apiGroups:", line):
            prev = lines[i - 1].strip()
            assert prev.startswith("#"), f"rbac.yaml:{i + 1}: rule without a comment: {line.strip()}"


def test_rbac_cluster_wide_by_default() -> None:
    docs = render()
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    role = one(docs, "ClusterRole")
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modelship", "namespace": "modelship-system"}]
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and not any(a.startswith("--namespace") for a in args)
    # No Lease rights without leader election.
    assert not any("leases" in rule["resources"] for _, rule in _rules(docs))


def test_rbac_namespaced_has_a_role_per_namespace() -> None:
    docs = render(set_values=["watch.namespaces={ml,ml-staging}"])
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml", "ml-staging"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == ["ml", "ml-staging"]
    # The only cluster-wide grant left is read-only discovery (CRDs, Namespaces).
    (cluster_role,) = by_kind(docs, "ClusterRole")
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
        assert set(rule["resources"]) <= {"customresourcedefinitions", "namespaces"}, rule
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml" in args and "--namespace=ml-staging" in args and "--all-namespaces" not in args


def test_rbac_namespaced_without_discovery_is_namespaced_only() -> None:
    docs = render(set_values=["watch.namespaces={ml}", "rbac.discovery=false"])
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")


def test_ha_uses_lease_leader_election() -> None:
    docs = render(set_values=["replicas=3", "leaderElection.enabled=true", "leaderElection.leaseDuration=20"])
    deploy = one(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--leader-elect", "--leader-elect-resource-name=modelship", "--leader-elect-resource-namespace=modelship-system",
            "--leader-elect-lease-duration=20", "--leader-elect-renew-deadline=10",
            "--leader-elect-retry-period=2"} <= set(args)
    binding = one(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "Role")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modelship", "namespace": "modelship-system"}]
    # No kopf peering left: no peering objects, CRDs or rights.
    assert not [d for d in docs if "kopf" in d["kind"].lower() or "kopf" in d["metadata"]["name"]]


def test_ha_namespaced_keeps_the_lease_in_the_release_namespace() -> None:
    docs = render(set_values=["replicas=2", "leaderElection.enabled=true", "watch.namespaces={a,b}"])
    by_namespace = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role") if "leader" not in r["metadata"]["name"]}
    assert sorted(by_namespace) == ["a", "b"]
    for role in by_namespace.values():  # the served namespaces grant no Lease rights
        assert not any("leases" in r["resources"] for r in role["rules"]), role
    (lease_role,) = [r for r in by_kind(docs, "Role") if "leader" in r["metadata"]["name"]]
    assert lease_role["metadata"]["namespace"] == "modelship-system" and _flat(lease_role["rules"]) == EXPECTED_LEASE_RULES


def test_replicas_without_leader_election_is_refused() -> None:
    proc = run_helm("template", "x", str(CHART), "--set", "replicas=2", check=False)
    assert proc.returncode != 0
    assert "leaderElection.enabled" in proc.stderr


def test_lease_timings_that_would_let_two_leaders_write_are_refused() -> None:
    proc = run_helm("template", "x", str(CHART), "--set", "replicas=2", "--set", "leaderElection.enabled=true",
                    "--set", "leaderElection.renewDeadline=20", check=False)
    assert proc.returncode != 0 and "renewDeadline" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "setting, key",
    [
        ("replica=2", "replica"),
        ("image.tagg=1.0", "tagg"),
        ("crds.enable=false", "enable"),
        ("securityContext.readOnlyRootFileSystem=false", "readOnlyRootFileSystem"),
        ("metrics.serviceMonitor.enbled=true", "enbled"),
    ],
)
def test_schema_rejects_misspelled_keys(setting: str, key: str) -> None:
    proc = run_helm("template", "x", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0, f"--set {setting} was accepted"
    assert "additional properties" in proc.stderr.lower() or "additionalProperties" in proc.stderr, proc.stderr
    assert key in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "setting",
    ["replicas=-1", "image.pullPolicy=Sometimes", "healthPort=0", "watch.namespaces={Bad_Name}", "crds.keep=maybe"],
)
def test_schema_rejects_bad_values(setting: str) -> None:
    proc = run_helm("template", "x", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0, f"--set {setting} was accepted"


def test_metrics_off_by_default_and_on_by_value() -> None:
    assert not by_kind(render(), "Service") and not by_kind(render(), "ServiceMonitor")
    docs = render(set_values=["metrics.serviceMonitor.enabled=true"])
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    docs = render(set_values=["metrics.service.enabled=true"])
    assert one(docs, "Service") and not by_kind(docs, "ServiceMonitor")


def test_image_tag_defaults_to_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (container,) = one(render(), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"modelship-operator:{chart['appVersion']}"
    digest = "sha256:" + "a" * 64
    (container,) = one(render(set_values=[f"image.digest={digest}"]), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["image"] == f"modelship-operator@{digest}"


def test_app_version_matches_project_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = re.search(r'^version = "([^"]+)"', (CHART.parents[2] / "pyproject.toml").read_text(), re.M)
    assert project and chart["appVersion"] == project.group(1)


def _crd_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (crd,) = [d for d in by_kind(docs, "CustomResourceDefinition") if d["metadata"]["name"] == "modeldeployments.modelship.io"]
    return crd


def test_crd_matches_the_generated_one() -> None:
    """The chart's CRD is the generator's: same spec as deploy/crds/, keep policy, chart labels."""
    generated = yaml.safe_load(CRD_FILE.read_text())
    crd = _crd_of(render())
    assert crd["spec"] == generated["spec"], "chart CRD drifted from deploy/crds/: run `make crd`"
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    chart_copy = CHART / "files" / "crds" / CRD_FILE.name
    assert chart_copy.read_text() == CRD_FILE.read_text(), "run `make crd` (python -m modelship_operator.crdgen)"


def test_crd_toggles() -> None:
    crd = _crd_of(render(set_values=["crds.keep=false"]))
    assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})
    names = {d["metadata"]["name"] for d in by_kind(render(set_values=["crds.enabled=false"]), "CustomResourceDefinition")}
    assert "modeldeployments.modelship.io" not in names


def test_every_value_is_commented() -> None:
    """Each key in values.yaml has a comment above it or above one of its parents."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, commented) of the open parents
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        commented = i > 0 and lines[i - 1].strip().startswith("#")
        if not commented and not any(c for _, c in stack):
            is_parent = line.rstrip().endswith(":")
            if not is_parent:
                missing.append(f"values.yaml:{i + 1}: {line.strip()}")
        stack.append((indent, commented))
    assert not missing, "uncommented values:\n" + "\n".join(missing)


def test_schema_describes_every_top_level_value() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"])
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_rendered_flags_are_the_operators_flags(values: Path) -> None:
    """The chart's container args parse with the operator's own CLI, meaning what the values say."""
    from modelship_operator.__main__ import parse_args

    docs = render([values])
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    settings = parse_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.health_port == ports["health"] and settings.metrics_port == ports["metrics"]
    values_doc = yaml.safe_load(values.read_text()) or {}
    assert list(settings.namespaces) == (values_doc.get("watch") or {}).get("namespaces", [])
    election = values_doc.get("leaderElection") or {}
    assert settings.leader_elect is bool(election.get("enabled"))
    if settings.leader_elect:
        assert (settings.lease_name, settings.lease_namespace) == ("modelship", "modelship-system")
        assert (settings.lease_duration_seconds, settings.renew_deadline_seconds, settings.retry_period_seconds) == (
            election.get("leaseDuration", 15), election.get("renewDeadline", 10), election.get("retryPeriod", 2))
        # What the operator's leader election needs is rendered: Lease rights where the Lease lives.
        (lease_role,) = [r for r in by_kind(docs, "Role") if "leader" in r["metadata"]["name"]]
        assert lease_role["metadata"]["namespace"] == settings.lease_namespace


def test_packaged_chart_is_self_contained(tmp_path: Path) -> None:
    """`helm package` carries the generated CRD; the .tgz renders on its own."""
    import tarfile

    run_helm("package", str(CHART), "--destination", str(tmp_path))
    (tgz,) = tmp_path.glob("modelship-*.tgz")
    with tarfile.open(tgz) as archive:
        names = set(archive.getnames())
    assert {"modelship/files/crds/modelship.io_modeldeployments.yaml", "modelship/values.schema.json",
            "modelship/templates/NOTES.txt"} <= names
    text = run_helm("template", "x", str(tgz), "--include-crds").stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(text) if d]
    assert kinds.count("CustomResourceDefinition") == 1 and "Deployment" in kinds


#: kubernetes-client method → (API group, resource). Unknown ones fail the test below on purpose.
_CLIENT_RESOURCES = {
    "deployment": ("apps", "deployments"),
    "replica_set": ("apps", "replicasets"),
    "service": ("", "services"),
    "pod": ("", "pods"),
    "event": ("", "events"),
    "pod_disruption_budget": ("policy", "poddisruptionbudgets"),
    "secret": ("", "secrets"),
    "config_map": ("", "configmaps"),
    "node": ("", "nodes"),
    "persistent_volume_claim": ("", "persistentvolumeclaims"),
}
_CLIENT_VERBS = {"read": "get", "list": "list", "patch": "patch", "create": "create", "delete": "delete",
                 "replace": "update"}


def _operator_api_calls() -> set[tuple[str, str, str]]:
    """(group, resource, verb) for every kubernetes-client call in the operator's API module."""
    import modelship_operator.kube as kube_module

    src = Path(kube_module.__file__).read_text()
    calls: set[tuple[str, str, str]] = set()
    for verb, rest in re.findall(r"self\.(?:apps|core|policy)\.(read|list|patch|create|delete|replace)_namespaced_(\w+)", src):
        assert rest in _CLIENT_RESOURCES, f"kube.py calls {verb}_namespaced_{rest}: map it here and grant it in rbac.yaml"
        group, resource = _CLIENT_RESOURCES[rest]
        calls.add((group, resource, _CLIENT_VERBS[verb]))
        if verb == "patch" and "APPLY" in src:  # server-side apply creates what does not exist yet
            calls.add((group, resource, "create"))
    for verb, sub in re.findall(r"self\.custom\.(get|patch|list|delete|create|replace)_namespaced_custom_object(_status)?", src):
        calls.add(("modelship.io", "modeldeployments/status" if sub else "modeldeployments",
                   {"get": "get", "replace": "update"}.get(verb, verb)))
    for verb in re.findall(r"self\.coordination\.(read|create|replace)_namespaced_lease", src):
        calls.add(("coordination.k8s.io", "leases", _CLIENT_VERBS[verb]))
    return calls


def test_rbac_covers_every_call_the_operator_makes() -> None:
    """Cluster-less drift check: a new API call in kube.py, or a new watched kind in watches.py,
    fails here until templates/rbac.yaml grants it (the e2e tier proves it end to end)."""
    from modelship_operator.runtime import watches

    docs = render(set_values=["replicas=2", "leaderElection.enabled=true"])
    granted = _flat([rule for _, rule in _rules(docs)])
    needed = _operator_api_calls()
    assert needed, "no API calls found in kube.py (did it move?)"
    assert ("coordination.k8s.io", "leases", "update") in needed
    for group_version, plural, *_ in (*watches.CHILDREN, watches.PODS, watches.CLAIMS):  # kopf watches these
        group = group_version.rpartition("/")[0]
        needed |= {(group, plural, "list"), (group, plural, "watch")}
    missing = sorted((g, r, v) for g, r, v in needed if v not in granted.get((g, r), set()))
    assert not missing, f"the chart's RBAC lacks {missing}"
