"""The Helm chart against the real local control plane.

The chart's own operator pod is a KWOK pod here (no container runs), so besides
`helm install` / `helm upgrade` / `helm uninstall` these tests run the operator
process locally, with the flags from the *installed* Deployment and a kubeconfig
holding a token of the chart's ServiceAccount (`kubectl create token`): whatever
the operator manages to do, the chart's RBAC allowed; whatever it needs and the
chart forgot fails the test. `kubectl auth can-i --as=system:serviceaccount:...`
shows what the identity cannot do. HA: two such processes with Lease leader election;
the leader is SIGKILLed (or cut off from the API server) and the other takes over.

The session's admin operator (conftest `operator`) is stopped for these tests, so
every reconcile seen here was made by the operator under test.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import (
    CRD_NAME,
    ROOT,
    Cluster,
    OperatorProcess,
    _die_with_parent,
    condition,
    free_port,
    model_deployment,
    wait_until,
)
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

# The chart helpers live with the chart tests (tests/helm); this tier reuses them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helm"))
from helm_support import CHART, helm_binary, run_helm

OUT = ROOT / "_out" / "e2e" / "helm"
CONVERGE_S = 90
#: Lease timings for the HA tests (the chart's defaults are client-go's 15/10/2): a SIGKILLed
#: leader's Lease is taken over LEASE_S after its last renewal; a leader that cannot renew stops
#: writing RENEW_S after its last renewal.
LEASE_S, RENEW_S, RETRY_S = 6, 4, 1
LEASE_SETS = ("leaderElection.enabled=true", f"leaderElection.leaseDuration={LEASE_S}",
              f"leaderElection.renewDeadline={RENEW_S}", f"leaderElection.retryPeriod={RETRY_S}")
#: Allowance for one pass after the hand-over on this shared machine (not a target).
ONE_PASS_S = 20


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return helm_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def sole_operator(operator: OperatorProcess) -> Iterator[None]:
    """Stop the session's admin operator for this test; start it again afterwards."""
    operator.stop()
    yield
    operator.start()


class Release:
    """One helm release of the chart, uninstalled at teardown whatever happened."""

    def __init__(self, cluster: Cluster, namespace: str, name: str | None = None):
        self.cluster = cluster
        self.namespace = namespace
        self.name = name or f"ms-{uuid.uuid4().hex[:6]}"
        self.installed = False

    @property
    def fullname(self) -> str:
        return f"{self.name}-modelship"

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    def helm(self, *args: str, timeout: float = 180) -> str:
        return run_helm(*args, kubeconfig=self.cluster.kubeconfig, timeout=timeout).stdout

    def install(self, *sets: str) -> str:
        out = self.helm("install", self.name, str(CHART), "-n", self.namespace, "--wait", "--timeout", "120s",
                        *[a for s in sets for a in ("--set", s)])
        self.installed = True
        return out

    def upgrade(self, *sets: str) -> str:
        """`helm upgrade` with --set for each KEY=VALUE; flags (--reset-values) pass through."""
        args = [a for s in sets for a in ((s,) if s.startswith("--") else ("--set", s))]
        return self.helm("upgrade", self.name, str(CHART), "-n", self.namespace, "--wait", "--timeout", "120s", *args)

    def uninstall(self) -> str:
        out = self.helm("uninstall", self.name, "-n", self.namespace, "--wait", "--timeout", "120s")
        self.installed = False
        return out

    def operator_args(self) -> list[str]:
        """The container args of the installed operator Deployment."""
        dep = self.cluster.deployment(self.namespace, self.fullname)
        return list(dep["spec"]["template"]["spec"]["containers"][0]["args"])

    def token_kubeconfig(self) -> Path:
        """A kubeconfig authenticating as the chart's ServiceAccount (a bound token)."""
        token = self.cluster.kubectl(
            "create", "token", self.fullname, "-n", self.namespace, "--duration=1h"
        ).stdout.strip()
        admin = yaml.safe_load(self.cluster.kubeconfig.read_text())
        ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
        cluster_entry = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])["cluster"]
        cluster_entry = dict(cluster_entry)
        ca = cluster_entry.get("certificate-authority")
        if ca and not Path(ca).is_absolute():  # relative to the admin kubeconfig
            cluster_entry["certificate-authority"] = str((self.cluster.kubeconfig.parent / ca).resolve())
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "local", "cluster": cluster_entry}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
        }
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"{self.name}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def cleanup(self) -> None:
        if self.installed:
            run_helm("uninstall", self.name, "-n", self.namespace, "--wait", "--timeout", "60s",
                     kubeconfig=self.cluster.kubeconfig, check=False)


@pytest.fixture
def release(cluster: Cluster, crd: str, ns: str, helm: Path) -> Iterator[Release]:
    rel = Release(cluster, ns)
    yield rel
    rel.cleanup()


class ChartOperator(OperatorProcess):
    """The operator process with the installed Deployment's flags and the ServiceAccount's token."""

    def __init__(self, cluster: Cluster, log_path: Path, args: list[str], kubeconfig: Path):
        super().__init__(cluster, log_path)
        self.args = [a for a in args if not a.startswith(("--health-port", "--metrics-port"))]
        self.kubeconfig = kubeconfig
        self.metrics_port = 0

    def start(self) -> None:
        assert not self.running(), "operator already running"
        self.starts += 1
        self.metrics_port = free_port()
        cmd = [self.python, "-m", "modelship_operator", *self.args, "--kubeconfig", str(self.kubeconfig),
               f"--health-port={free_port()}", f"--metrics-port={self.metrics_port}"]
        env = self.cluster.env() | {"KUBECONFIG": str(self.kubeconfig)}
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            # Dies with the test process (as conftest's operator does): an orphan would go on
            # reconciling the shared cluster.
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        # Up = its /metrics answers (served before kopf starts). On a loaded machine the
        # imports alone take seconds; a test must not race them.
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited at start with code {self.proc.returncode}")
            self.reconciles()
            return True

        try:
            wait_until(up, timeout=60, what="the operator's /metrics endpoint")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as rsp:
            return str(rsp.read().decode())

    def leading(self) -> bool:
        """This process's own word (modelship_leader): does it hold the Lease and may write?"""
        return any(
            sample.value == 1
            for family in text_string_to_metric_families(self._metrics()) if family.name == "modelship_leader"
            for sample in family.samples
        )

    def reconciles(self, *results: str) -> float:
        """This process's own reconcile count (its /metrics on loopback), optionally by result
        (ok, problem, skipped, retry, error). Proof of which process did the work."""
        text = self._metrics()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text) if family.name == "modelship_reconciles"
            for sample in family.samples
            if sample.name == "modelship_reconciles_total" and (not results or sample.labels["result"] in results)
        )


def _rbac_trouble(log: str) -> list[str]:
    """Log lines that mean the identity lacked a permission."""
    needles = ("forbidden", "not enough permissions")
    return [line for line in log.splitlines() if any(n in line.lower() for n in needles)]


def _ready_md(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    md = cluster.md(ns, name)
    cond = condition(md, "Ready")
    status = md.get("status") or {}
    if cond and cond["status"] == "True" and status.get("observedGeneration") == md["metadata"]["generation"]:
        return md
    return None


def _settled(cluster: Cluster, release: Release, replicas: int) -> dict[str, Any] | None:
    dep = cluster.deployment(release.namespace, release.fullname)
    st = dep["status"]
    want = (replicas, replicas, replicas)
    return dep if (st.get("replicas"), st.get("updatedReplicas"), st.get("readyReplicas")) == want else None


def _managers(obj: dict[str, Any]) -> set[str]:
    return {m["manager"] for m in obj["metadata"].get("managedFields") or []}


# -- helm install / upgrade / uninstall ------------------------------------------------


def test_install_upgrade_uninstall(cluster: Cluster, release: Release, tmp_path: Path) -> None:
    # The CRD already exists (the `crd` fixture applied deploy/crds/): let this release
    # adopt it, the way a user moves from `kubectl apply` to the chart.
    adopt = [f"meta.helm.sh/release-name={release.name}", f"meta.helm.sh/release-namespace={release.namespace}"]
    cluster.kubectl("annotate", "--overwrite", f"crd/{CRD_NAME}", *adopt)
    cluster.kubectl("label", "--overwrite", f"crd/{CRD_NAME}", "app.kubernetes.io/managed-by=Helm")
    # Pod Security "restricted" enforced by the real API server: the operator pod must be admitted.
    cluster.kubectl("label", "--overwrite", "namespace", release.namespace,
                    "pod-security.kubernetes.io/enforce=restricted")
    try:
        out = release.install()
        # NOTES.txt tells the user what to do next.
        assert "kubectl apply -n ml -f examples/" in out and f"deployment/{release.fullname}" in out, out
        dep = cluster.deployment(release.namespace, release.fullname)
        assert dep["status"].get("readyReplicas") == 1
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--all-namespaces" in args
        cluster.kubectl("get", f"serviceaccount/{release.fullname}", "-n", release.namespace)
        cluster.kubectl("get", f"clusterrole/{release.fullname}", f"clusterrolebinding/{release.fullname}")
        crd_obj = cluster.get_json(f"crd/{CRD_NAME}")
        assert crd_obj["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd_obj["metadata"]["labels"]["helm.sh/chart"] == "modelship-0.1.0"

        # The CRD is a template, so `helm upgrade` upgrades it (Helm never touches crds/):
        # a chart whose generated CRD gained a printer column brings that column along.
        changed = tmp_path / "modelship"
        shutil.copytree(CHART, changed)
        crd_copy = changed / "files" / "crds" / "modelship.io_modeldeployments.yaml"
        crd_doc = yaml.safe_load(crd_copy.read_text())
        crd_doc["spec"]["versions"][0]["additionalPrinterColumns"].append(
            {"name": "Upgraded", "type": "string", "jsonPath": ".metadata.name", "priority": 1})
        crd_copy.write_text(yaml.safe_dump(crd_doc, sort_keys=False))
        release.helm("upgrade", release.name, str(changed), "-n", release.namespace, "--wait")

        def columns() -> list[str]:
            crd_now = cluster.get_json(f"crd/{CRD_NAME}")
            return [c["name"] for c in crd_now["spec"]["versions"][0].get("additionalPrinterColumns", [])]

        assert "Upgraded" in columns()

        # Upgrade: HA with leader election, metrics Service on (back on the real chart: column gone).
        release.upgrade("replicas=2", "leaderElection.enabled=true", "metrics.service.enabled=true")
        # helm --wait returns once the new ReplicaSet is ready; the old pod may still be leaving.
        dep = wait_until(lambda: _settled(cluster, release, 2), timeout=CONVERGE_S, what="2 operator pods")
        assert "--leader-elect" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
        cluster.kubectl("get", f"role/{release.fullname}-leader-election", "-n", release.namespace)
        svc = cluster.get_json(f"service/{release.fullname}-metrics", "-n", release.namespace)
        assert svc["spec"]["ports"][0]["port"] == 9090
        assert "Upgraded" not in columns()
        history = json.loads(release.helm("history", release.name, "-n", release.namespace, "-o", "json"))
        assert [h["revision"] for h in history] == [1, 2, 3] and history[-1]["status"] == "deployed"

        # Back to the defaults (--reset-values: without any values helm would reuse the last
        # release's): what is no longer rendered is removed.
        release.upgrade("--reset-values")
        assert cluster.kubectl("get", f"service/{release.fullname}-metrics", "-n", release.namespace,
                               check=False).returncode != 0
        assert cluster.kubectl("get", f"role/{release.fullname}-leader-election", "-n", release.namespace,
                               check=False).returncode != 0

        release.uninstall()
        for what in (f"deployment/{release.fullname}", f"serviceaccount/{release.fullname}"):
            assert cluster.kubectl("get", what, "-n", release.namespace, check=False).returncode != 0, what
        assert cluster.kubectl("get", f"clusterrole/{release.fullname}", check=False).returncode != 0
        # The keep policy: the CRD (and so every ModelDeployment) survives the uninstall.
        cluster.kubectl("get", f"crd/{CRD_NAME}")
    finally:
        cluster.kubectl("annotate", f"crd/{CRD_NAME}", "meta.helm.sh/release-name-",
                        "meta.helm.sh/release-namespace-", "helm.sh/resource-policy-", check=False)


def test_misspelled_value_fails_the_install(cluster: Cluster, release: Release) -> None:
    proc = run_helm("install", release.name, str(CHART), "-n", release.namespace, "--set", "replica=2",
                    kubeconfig=cluster.kubeconfig, check=False)
    assert proc.returncode != 0 and "replica" in proc.stderr, proc.stderr
    assert cluster.kubectl("get", f"deployment/{release.fullname}", "-n", release.namespace,
                           check=False).returncode != 0


# -- what the chart's identity may and may not do ----------------------------------------


def _can_i(cluster: Cluster, sa: str, verb: str, resource: str, namespace: str | None) -> bool:
    where = ["-n", namespace] if namespace else []
    resource, _, sub = resource.partition("/")  # "pods/exec": kubectl wants --subresource
    extra = [f"--subresource={sub}"] if sub else []
    proc = cluster.kubectl("auth", "can-i", verb, resource, *extra, f"--as={sa}", *where, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {verb} {resource}: {proc.stdout}{proc.stderr}"
    return answer == "yes"


ALLOWED = [
    ("patch", "deployments.apps"), ("create", "deployments.apps"), ("watch", "deployments.apps"),
    ("patch", "services"), ("delete", "poddisruptionbudgets.policy"), ("list", "pods"), ("watch", "pods"),
    ("create", "events"), ("patch", "modeldeployments.modelship.io"),
    ("patch", "modeldeployments.modelship.io/status"),
]
DENIED = [
    ("get", "secrets"), ("list", "secrets"), ("watch", "secrets"), ("get", "configmaps"),
    ("delete", "deployments.apps"), ("delete", "services"), ("create", "pods"), ("delete", "pods"),
    ("patch", "pods"), ("create", "pods/exec"), ("get", "pods/log"), ("list", "replicasets.apps"),
    ("update", "modeldeployments.modelship.io"), ("delete", "modeldeployments.modelship.io"),
    ("create", "serviceaccounts/token"), ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts"), ("patch", "events"),
    ("create", "leases.coordination.k8s.io"), ("get", "leases.coordination.k8s.io"),  # no leader election here
]
CLUSTER_DENIED = [
    ("delete", "nodes"), ("patch", "nodes"), ("get", "nodes"), ("list", "secrets"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"), ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"), ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "namespaces"), ("create", "namespaces"),
]


def test_cluster_wide_identity_can_only_do_what_it_needs(cluster: Cluster, release: Release) -> None:
    release.install("crds.enabled=false")
    sa = release.service_account
    for namespace in (release.namespace, "default"):
        for verb, resource in ALLOWED:
            assert _can_i(cluster, sa, verb, resource, namespace), f"{sa} cannot {verb} {resource} in {namespace}"
        for verb, resource in DENIED:
            assert not _can_i(cluster, sa, verb, resource, namespace), f"{sa} CAN {verb} {resource} in {namespace}"
    for verb, resource in CLUSTER_DENIED:
        assert not _can_i(cluster, sa, verb, resource, None), f"{sa} CAN {verb} {resource}"
    assert not _can_i(cluster, sa, "list", "secrets", None) and not _can_i(cluster, sa, "get", "secrets", "kube-system")


def test_namespaced_identity_is_confined_to_its_namespaces(cluster: Cluster, release: Release, ns: str) -> None:
    served = f"{ns[:50]}-app"
    cluster.kubectl("create", "namespace", served)
    try:
        release.install("crds.enabled=false", f"watch.namespaces={{{served}}}")
        sa = release.service_account
        for verb, resource in ALLOWED:
            assert _can_i(cluster, sa, verb, resource, served), f"{sa} cannot {verb} {resource} in {served}"
            # ...and nowhere else, not even in its own release namespace.
            assert not _can_i(cluster, sa, verb, resource, "default"), f"{sa} CAN {verb} {resource} in default"
        for verb, resource in DENIED:
            assert not _can_i(cluster, sa, verb, resource, served), f"{sa} CAN {verb} {resource} in {served}"
        # Cluster-wide it only reads what kopf's discovery needs.
        assert _can_i(cluster, sa, "watch", "customresourcedefinitions.apiextensions.k8s.io", None)
        assert _can_i(cluster, sa, "list", "namespaces", None)
        for verb, resource in CLUSTER_DENIED:
            assert not _can_i(cluster, sa, verb, resource, None), f"{sa} CAN {verb} {resource}"
    finally:
        cluster.kubectl("delete", "namespace", served, "--wait=false", "--ignore-not-found", check=False)


# -- the operator process under the chart's identity -------------------------------------


@pytest.mark.parametrize("scope", ["all-namespaces", "namespaced"])
def test_operator_reconciles_under_the_chart_identity(
    cluster: Cluster, release: Release, ns: str, sole_operator: None, scope: str
) -> None:
    sets = ["crds.enabled=false"] + ([f"watch.namespaces={{{ns}}}"] if scope == "namespaced" else [])
    release.install(*sets)
    args = release.operator_args()
    assert ("--all-namespaces" in args) == (scope == "all-namespaces"), args
    op = ChartOperator(cluster, OUT / f"{release.name}-operator.log", args, release.token_kubeconfig())
    op.start()
    try:
        cluster.apply(model_deployment("chart-rbac", replicas=2, disruptionBudget={"minAvailable": 1}, namespace=ns))
        dep = wait_until(lambda: cluster.deployment(ns, "chart-rbac"), timeout=CONVERGE_S, what="Deployment chart-rbac")
        assert "modelship" in _managers(dep), _managers(dep)
        wait_until(lambda: cluster.policy.read_namespaced_pod_disruption_budget("chart-rbac", ns),
                   timeout=CONVERGE_S, what="PDB chart-rbac")
        wait_until(lambda: cluster.core.read_namespaced_service("chart-rbac", ns), timeout=CONVERGE_S,
                   what="Service chart-rbac")
        md = wait_until(lambda: _ready_md(cluster, ns, "chart-rbac"), timeout=CONVERGE_S, what="md/chart-rbac Ready")
        assert md["status"]["readyReplicas"] == 2

        # A spec change (new image, PDB dropped) goes through the same identity.
        new_image = "registry.example.com/ml/modelship-server:1.0.1"
        cluster.apply(model_deployment("chart-rbac", image=new_image, replicas=2, namespace=ns))
        wait_until(
            lambda: cluster.deployment(ns, "chart-rbac")["spec"]["template"]["spec"]["containers"][0]["image"]
            == new_image,
            timeout=CONVERGE_S, what="Deployment on the new image",
        )

        def pdb_gone() -> bool:
            try:
                cluster.policy.read_namespaced_pod_disruption_budget("chart-rbac", ns)
            except ApiException as exc:
                return exc.status == 404
            return False

        wait_until(pdb_gone, timeout=CONVERGE_S, what="PDB deleted after disruptionBudget was dropped")
        wait_until(lambda: _ready_md(cluster, ns, "chart-rbac"), timeout=CONVERGE_S, what="Ready on the new image")
        assert op.running(), op.log_tail()
        # This process did the work (its own counter), and none of it hit an API refusal
        # (a 403 would be a "retry" result).
        wait_until(lambda: op.reconciles("ok") > 0, timeout=CONVERGE_S, what="reconciles by this process")
        assert op.reconciles("retry", "error") == 0, op.log_tail()
        assert not _rbac_trouble(op.log()), "the operator hit RBAC limits:\n" + "\n".join(_rbac_trouble(op.log()))
    finally:
        op.stop()


class Partition:
    """A TCP relay in front of the API server that can be cut: the process behind it sees its
    API calls fail (connections reset, new ones refused) while everything else goes on."""

    def __init__(self, upstream: str) -> None:
        url = urllib.parse.urlsplit(upstream)
        self.upstream = (url.hostname or "127.0.0.1", url.port or 443)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = False
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def set_cut(self, cut: bool) -> None:
        self.cut = cut
        if cut:
            with self._lock:
                for conn in self._open:
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                self._open.clear()

    def kubeconfig(self, direct: Path) -> Path:
        config = yaml.safe_load(direct.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        path = direct.with_name(direct.stem + "-partitionable.kubeconfig")
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def close(self) -> None:
        self.set_cut(True)
        self.listener.close()


def _sole_worker(cluster: Cluster, ns: str, replicas: tuple[ChartOperator, ChartOperator], probes: Any) -> Any:
    """Create a probe ModelDeployment; the replica whose own counter moved is the active one."""
    before = {op: op.reconciles() for op in replicas}
    name = f"ha-probe-{next(probes)}"
    cluster.apply(model_deployment(name, namespace=ns))
    wait_until(lambda: cluster.deployment(ns, name), timeout=CONVERGE_S, what=f"Deployment {name}")
    moved = [op for op in replicas if op.reconciles() > before[op]]
    return moved[0] if len(moved) == 1 else None


@pytest.mark.parametrize("scope", ["all-namespaces", "namespaced"])
def test_ha_two_replicas_hand_over_when_the_active_one_is_killed(
    cluster: Cluster, release: Release, ns: str, sole_operator: None, scope: str
) -> None:
    namespaced = scope == "namespaced"
    release.install("crds.enabled=false", "replicas=2", *LEASE_SETS,
                    *([f"watch.namespaces={{{ns}}}"] if namespaced else []))
    args = release.operator_args()
    assert "--leader-elect" in args, args
    kubeconfig = release.token_kubeconfig()
    first = ChartOperator(cluster, OUT / f"{release.name}-a.log", args, kubeconfig)
    second = ChartOperator(cluster, OUT / f"{release.name}-b.log", args, kubeconfig)
    first.start()
    try:
        # Identical flags, like two pods of the Deployment. The first takes the Lease...
        cluster.apply(model_deployment("ha-one", namespace=ns))
        wait_until(lambda: cluster.deployment(ns, "ha-one"), timeout=CONVERGE_S, what="Deployment ha-one")
        # ...the second finds it held, and waits.
        second.start()
        lease = wait_until(lambda: cluster.get_json(f"lease/{release.fullname}", "-n", release.namespace),
                           timeout=CONVERGE_S, what="the leader Lease")
        assert lease["spec"]["leaseDurationSeconds"] == LEASE_S
        probes = iter(range(100))
        active = wait_until(lambda: _sole_worker(cluster, ns, (first, second), probes), timeout=CONVERGE_S,
                            what="exactly one replica doing the work")
        standby = second if active is first else first
        assert standby.running() and active.leading() and not standby.leading()

        # While the standby waits, only the active replica works; kill it like a node loss.
        active.kill()
        killed = time.monotonic()
        idle = standby.reconciles()
        cluster.apply(model_deployment("ha-two", namespace=ns))
        # The standby takes the Lease once the dead leader's renewal is LEASE_S old, then passes
        # every object it knows: its own counter proves it was this process.
        wait_until(lambda: standby.reconciles() > idle, timeout=LEASE_S + RETRY_S + ONE_PASS_S,
                   what="the standby taking over after the leader was killed")
        print(f"\nhand-over after SIGKILL: {time.monotonic() - killed:.1f}s (lease duration {LEASE_S}s)")
        wait_until(lambda: cluster.deployment(ns, "ha-two"), timeout=CONVERGE_S, what="Deployment ha-two")
        wait_until(lambda: _ready_md(cluster, ns, "ha-two"), timeout=CONVERGE_S, what="md/ha-two Ready")
        assert standby.running() and standby.leading(), standby.log_tail()
        assert standby.reconciles("retry", "error") == 0, standby.log_tail()
        assert not _rbac_trouble(standby.log()), "\n".join(_rbac_trouble(standby.log()))
    finally:
        first.stop()
        second.stop()


def test_ha_a_leader_cut_off_from_the_api_server_steps_down(
    cluster: Cluster, release: Release, ns: str, sole_operator: None
) -> None:
    """Not a crash: the leader runs on, but its API calls fail (a network partition). It must
    stop writing before its Lease can pass to the other replica, which then takes over; when
    the partition heals it stays a standby."""
    release.install("crds.enabled=false", "replicas=2", *LEASE_SETS, f"watch.namespaces={{{ns}}}")
    args = release.operator_args()
    direct = release.token_kubeconfig()
    partition = Partition(yaml.safe_load(direct.read_text())["clusters"][0]["cluster"]["server"])
    leader = ChartOperator(cluster, OUT / f"{release.name}-cut.log", args, partition.kubeconfig(direct))
    other = ChartOperator(cluster, OUT / f"{release.name}-other.log", args, direct)
    leader.start()
    try:
        wait_until(leader.leading, timeout=CONVERGE_S, what="the first replica leading")
        other.start()
        cluster.apply(model_deployment("cut-one", namespace=ns))
        wait_until(lambda: _ready_md(cluster, ns, "cut-one"), timeout=CONVERGE_S, what="md/cut-one Ready")
        assert leader.leading() and not other.leading()

        partition.set_cut(True)
        cut = time.monotonic()
        stepped_down = wait_until(lambda: not leader.leading() and time.monotonic(), timeout=RENEW_S + RETRY_S + 10,
                                  what="the cut-off leader stepping down")
        took_over = wait_until(lambda: other.leading() and time.monotonic(), timeout=LEASE_S + RETRY_S + ONE_PASS_S,
                               what="the other replica taking the Lease")
        print(f"\nstepped down {stepped_down - cut:.1f}s after the cut, taken over {took_over - cut:.1f}s after it")
        assert stepped_down < took_over, "two replicas could write at once"
        assert "lost the leader Lease" in leader.log()
        idle = other.reconciles()
        cluster.apply(model_deployment("cut-two", namespace=ns))
        wait_until(lambda: _ready_md(cluster, ns, "cut-two"), timeout=CONVERGE_S, what="md/cut-two Ready")
        assert other.reconciles() > idle

        partition.set_cut(False)  # healed: the old leader sees the Lease held, and waits
        before = leader.reconciles()
        cluster.apply(model_deployment("cut-three", namespace=ns))
        wait_until(lambda: _ready_md(cluster, ns, "cut-three"), timeout=CONVERGE_S, what="md/cut-three Ready")
        assert not leader.leading() and leader.reconciles() == before and other.leading()
        assert leader.running() and other.running()
    finally:
        partition.close()
        leader.stop()
        other.stop()
