"""`hack/cluster.sh node-down` leaves nothing of the node behind (processes, mounts, network
namespaces, bridge, iptables rules, cgroups), `node-up` brings it back Ready, idempotently,
and the imported images survive (no second import of the same image IDs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from e2e_support import Cluster, cluster_out, cluster_sh, wait_until
from node_support import NODE_CLUSTER, NodeImages, image, real_nodes


def _slot() -> int:
    return int((cluster_out(NODE_CLUSTER) / "node" / "slot").read_text())


def _leftovers(slot: int) -> dict[str, list[str]]:
    run, tag, bridge = f"/run/modelship/node-{slot}/", f"modelship-node-{slot}", f"msbr{slot}"
    sh = lambda cmd: subprocess.run(["bash", "-c", cmd], capture_output=True, text=True).stdout.split("\n")  # noqa: E731
    found = {
        "processes": sh(f"pgrep -af -- '{run}' | grep -v pgrep"),
        "mounts": sh(f"findmnt -rn -o TARGET | grep -F -- '{run}'"),
        "network namespaces": sh(f"ls {run}state/netns 2>/dev/null"),
        "bridge": sh(f"ip -br link show {bridge} 2>/dev/null"),
        "iptables rules": sh(f"(iptables -S; iptables -t nat -S) | grep -F -- '{tag}'"),
        "cgroups": sh(f"ls -d /sys/fs/cgroup/*/{tag} 2>/dev/null"),
    }
    return {k: [line for line in v if line.strip()] for k, v in found.items() if any(x.strip() for x in v)}


def test_node_down_leaves_nothing_and_up_brings_it_back(node_cluster: Cluster, test_images: NodeImages) -> None:
    if not node_cluster.local:
        pytest.skip("the lifecycle of hack/cluster.sh's local real node; $KUBECONFIG names another cluster")
    slot = _slot()
    assert _leftovers(slot)["processes"], "the node is not running before the test"
    down = cluster_sh(NODE_CLUSTER, "node-down", timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _leftovers(slot) == {}
    assert not Path(f"/run/modelship/node-{slot}").exists()
    assert cluster_sh(NODE_CLUSTER, "node-down", timeout=60).returncode == 0  # idempotent

    up = cluster_sh(NODE_CLUSTER, "node-up", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    again = cluster_sh(NODE_CLUSTER, "node-up", timeout=60)
    assert again.returncode == 0 and "already running" in again.stderr, again.stderr
    wait_until(lambda: real_nodes(node_cluster), timeout=60, what="the real node Ready again")
    load = cluster_sh(NODE_CLUSTER, "load", image("v1"), timeout=120)
    assert load.returncode == 0 and "already on the node" in load.stderr, load.stderr
