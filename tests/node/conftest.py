"""Node tier: the real server image as real pods under a real kubelet.

The cluster is a second local one, "<tests' cluster>-node" (hack/cluster.sh up --real-node:
the control plane, fake GPU nodes and one real node: kubelet + containerd on this host), or
the user's own cluster when $KUBECONFIG points at one (kind: load the test images first,
see docs). The test images are the server image built from Dockerfile.server plus one baked
model per tag (node_models.py), imported into the node's containerd once per image ID.

A missing precondition FAILS the tier with what to do; nothing here skips.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import (
    CLUSTER_NAME,
    Cluster,
    OperatorProcess,
    cluster_out,
    install_crd,
    local_cluster,
)
from node_models import TAGS
from node_support import (
    NODE_CLUSTER,
    OUT,
    NodeImages,
    build_test_images,
    image,
    load_images,
    namespace_report,
    real_nodes,
)

NS_LABEL = "modelship.io/node-test"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/node/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.node)


def _user_kubeconfig() -> Path | None:
    value = os.environ.get("KUBECONFIG", "")
    if not value:
        return None
    path = Path(value.split(os.pathsep)[0]).expanduser()
    if not path.exists():
        pytest.fail(f"KUBECONFIG={value} does not exist; unset it to use the local real node", pytrace=False)
    local = {cluster_out(n).resolve() / "kubeconfig" for n in (CLUSTER_NAME, NODE_CLUSTER)}
    return None if path.resolve() in local else path


@pytest.fixture(scope="session")
def node_cluster() -> Iterator[Cluster]:
    user = _user_kubeconfig()
    if user is not None:
        yield Cluster(kubeconfig=user, local=False)
        return
    with local_cluster(NODE_CLUSTER, OUT / "cluster-up.log", real_node=True) as started:
        yield started


@pytest.fixture(scope="session")
def test_images(node_cluster: Cluster, docker, server_image: str, operator_image: str,
                tmp_path_factory: pytest.TempPathFactory) -> NodeImages:
    """The test images built here, and on the cluster's nodes (imported into the local real
    node; on a user's cluster they must be there already)."""
    OUT.mkdir(parents=True, exist_ok=True)
    images = build_test_images(docker, server_image, tmp_path_factory.mktemp("node-models"), OUT / "images.log")
    wanted = [image(tag) for tag in TAGS] + [operator_image]
    if node_cluster.local:
        seconds = load_images(NODE_CLUSTER, wanted, OUT / "images.log")
        (OUT / "import.seconds").write_text(f"{seconds:.1f}\n")
        return images
    nodes = real_nodes(node_cluster)
    present = {name.split("/")[-1] for n in nodes for i in n["status"].get("images") or [] for name in i["names"]}
    missing = [w for w in wanted if w not in present]
    if not nodes or missing:
        pytest.fail(
            f"the cluster in $KUBECONFIG needs a Ready node that runs real pods, with the node tier's images "
            f"loaded (missing: {missing or 'a real node'}). On kind: "
            f"`kind load docker-image {' '.join(wanted)}` (build them with `make model-images`).",
            pytrace=False,
        )
    return images


@pytest.fixture(scope="session")
def crd(node_cluster: Cluster) -> str:
    return install_crd(node_cluster)


@pytest.fixture(scope="session")
def operator(node_cluster: Cluster, crd: str) -> Iterator[OperatorProcess]:
    """The operator as a process on this host (the chart test runs it as a pod instead)."""
    op = OperatorProcess(node_cluster, OUT / "operator.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture
def ns(request: pytest.FixtureRequest, node_cluster: Cluster) -> Iterator[str]:
    """A namespace enforcing Pod Security "restricted", deleted afterwards (without waiting)."""
    short = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"node-{short}-{uuid.uuid4().hex[:5]}"
    node_cluster.kubectl("create", "namespace", name)
    node_cluster.kubectl("label", "namespace", name, f"{NS_LABEL}=true",
                         "pod-security.kubernetes.io/enforce=restricted")
    request.node.stash[_NS_KEY] = (node_cluster, name)
    yield name
    node_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


_NS_KEY = pytest.StashKey[tuple[Cluster, str]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On failure: the namespace's objects, its ModelDeployments and the operator's log tail."""
    report = yield
    if report.failed and call.when in ("call", "setup") and _NS_KEY in item.stash:
        cluster, ns = item.stash[_NS_KEY]
        report.sections.extend(namespace_report(cluster, ns))
        op = item.funcargs.get("operator") if hasattr(item, "funcargs") else None
        if isinstance(op, OperatorProcess):
            report.sections.append(("operator log (tail)", op.log_tail()))
    return report


