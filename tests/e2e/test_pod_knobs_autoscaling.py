"""Issue 15 against the real API server and controllers: the pod knobs (validated by the CRD,
passed to the pods, a change rolls out) and spec.autoscaling (the HPA object, and who owns the
Deployment's replicas under server-side apply: the real HPA controller scales, the operator
never undoes it, and `spec.replicas` / `kubectl scale md` work again once autoscaling is off).

KWOK pods have no metrics, so the HPA here only enforces its bounds (minReplicas) and the
scale writes are made through the scale subresource exactly as the HPA controller makes them;
scaling on load is the node tier's job (tests/node/test_autoscaling.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e_support import Cluster, condition, model_deployment, wait_until

pytestmark = pytest.mark.usefixtures("operator")

CONVERGE_S = 60
REVISION_LABEL = "modelship.io/revision"
HANDOVER_MANAGER = "modelship-replicas-handover"


def _dry_run(cluster: Cluster, obj: dict[str, Any]) -> Any:
    return cluster.kubectl("-n", "default", "apply", "--server-side", "--dry-run=server", "--field-manager=e2e-user",
                           "-f", "-", input=json.dumps(obj), check=False)


def _spec(**fields: Any) -> dict[str, Any]:
    return model_deployment("bad", **fields)


VOL = [{"name": "cfg", "configMap": {"name": "cfg"}}]
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("selector-label", _spec(podLabels={"app.kubernetes.io/instance": "x"}), "podLabels must not set the operator's keys"),
    ("revision-label", _spec(podLabels={"modelship.io/revision": "1"}), "podLabels must not set the operator's keys"),
    ("owner-annotation", _spec(podAnnotations={"modelship.io/modeldeployment": "x"}),
     "podAnnotations must not set the operator's keys"),
    ("apparmor-unconfined", _spec(podAnnotations={"container.apparmor.security.beta.kubernetes.io/server": "unconfined"}),
     "nor AppArmor/seccomp annotations"),
    ("hostpath-volume", _spec(volumes=[{"name": "h", "hostPath": {"path": "/"}}]), "field not declared in schema"),
    ("two-sources", _spec(volumes=[{"name": "v", "configMap": {"name": "a"}, "secret": {"secretName": "b"}}]),
     "a volume sets exactly one of configMap, secret or persistentVolumeClaim"),
    ("operator-volume-name", _spec(volumes=[{"name": "tmp", "configMap": {"name": "a"}}]),
     "volume names tmp, dshm and modelship-* are the operator's"),
    ("mount-over-tmp", _spec(volumes=VOL, volumeMounts=[{"name": "cfg", "mountPath": "/tmp"}]),
     "not on, above or below the server's own paths"),
    ("mount-above-venv", _spec(volumes=VOL, volumeMounts=[{"name": "cfg", "mountPath": "/opt"}]),
     "not on, above or below the server's own paths"),
    ("mount-of-no-volume", _spec(volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}]),
     "every volumeMounts[].name must name a volume of spec.volumes"),
    ("pull-policy", _spec(imagePullPolicy="Sometimes"), 'Unsupported value: "Sometimes"'),
    ("service-account-name", _spec(serviceAccountName="Not_A_Name"), "spec.serviceAccountName"),
    ("spread-skew", _spec(topologySpreadConstraints=[{"maxSkew": 0, "topologyKey": "zone",
                                                      "whenUnsatisfiable": "DoNotSchedule"}]), "maxSkew"),
    ("security-context", _spec(securityContext={"privileged": True}), "field not declared in schema"),
    ("autoscaling-bounds", _spec(resources={"requests": {"cpu": "1"}}, autoscaling={"minReplicas": 3, "maxReplicas": 2}),
     "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
    ("autoscaling-cpu-without-request", _spec(autoscaling={"maxReplicas": 2}),
     "an autoscaling metric by averageUtilization needs resources.requests"),
    ("in-flight-by-utilization", _spec(autoscaling={"maxReplicas": 2, "metrics": [
        {"type": "InFlightRequests", "averageUtilization": 50}]}), "the InFlightRequests metric takes averageValue"),
]


@pytest.mark.parametrize(("manifest", "message"), [(m, msg) for _, m, msg in BAD], ids=[i for i, _, _ in BAD])
def test_bad_knobs_and_autoscaling_are_refused_by_the_api_server(
    cluster: Cluster, crd: str, manifest: dict[str, Any], message: str
) -> None:
    proc = _dry_run(cluster, manifest)
    assert proc.returncode != 0, f"accepted by the API server: {json.dumps(manifest['spec'])}"
    assert message in proc.stderr, f"expected {message!r} in:\n{proc.stderr}"


def test_kubectl_explain_describes_the_new_fields(cluster: Cluster, crd: str) -> None:
    for path, text in [("md.spec.podLabels", "May not set the operator's own labels"),
                       ("md.spec.volumeMounts.readOnly", "Default: true"),
                       ("md.spec.autoscaling.metrics.type", "InFlightRequests"),
                       ("md.status.autoscaling.desiredReplicas", "Pods the HPA wants now")]:
        out = cluster.kubectl("explain", path).stdout
        assert text in out, f"{path}: {out}"


KNOBS = {
    "imagePullSecrets": [{"name": "registry-creds"}],
    "imagePullPolicy": "Always",
    "serviceAccountName": "model-reader",
    "podLabels": {"team": "vision"},
    "podAnnotations": {"example.com/owner": "vision"},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                   "whenUnsatisfiable": "ScheduleAnyway"}],
    "volumes": [{"name": "labels", "configMap": {"name": "labels"}},
                {"name": "token", "secret": {"secretName": "token"}}],
    "volumeMounts": [{"name": "labels", "mountPath": "/config/labels"},
                     {"name": "token", "mountPath": "/secrets/token"}],
}


def _template_labels(cluster: Cluster, ns: str, name: str) -> dict[str, str]:
    return cluster.deployment(ns, name)["spec"]["template"]["metadata"]["labels"]


def test_knobs_reach_the_pods_and_a_change_rolls_out(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("-n", ns, "create", "serviceaccount", "model-reader")
    cluster.kubectl("-n", ns, "create", "configmap", "labels", "--from-literal=l.txt=cat")
    cluster.kubectl("-n", ns, "create", "secret", "generic", "token", "--from-literal=t=x")
    cluster.apply(model_deployment("knobs", namespace=ns, replicas=2, **KNOBS))

    def pods_with_knobs() -> list[dict[str, Any]]:
        pods = cluster.pods(ns, "app.kubernetes.io/instance=knobs")
        ready = [p for p in pods if (condition(p, "Ready") or {}).get("status") == "True"]
        return ready if len(ready) == 2 else []

    pod = wait_until(pods_with_knobs, timeout=CONVERGE_S, what="2 ready pods with the knobs")[0]
    spec, meta = pod["spec"], pod["metadata"]
    assert spec["serviceAccountName"] == "model-reader" and spec["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert spec["containers"][0]["imagePullPolicy"] == "Always"
    assert meta["labels"]["team"] == "vision" and meta["annotations"]["example.com/owner"] == "vision"
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "knobs"
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/config/labels"]["readOnly"] is True and mounts["/secrets/token"]["readOnly"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    before = _template_labels(cluster, ns, "knobs")[REVISION_LABEL]

    cluster.kubectl("-n", ns, "patch", "md", "knobs", "--type=merge", "-p", json.dumps({"spec": {"podLabels": {"team": "nlp"}}}))
    labels = wait_until(lambda: (lb := _template_labels(cluster, ns, "knobs")).get("team") == "nlp" and lb,
                        timeout=CONVERGE_S, what="the new pod labels in the template")
    assert int(labels[REVISION_LABEL]) == int(before) + 1
    history = wait_until(lambda: len((cluster.md(ns, "knobs").get("status") or {}).get("history") or []) == 2
                         and cluster.md(ns, "knobs")["status"]["history"], timeout=CONVERGE_S, what="two revisions")
    assert history[1]["template"]["podLabels"] == {"team": "nlp"}


def _replicas_managers(dep: dict[str, Any]) -> set[str]:
    return {m["manager"] for m in dep["metadata"].get("managedFields") or []
            if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})}


def test_autoscaling_owns_an_hpa_and_the_operator_never_fights_its_replicas(cluster: Cluster, ns: str) -> None:
    scaled = model_deployment("auto", namespace=ns, replicas=1, resources={"requests": {"cpu": "100m"}},
                              autoscaling={"minReplicas": 2, "maxReplicas": 5})
    cluster.apply(scaled)
    hpa = wait_until(lambda: cluster.get_json("hpa", "auto", "-n", ns), timeout=CONVERGE_S, what="the HPA")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "auto"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    # The real HPA controller raises the Deployment to minReplicas (no metrics needed for that).
    wait_until(lambda: cluster.deployment(ns, "auto")["spec"].get("replicas") == 2, timeout=CONVERGE_S,
               what="the HPA controller to scale to minReplicas")
    assert "modelship" not in _replicas_managers(cluster.deployment(ns, "auto"))
    wait_until(lambda: ((cluster.md(ns, "auto").get("status") or {}).get("autoscaling") or {}).get("desiredReplicas") == 2,
               timeout=CONVERGE_S, what="status.autoscaling to report the HPA")

    # A scale write as the HPA makes it (scale subresource), then a spec change the operator
    # applies: the count stays (no DriftCorrected, no reset to 1).
    cluster.kubectl("-n", ns, "scale", "deployment/auto", "--replicas=4")
    cluster.kubectl("-n", ns, "patch", "md", "auto", "--type=merge", "-p",
                    json.dumps({"spec": {"podAnnotations": {"example.com/change": "1"}}}))
    wait_until(lambda: cluster.deployment(ns, "auto")["spec"]["template"]["metadata"]["annotations"]
               .get("example.com/change") == "1", timeout=CONVERGE_S, what="the operator to apply the change")
    dep = cluster.deployment(ns, "auto")
    assert dep["spec"]["replicas"] == 4, dep["metadata"].get("managedFields")
    assert "modelship" not in _replicas_managers(dep)
    reasons = [e["reason"] for e in cluster.get_json("events", "-n", ns,
                                                      "--field-selector=involvedObject.name=auto")["items"]]
    assert "DriftCorrected" not in reasons, reasons

    # Off: the HPA goes, spec.replicas applies again, and kubectl scale md works.
    cluster.kubectl("-n", ns, "patch", "md", "auto", "--type=json", "-p",
                    json.dumps([{"op": "remove", "path": "/spec/autoscaling"}]))
    wait_until(lambda: cluster.kubectl("-n", ns, "get", "hpa", "auto", check=False).returncode != 0,
               timeout=CONVERGE_S, what="the HPA to be deleted")
    wait_until(lambda: cluster.deployment(ns, "auto")["spec"]["replicas"] == 1, timeout=CONVERGE_S,
               what="spec.replicas applied again")
    assert "modelship" in _replicas_managers(cluster.deployment(ns, "auto"))
    cluster.kubectl("-n", ns, "scale", "md/auto", "--replicas=3")
    wait_until(lambda: cluster.deployment(ns, "auto")["spec"]["replicas"] == 3, timeout=CONVERGE_S,
               what="kubectl scale md to reach the Deployment")
    assert not (cluster.md(ns, "auto").get("status") or {}).get("autoscaling")


def test_turning_autoscaling_on_keeps_the_running_count(cluster: Cluster, ns: str) -> None:
    """The field hand-over: the operator stops applying replicas (it owned them) without the
    API server resetting the count to the default of 1."""
    cluster.apply(model_deployment("handover", namespace=ns, replicas=3, resources={"requests": {"cpu": "100m"}}))
    wait_until(lambda: cluster.deployment(ns, "handover")["spec"]["replicas"] == 3, timeout=CONVERGE_S,
               what="3 replicas")
    cluster.kubectl("-n", ns, "patch", "md", "handover", "--type=merge", "-p", json.dumps(
        {"spec": {"autoscaling": {"minReplicas": 1, "maxReplicas": 5}, "podLabels": {"autoscaled": "yes"}}}))
    wait_until(lambda: cluster.deployment(ns, "handover")["spec"]["template"]["metadata"]["labels"]
               .get("autoscaled") == "yes", timeout=CONVERGE_S, what="the change applied")
    dep = cluster.deployment(ns, "handover")
    assert dep["spec"]["replicas"] == 3
    managers = _replicas_managers(dep)
    assert "modelship" not in managers and managers & {HANDOVER_MANAGER, "kube-controller-manager"}, managers
