"""e2e tier: the operator as a real process against a real control plane.

The cluster is the tests' own local one from hack/cluster.sh (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler built from Go modules; KWOK fake nodes; named
"modelship-test", never the demo's "modelship"), started here when it is not running,
or the user's own cluster when $KUBECONFIG points at one (kind, a real cluster). A cluster that cannot start FAILS the
tests (never skips them): the error says which command to run and where its
logs are.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import (
    CLUSTER_NAME,
    LOCAL_KUBECONFIG,
    ROOT,
    Cluster,
    OperatorProcess,
    install_crd,
    local_cluster,
    wait_until,
)
from kubernetes.client.exceptions import ApiException

OUT = ROOT / "_out" / f"e2e-{CLUSTER_NAME}"
NS_LABEL = "modelship.io/e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


def _user_kubeconfig() -> Path | None:
    """$KUBECONFIG when it names a cluster other than the local one."""
    value = os.environ.get("KUBECONFIG", "")
    if not value:
        return None
    path = Path(value.split(os.pathsep)[0]).expanduser()
    if path.resolve() == LOCAL_KUBECONFIG.resolve():
        return None
    if not path.exists():
        pytest.fail(f"KUBECONFIG={value} does not exist; unset it to use the local cluster (make cluster-up)")
    return path


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    user = _user_kubeconfig()
    if user is not None:
        yield Cluster(kubeconfig=user, local=False)
        return
    with local_cluster(CLUSTER_NAME, OUT / "cluster-up.log") as started:
        yield started


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> str:
    """The committed CRD, installed (server-side, so re-runs update it) and Established."""
    return install_crd(cluster)


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crd: str) -> Iterator[OperatorProcess]:
    """One operator process for the session, watching all namespaces.

    Tests that stop or kill it (restart tests) must leave it running; the
    `_operator_alive` check below restarts it if one did not, and fails the test
    whose run the operator died in.
    """
    op = OperatorProcess(cluster, OUT / "operator.log")
    op.start()
    yield op
    # The namespaces this session deleted must be gone before the next session reuses the
    # cluster. (The operator puts no finalizer on ModelDeployments; waiting here while it still
    # runs also covers an operator that would, as 0.1.0 with kopf timers did.)
    if not op.running():
        op.start()
    try:
        wait_until(
            lambda: not any(cluster.kubectl("get", "namespace", n, check=False).returncode == 0 for n in _CREATED),
            timeout=90, what=f"test namespaces to terminate: {sorted(_CREATED)}", interval=1,
        )
    finally:
        op.stop()


#: Namespaces created by this session (the operator fixture waits for their deletion).
_CREATED: set[str] = set()


@pytest.fixture
def ns(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    short = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"e2e-{short}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    _CREATED.add(name)
    cluster.kubectl("label", "namespace", name, f"{NS_LABEL}=true")
    request.node.stash[_NS_KEY] = name
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(autouse=True)
def _operator_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test using the operator: it must still be running (else fail, restart)."""
    if "operator" not in request.fixturenames:
        yield
        return
    op: OperatorProcess = request.getfixturevalue("operator")
    request.node.stash[_OP_KEY] = op
    if not op.running():
        op.start()
    yield
    if not op.running():
        code = op.proc.returncode if op.proc else None
        op.start()
        pytest.fail(f"the operator exited (code {code}) during this test:\n{op.log_tail()}", pytrace=False)


_NS_KEY = pytest.StashKey[str]()
_OP_KEY = pytest.StashKey[OperatorProcess]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """On failure, attach the operator's log tail and the test namespace's objects."""
    report = yield
    if report.failed and call.when in ("call", "setup"):
        op = item.stash.get(_OP_KEY, None)
        if op is not None:
            report.sections.append(("operator log (tail)", op.log_tail()))
        ns = item.stash.get(_NS_KEY, None)
        cluster = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
        if ns and isinstance(cluster, Cluster):
            try:
                objs = cluster.kubectl(
                    "-n", ns, "get", "deploy,rs,pods,svc,pdb,events", "-o", "wide", check=False, timeout=20
                )
                report.sections.append((f"objects in {ns}", objs.stdout + objs.stderr))
                if "crd" in item.fixturenames:
                    mds = cluster.kubectl("-n", ns, "get", "md", "-o", "yaml", check=False, timeout=20)
                    report.sections.append((f"ModelDeployments in {ns}", mds.stdout[-8000:]))
            except (subprocess.SubprocessError, ApiException) as exc:
                report.sections.append(("objects", f"could not list: {exc}"))
    return report
