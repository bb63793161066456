"""Chaos on the control path (issue 13, item 2): faults during many concurrent rollouts.

``N`` ModelDeployments roll out together in waves; in each wave about half get a new good tag
and half a failing one (KWOK's ``fail.modelship.test/server:*`` images), and one kind of fault
hits the control path while they roll:

- ``operator-kill``: SIGKILL of the operator at ``KILLS`` random moments (it is started again
  at once; one ModelDeployment is deleted and one created while it is down);
- ``apiserver-restart`` / ``etcd-restart``: the process is stopped and started again;
- ``watch-cut``: every connection of the operator to the API server is reset, several times
  (the operator talks to the API server through a relay on loopback, ``Partition``).

A component that exits meanwhile is started again, as systemd or the kubelet would for a real
control plane (``chaos_support.Supervisor``: kube-controller-manager and kube-scheduler exit by
design when the API server is gone long enough to lose their leader Lease); the summary names them.

After each wave, within ``CONVERGE_S`` of the fault's end, every ModelDeployment must converge:
good tags Ready on the new image, failing tags rolled back to the stable one. Then: its history
is exactly the revisions the test made (none duplicated, none lost), one Deployment and one
Service per ModelDeployment, no child whose owner is gone. The convergence time of each fault
kind is printed; ``MODELSHIP_CAMPAIGN=long`` runs more objects and waves and writes them to
``bench/campaigns/chaos.json`` (committed). ``MODELSHIP_CHAOS_SEED`` replays the random moments and tags.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from chaos_support import Component, Supervisor
from e2e_support import (
    CLUSTER_NAME,
    IMAGE_CRASHLOOP,
    IMAGE_IMAGEPULL,
    IMAGE_NEVERREADY,
    ROOT,
    Cluster,
    OperatorProcess,
    Partition,
    condition,
    model_deployment,
    wait_until,
)

LONG = os.environ.get("MODELSHIP_CAMPAIGN") == "long"
#: ``make test`` runs one fixed seed (a landing must not depend on the draw); the long campaign
#: draws a fresh one unless told.
SHORT_SEED = 7
SEED = int(os.environ.get("MODELSHIP_CHAOS_SEED")
           or (random.SystemRandom().randrange(2**32) if LONG else SHORT_SEED))
N = 24 if LONG else 10
#: SIGKILLs of the operator in the operator-kill wave (the issue asks for at least 20).
KILLS = 40 if LONG else 20
FAULTS = ("operator-kill", "apiserver-restart", "etcd-restart", "watch-cut")
ROUNDS = 3 if LONG else 1
#: The bound on convergence after a fault ends (rollbacks need their evidence confirmed first).
CONVERGE_S = 120
#: Failing tags; neverready needs its startup budget to pass (probes.startupTimeoutSeconds), so
#: the short run leaves it out.
FAILING = (IMAGE_IMAGEPULL, IMAGE_CRASHLOOP, *((IMAGE_NEVERREADY,) if LONG else ()))
RESULTS = ROOT / "bench" / "campaigns" / "chaos.json"
OUT = ROOT / "_out" / f"e2e-{CLUSTER_NAME}"


def good_tag(wave: int) -> str:
    return f"registry.example.com/ml/modelship-server:1.{wave}.0"


@dataclass
class Tracked:
    """One ModelDeployment and what the test did to it."""

    name: str
    image: str
    stable: str
    #: (image, outcome) of every revision the test made, in order.
    history: list[tuple[str, str]] = field(default_factory=list)

    @property
    def good(self) -> bool:
        return not self.image.startswith("fail.")

    def manifest(self, ns: str, wave: int) -> dict[str, Any]:
        # A wave marker in env makes every wave a new revision (pod template) for every object,
        # even one that gets the same failing tag twice in a row.
        return model_deployment(self.name, image=self.image, namespace=ns, replicas=1,
                                env=[{"name": "CHAOS_WAVE", "value": str(wave)}],
                                probes={"startupTimeoutSeconds": 5})


def _template_image(dep: dict[str, Any] | None) -> str | None:
    if not dep:
        return None
    return dep["spec"]["template"]["spec"]["containers"][0]["image"]


def _converged(md: dict[str, Any], dep: dict[str, Any] | None, want: Tracked) -> bool:
    status = md.get("status") or {}
    if status.get("observedGeneration") != md["metadata"]["generation"]:
        return False
    phase = (status.get("rollout") or {}).get("phase")
    if want.good:
        ready = (condition(md, "Ready") or {}).get("status") == "True"
        return ready and phase == "Complete" and status.get("image") == want.image == _template_image(dep)
    degraded = condition(md, "Degraded") or {}
    return (degraded.get("reason") == "RolledBack" and phase == "RolledBack"
            and status.get("image") == want.stable == _template_image(dep))


class Fleet:
    """The ModelDeployments of one test and the checks on them."""

    def __init__(self, cluster: Cluster, ns: str, rng: random.Random, supervisor: Supervisor) -> None:
        self.cluster, self.ns, self.rng, self.supervisor = cluster, ns, rng, supervisor
        self.tracked: dict[str, Tracked] = {}
        self.serial = 0

    def add(self, wave: int) -> Tracked:
        self.serial += 1
        t = Tracked(f"c{self.serial}", good_tag(wave), good_tag(wave), [])
        self.tracked[t.name] = t
        self.cluster.apply(t.manifest(self.ns, wave))
        t.history.append((t.image, "Succeeded"))
        return t

    def roll(self, wave: int) -> None:
        """A new revision for every object: about half a good tag, half a failing one."""
        items = []
        for t in self.tracked.values():
            if t.good:
                t.stable = t.image
            if self.rng.random() < 0.5:
                t.image = good_tag(wave)
            else:
                t.image = self.rng.choice(FAILING)
            t.history.append((t.image, "Succeeded" if t.good else "RolledBack"))
            items.append(t.manifest(self.ns, wave))
        self.cluster.apply(items)

    def remove(self, name: str) -> None:
        self.tracked.pop(name)
        self.cluster.kubectl("-n", self.ns, "delete", "md", name, "--wait=false")

    def snapshot(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        mds = self.cluster.custom.list_namespaced_custom_object("modelship.io", "v1alpha1", self.ns,
                                                                "modeldeployments")["items"]
        deps = self.cluster.apps.list_namespaced_deployment(self.ns).items
        by_name = {d.metadata.name: self.cluster.api.sanitize_for_serialization(d) for d in deps}
        return {m["metadata"]["name"]: m for m in mds}, by_name

    def pending(self) -> list[str]:
        self.supervisor.revive()  # as systemd would, while the test waits
        mds, deps = self.snapshot()
        return sorted(n for n, t in self.tracked.items() if n not in mds or not _converged(mds[n], deps.get(n), t))

    def wait_converged(self, since: float, what: str) -> float:
        wait_until(lambda: not self.pending(), timeout=CONVERGE_S, interval=0.5,
                   what=f"every ModelDeployment to converge after {what}")
        return time.monotonic() - since

    def check_books(self) -> list[str]:
        """History exact, one Deployment and Service each, no orphaned children."""
        problems = []
        mds, deps = self.snapshot()
        for name, t in self.tracked.items():
            history = [(e["image"], e["outcome"]) for e in mds[name]["status"].get("history") or []]
            revisions = [e["revision"] for e in mds[name]["status"].get("history") or []]
            if not history or history != t.history[-len(history):] or len(history) < min(len(t.history), 10):
                problems.append(f"{name}: history {history}, expected {t.history}")
            elif revisions != list(range(revisions[0], revisions[0] + len(revisions))):
                problems.append(f"{name}: revisions {revisions} are not consecutive")
        uids = {m["metadata"]["uid"] for m in mds.values()}
        services = self.cluster.core.list_namespaced_service(self.ns).items
        pdbs = self.cluster.policy.list_namespaced_pod_disruption_budget(self.ns).items
        for kind, items in (("Deployment", list(deps.values())),
                            ("Service", [self.cluster.api.sanitize_for_serialization(s) for s in services]),
                            ("PodDisruptionBudget", [self.cluster.api.sanitize_for_serialization(p) for p in pdbs])):
            owners = [next((r["uid"] for r in i["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
                      for i in items]
            orphans = [i["metadata"]["name"] for i, o in zip(items, owners, strict=True) if o not in uids]
            if orphans:
                problems.append(f"{kind} without a live owner: {orphans}")
            if kind != "PodDisruptionBudget" and sorted(i["metadata"]["name"] for i in items) != sorted(mds):
                problems.append(f"{kind}s {sorted(i['metadata']['name'] for i in items)} != ModelDeployments {sorted(mds)}")
        return problems


@pytest.fixture
def chaos_operator(cluster: Cluster, crd: str, operator: OperatorProcess, ns: str) -> Iterator[tuple[OperatorProcess, Partition]]:
    """This test's own operator, scoped to its namespace, behind a relay that can cut its
    connections; the session's operator is stopped meanwhile (two would fight)."""
    operator.stop()
    partition = Partition(json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)
                          ["clusters"][0]["cluster"]["server"])
    own = OperatorProcess(cluster, OUT / "chaos-operator.log", args=("--namespace", ns),
                          kubeconfig=partition.kubeconfig(cluster.kubeconfig))
    own.start()
    try:
        yield own, partition
    finally:
        own.stop()
        partition.close()
        operator.start()


def _api_ready(cluster: Cluster) -> bool:
    return cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode == 0


def _inject(fault: str, cluster: Cluster, fleet: Fleet, op: OperatorProcess, partition: Partition,
            rng: random.Random, wave: int) -> float:
    """Inject ``fault`` while the wave rolls; returns when the fault ended (monotonic)."""
    if fault == "operator-kill":
        for i in range(KILLS):
            time.sleep(rng.uniform(0.2, 2.0))
            op.stop(kill=True)
            if i == KILLS // 2:  # changes while it is down: one object goes, one comes
                fleet.remove(rng.choice(sorted(fleet.tracked)))
                fleet.add(wave)
            op.start()
        return time.monotonic()
    if fault == "watch-cut":
        for _ in range(5):
            time.sleep(rng.uniform(0.5, 3.0))
            partition.set_cut(True)
            time.sleep(rng.uniform(0.0, 1.0))
            partition.set_cut(False)
        return time.monotonic()
    component = {"apiserver-restart": "kube-apiserver", "etcd-restart": "etcd"}[fault]
    time.sleep(rng.uniform(0.5, 3.0))
    Component(component).restart(down_s=rng.uniform(0.0, 2.0))
    wait_until(lambda: fleet.supervisor.revive() or _api_ready(cluster), timeout=120,
               what=f"the API server ready after the {fault}")
    return time.monotonic()


def test_rollouts_converge_through_control_path_faults(cluster: Cluster, ns: str,
                                                       chaos_operator: tuple[OperatorProcess, Partition]) -> None:
    if not cluster.local:
        pytest.fail("restarts the local cluster's processes; unset KUBECONFIG")
    op, partition = chaos_operator
    rng = random.Random(SEED)
    supervisor = Supervisor()
    fleet = Fleet(cluster, ns, rng, supervisor)
    for _ in range(N):
        fleet.add(0)
    fleet.wait_converged(time.monotonic(), "creation")
    timings: dict[str, list[float]] = {f: [] for f in FAULTS}
    wave = 0
    try:
        for _ in range(ROUNDS):
            for fault in FAULTS:
                wave += 1
                fleet.roll(wave)
                ended = _inject(fault, cluster, fleet, op, partition, rng, wave)
                timings[fault].append(round(fleet.wait_converged(ended, fault), 1))
                problems = fleet.check_books()
                assert not problems, f"after {fault} (wave {wave}):\n" + "\n".join(problems)
                assert op.running(), op.log_tail()
    except AssertionError as exc:
        raise AssertionError(f"seed {SEED} (replay: MODELSHIP_CHAOS_SEED={SEED}), {fleet.pending()} pending: "
                             f"{exc}\n{op.log_tail(60)}") from None
    finally:
        supervisor.revive()  # never leave the cluster without a component
    summary = {"seed": SEED, "objects": N, "kills": KILLS * ROUNDS, "waves": wave,
               "convergence_s": timings, "components_revived": supervisor.revived}
    print(f"\nchaos: {json.dumps(summary)}")
    if LONG:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(summary, indent=2) + "\n")

