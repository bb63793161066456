"""Rollouts and rollbacks by image tag, against the real control plane with KWOK failure images.

Each test starts from a stable revision, changes ``spec.image`` like a user or a GitOps tool
would (server-side apply by a non-operator field manager) and watches what the operator does to
the Deployment and the status. Time-to-rollback is measured from the first moment the test sees
failure evidence on a pod of the new revision to the first moment the Deployment's pod template
is back on the stable image, and printed (run with ``-s`` to see it). It is not asserted: timing
targets are the benchmarks' business (``bench/node.py`` measures time to rollback on a real node),
and a shared CI machine is no place to judge them.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from e2e_support import (
    GPU_NODES,
    GPU_PRODUCT,
    IMAGE_CRASHLOOP,
    IMAGE_IMAGEPULL,
    ROOT,
    Cluster,
    OperatorProcess,
    condition,
    model_deployment,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("operator")

GOOD = [f"registry.example.com/ml/modelship-server:{v}" for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0")]
#: Seconds for the operator + controllers + KWOK to roll a good image out.
CONVERGE_S = 90
REVISION_LABEL = "modelship.io/revision"
PLUGIN = ROOT / ".venv" / "bin" / "kubectl-modelship"


# ---------------------------------------------------------------- helpers


def _rollout(md: dict[str, Any]) -> dict[str, Any]:
    return (md.get("status") or {}).get("rollout") or {}


def _history(md: dict[str, Any]) -> list[tuple[int, str, str]]:
    return [(e["revision"], e["image"], e["outcome"]) for e in (md.get("status") or {}).get("history") or []]


def _template_image(cluster: Cluster, ns: str, name: str) -> str | None:
    dep = cluster.deployment(ns, name)
    return dep["spec"]["template"]["spec"]["containers"][0]["image"]


def _settled_on(cluster: Cluster, ns: str, name: str, image: str) -> dict[str, Any] | None:
    md = cluster.md(ns, name)
    ready = condition(md, "Ready") or {}
    ok = (
        _rollout(md).get("phase") == "Complete"
        and (md.get("status") or {}).get("image") == image
        and ready.get("status") == "True"
    )
    return md if ok else None


def deploy_stable(cluster: Cluster, ns: str, name: str, image: str = GOOD[0], **spec: Any) -> dict[str, Any]:
    cluster.apply(model_deployment(name, image=image, namespace=ns, **spec))
    return wait_until(lambda: _settled_on(cluster, ns, name, image), timeout=CONVERGE_S,
                      what=f"md/{name} Ready on {image}")


def change_image(cluster: Cluster, ns: str, name: str, image: str, **spec: Any) -> None:
    cluster.apply(model_deployment(name, image=image, namespace=ns, **spec))


def plugin(cluster: Cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is missing: run `make venv` (pip extra kubectl installs kubectl-modelship)")
    return subprocess.run([str(PLUGIN), *args], env=cluster.env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _evidence_pod(cluster: Cluster, ns: str, bad_image: str, reasons: set[str]) -> str | None:
    for pod in cluster.pods(ns):
        if pod["spec"]["containers"][0]["image"] != bad_image or pod["metadata"].get("deletionTimestamp"):
            continue
        for cs in pod["status"].get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in reasons:
                return f"{pod['metadata']['name']}: {waiting['reason']} (restarts {cs.get('restartCount', 0)})"
    return None


def measure_rollback(cluster: Cluster, ns: str, name: str, bad: str, stable: str, reasons: set[str],
                     timeout: float = 120, start: Callable[[], Any] | None = None) -> float:
    """Seconds from the first evidence the test sees to the Deployment template back on ``stable``.

    ``start`` (the spec change) runs after one warm-up poll, so a slow first API call (client
    models load lazily) cannot hide the whole bad phase from the measurement.
    """
    _template_image(cluster, ns, name)
    _evidence_pod(cluster, ns, bad, reasons)
    if start is not None:
        start()
    deadline = time.monotonic() + timeout
    first_evidence: float | None = None
    seen_bad_template = False
    while time.monotonic() < deadline:
        now = time.monotonic()
        image = _template_image(cluster, ns, name)
        seen_bad_template = seen_bad_template or image == bad
        if first_evidence is None and _evidence_pod(cluster, ns, bad, reasons):
            first_evidence = now
        if seen_bad_template and image == stable:
            # The operator waits for evidence to persist (seconds) before it rolls back, so a
            # test polling every 0.2 s always sees it first; a rollback it did not see evidence
            # for is a rollback without evidence.
            assert first_evidence is not None, (
                f"md/{name} rolled back from {bad} but the test never saw {sorted(reasons)} on a pod of it")
            return now - first_evidence
        time.sleep(0.2)
    raise AssertionError(f"no rollback of md/{name} from {bad} to {stable} within {timeout}s "
                         f"(template saw bad image: {seen_bad_template}, evidence at: {first_evidence})")


def _events(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("-n", ns, "get", "events", "-o", "json",
                          "--field-selector", f"involvedObject.name={name},involvedObject.kind=ModelDeployment")
    return json.loads(out.stdout)["items"]


def assert_rolled_back(cluster: Cluster, ns: str, name: str, bad: str, stable: str, evidence: str) -> dict[str, Any]:
    def reported() -> dict[str, Any] | None:
        md = cluster.md(ns, name)
        degraded = condition(md, "Degraded") or {}
        return md if degraded.get("reason") == "RolledBack" and (md["status"].get("image") == stable) else None

    md = wait_until(reported, timeout=CONVERGE_S, what=f"md/{name} Degraded=RolledBack serving {stable}")
    assert md["spec"]["image"] == bad, "the operator must never write spec"
    degraded = condition(md, "Degraded")
    assert degraded["status"] == "True" and bad in degraded["message"] and evidence in degraded["message"], degraded
    assert condition(md, "Ready")["status"] == "False"
    assert md["status"]["stableImage"] == stable
    assert _history(md)[-1][1:] == (bad, "RolledBack")
    reasons = [(e["type"], e["reason"]) for e in _events(cluster, ns, name)]
    assert ("Warning", "RolledBack") in reasons, reasons
    return md


# ---------------------------------------------------------------- tests


def test_good_tag_rolls_out_and_watch_exits_zero(cluster: Cluster, ns: str) -> None:
    deploy_stable(cluster, ns, "good", replicas=2)
    change_image(cluster, ns, "good", GOOD[1], replicas=2)
    watch = plugin(cluster, "watch", "md/good", "-n", ns, "--timeout", "90s")
    assert watch.returncode == 0, watch.stdout + watch.stderr
    assert "rollout complete" in watch.stdout and "updated 2/2 ready 2/2" in watch.stdout
    md = wait_until(lambda: _settled_on(cluster, ns, "good", GOOD[1]), timeout=CONVERGE_S, what="1.1.0 serving")
    assert _history(md) == [(1, GOOD[0], "Succeeded"), (2, GOOD[1], "Succeeded")]
    assert md["status"]["stableImage"] == GOOD[1]
    hist = plugin(cluster, "history", "md/good", "-n", ns)
    assert hist.returncode == 0 and "serving,stable" in hist.stdout, hist.stdout + hist.stderr


@pytest.mark.parametrize(("bad", "reasons", "evidence"), [
    (IMAGE_IMAGEPULL, {"ImagePullBackOff", "ErrImagePull"}, "ImagePullBackOff"),
    (IMAGE_CRASHLOOP, {"CrashLoopBackOff"}, "crash-loops"),
], ids=["imagepull", "crashloop"])
def test_bad_image_rolls_back(cluster: Cluster, ns: str, bad: str, reasons: set[str],
                                            evidence: str) -> None:
    deploy_stable(cluster, ns, "bad", replicas=2)
    watches: list[subprocess.Popen[str]] = []

    def apply_then_watch() -> None:  # what a CI pipeline does
        change_image(cluster, ns, "bad", bad, replicas=2)
        watches.append(subprocess.Popen([str(PLUGIN), "watch", "md/bad", "-n", ns, "--timeout", "120s"],
                                        env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))

    took = measure_rollback(cluster, ns, "bad", bad, GOOD[0], reasons, start=apply_then_watch)
    (watch,) = watches
    print(f"\ntime-to-rollback ({bad}): {took:.1f}s from first evidence to the Deployment back on {GOOD[0]}")
    assert_rolled_back(cluster, ns, "bad", bad, GOOD[0], evidence)
    out, _ = watch.communicate(timeout=60)
    assert watch.returncode == 1, f"watch must fail a rolled-back rollout; exit {watch.returncode}:\n{out}"
    assert "rolled back" in out


def test_auto_rollback_off_halts_and_says_why(cluster: Cluster, ns: str) -> None:
    off = {"replicas": 2, "rollout": {"autoRollback": False}}
    deploy_stable(cluster, ns, "halt", **off)
    change_image(cluster, ns, "halt", IMAGE_CRASHLOOP, **off)

    def halted() -> dict[str, Any] | None:
        md = cluster.md(ns, "halt")
        degraded = condition(md, "Degraded") or {}
        return md if degraded.get("reason") == "RolloutHalted" else None

    md = wait_until(halted, timeout=CONVERGE_S, what="Degraded=RolloutHalted")
    message = condition(md, "Degraded")["message"]
    assert "autoRollback is off" in message and IMAGE_CRASHLOOP in message, message
    assert _history(md)[-1] == (2, IMAGE_CRASHLOOP, "Halted")
    assert _template_image(cluster, ns, "halt") == IMAGE_CRASHLOOP, "a halted rollout is left as it is"
    assert md["status"]["image"] == GOOD[0] and condition(md, "Ready")["status"] == "False"
    watch = plugin(cluster, "watch", "md/halt", "-n", ns, "--timeout", "30s")
    assert watch.returncode == 1 and "halted" in watch.stdout, watch.stdout


def test_gitops_replay_does_not_flap_and_fix_forward_works(cluster: Cluster, ns: str) -> None:
    deploy_stable(cluster, ns, "replay", replicas=2)
    measure_rollback(cluster, ns, "replay", IMAGE_IMAGEPULL, GOOD[0], {"ImagePullBackOff", "ErrImagePull"},
                     start=lambda: change_image(cluster, ns, "replay", IMAGE_IMAGEPULL, replicas=2))
    md = assert_rolled_back(cluster, ns, "replay", IMAGE_IMAGEPULL, GOOD[0], "ImagePullBackOff")
    history = _history(md)
    # What Argo CD / Flux do on every sync: apply the same spec again (plus their own metadata).
    for sync in range(3):
        manifest = model_deployment("replay", image=IMAGE_IMAGEPULL, replicas=2, namespace=ns)
        manifest["metadata"]["labels"] = {"argocd.argoproj.io/instance": f"sync-{sync}"}
        cluster.apply(manifest)
        time.sleep(0.1)  # let the watch deliver it; the real check is the polling below
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert _template_image(cluster, ns, "replay") == GOOD[0], "the bad rollout restarted (flapping)"
        assert _history(cluster.md(ns, "replay")) == history
        time.sleep(0.5)
    started = [e for e in _events(cluster, ns, "replay") if e["reason"] == "RolloutStarted"]
    assert len(started) == 2, [e["message"] for e in started]
    # A changed spec is a new attempt: fix forward.
    change_image(cluster, ns, "replay", GOOD[1], replicas=2)
    md = wait_until(lambda: _settled_on(cluster, ns, "replay", GOOD[1]), timeout=CONVERGE_S, what="fix-forward")
    assert _history(md) == [(1, GOOD[0], "Succeeded"), (2, IMAGE_IMAGEPULL, "RolledBack"), (3, GOOD[1], "Succeeded")]
    assert condition(md, "Degraded")["status"] == "False"


def test_manual_rollback_by_annotation_and_plugin(cluster: Cluster, ns: str) -> None:
    deploy_stable(cluster, ns, "manual", replicas=2)
    for image in GOOD[1:3]:
        change_image(cluster, ns, "manual", image, replicas=2)
        wait_until(lambda image=image: _settled_on(cluster, ns, "manual", image), timeout=CONVERGE_S,
                   what=f"{image} serving")
    # Plain kubectl: the annotation contract.
    cluster.kubectl("-n", ns, "annotate", "md/manual", "modelship.io/rollback-to=1", "--overwrite")

    def serving(revision: int, image: str) -> dict[str, Any] | None:
        md = cluster.md(ns, "manual")
        ok = _rollout(md).get("servingRevision") == revision and md["status"].get("image") == image
        return md if ok and _template_image(cluster, ns, "manual") == image else None

    md = wait_until(lambda: serving(1, GOOD[0]), timeout=CONVERGE_S, what="manual rollback to revision 1")
    assert md["spec"]["image"] == GOOD[2]
    ready = condition(md, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ManualRollback", ready
    # The plugin: to revision 2, then errors a user can act on.
    result = plugin(cluster, "rollback", "md/manual", "-n", ns, "--to-revision", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rolled back to revision 2" in result.stdout
    wait_until(lambda: serving(2, GOOD[1]), timeout=CONVERGE_S, what="plugin rollback to revision 2")
    bad = plugin(cluster, "rollback", "md/manual", "-n", ns, "--to-revision", "9")
    assert bad.returncode == 2 and "has no revision 9 (known: 1, 2, 3)" in bad.stderr, bad.stderr
    missing = plugin(cluster, "get", "md/nope", "-n", ns)
    assert missing.returncode == 2 and f'modeldeployment "nope" not found in namespace "{ns}"' in missing.stderr
    nowhere = plugin(cluster, "history", "md/manual", "-n", f"{ns}-nowhere")
    assert nowhere.returncode == 2 and "not found" in nowhere.stderr, nowhere.stderr
    shown = plugin(cluster, "get", "md/manual", "-n", ns)
    assert shown.returncode == 0 and "ManualRollback" in shown.stdout, shown.stdout
    # A later spec change takes precedence.
    change_image(cluster, ns, "manual", GOOD[3], replicas=2)
    md = wait_until(lambda: _settled_on(cluster, ns, "manual", GOOD[3]), timeout=CONVERGE_S, what="spec wins")
    assert _rollout(md)["servingRevision"] == 4


def test_retry_after_rollback_starts_a_fresh_attempt(cluster: Cluster, ns: str) -> None:
    deploy_stable(cluster, ns, "retry", replicas=1)
    measure_rollback(cluster, ns, "retry", IMAGE_IMAGEPULL, GOOD[0], {"ImagePullBackOff", "ErrImagePull"},
                     start=lambda: change_image(cluster, ns, "retry", IMAGE_IMAGEPULL, replicas=1))

    def retry() -> None:
        result = plugin(cluster, "retry", "md/retry", "-n", ns)
        assert result.returncode == 0, result.stdout + result.stderr

    measure_rollback(cluster, ns, "retry", IMAGE_IMAGEPULL, GOOD[0], {"ImagePullBackOff", "ErrImagePull"},
                     start=retry)
    md = wait_until(lambda: (m := cluster.md(ns, "retry")) and len(_history(m)) == 3 and
                    _history(m)[-1][2] == "RolledBack" and m, timeout=CONVERGE_S, what="second attempt rolled back")
    assert [h[0] for h in _history(md)] == [1, 2, 3]


def _free_gpus(cluster: Cluster) -> dict[str, int]:
    free = {n: 2 for n in GPU_NODES}
    for pod in cluster.core.list_pod_for_all_namespaces(
            field_selector="status.phase!=Succeeded,status.phase!=Failed").items:
        if pod.spec.node_name in free:
            for c in pod.spec.containers:
                limits = (c.resources and c.resources.limits) or {}
                free[pod.spec.node_name] -= int(limits.get("nvidia.com/gpu", 0))
    return free


def test_gpu_scarcity_switches_to_no_surge_instead_of_deadlocking(cluster: Cluster, ns: str) -> None:
    if not cluster.local:
        pytest.fail("needs the local cluster's fake GPU nodes; unset KUBECONFIG")
    wait_until(lambda: all(v == 2 for v in _free_gpus(cluster).values()), timeout=60,
               what=f"both GPU nodes free (now: {_free_gpus(cluster)})")
    spec = {"replicas": 2, "gpu": 2, "product": GPU_PRODUCT, "disruptionBudget": {"minAvailable": 1}}
    # Two pods of two GPUs each: both GPU nodes are full, a surge pod can never fit.
    deploy_stable(cluster, ns, "gpu", **spec)
    assert _free_gpus(cluster) == {n: 0 for n in GPU_NODES}
    change_image(cluster, ns, "gpu", GOOD[1], **spec)
    md = wait_until(lambda: _settled_on(cluster, ns, "gpu", GOOD[1]), timeout=CONVERGE_S,
                    what="GPU rollout completing without surge")
    assert _rollout(md)["noSurge"] is True
    assert _history(md) == [(1, GOOD[0], "Succeeded"), (2, GOOD[1], "Succeeded")]
    surge = [e for e in _events(cluster, ns, "gpu") if e["reason"] == "SurgeDisabled"]
    assert surge and "nvidia.com/gpu" in surge[0]["message"], surge
    strategy = cluster.deployment(ns, "gpu")["spec"]["strategy"]["rollingUpdate"]
    assert (strategy["maxSurge"], strategy["maxUnavailable"]) == (0, 1)


def test_operator_killed_mid_rollout_converges(cluster: Cluster, ns: str, operator: OperatorProcess) -> None:
    deploy_stable(cluster, ns, "crash", replicas=2)
    change_image(cluster, ns, "crash", IMAGE_IMAGEPULL, replicas=2)
    wait_until(lambda: _rollout(cluster.md(ns, "crash")).get("servingRevision") == 2, timeout=CONVERGE_S,
               what="the bad rollout started")
    operator.stop(kill=True)
    try:
        wait_until(lambda: _evidence_pod(cluster, ns, IMAGE_IMAGEPULL, {"ImagePullBackOff"}), timeout=CONVERGE_S,
                   what="evidence while the operator is down")
        time.sleep(1)  # evidence piles up while nobody is watching
        assert _template_image(cluster, ns, "crash") == IMAGE_IMAGEPULL
    finally:
        operator.start()
    md = assert_rolled_back(cluster, ns, "crash", IMAGE_IMAGEPULL, GOOD[0], "ImagePullBackOff")
    assert _history(md) == [(1, GOOD[0], "Succeeded"), (2, IMAGE_IMAGEPULL, "RolledBack")]
    # A second restart at rest changes nothing: same history, same serving revision, once the
    # new process has passed every ModelDeployment it found (its own counter says so).
    operator.stop(kill=True)
    operator.start()
    operator.wait_resumed(cluster)
    md = cluster.md(ns, "crash")
    assert _history(md) == [(1, GOOD[0], "Succeeded"), (2, IMAGE_IMAGEPULL, "RolledBack")]
    assert _template_image(cluster, ns, "crash") == GOOD[0]
    assert condition(md, "Degraded")["reason"] == "RolledBack"


def test_operator_metrics_count_rollouts(cluster: Cluster, ns: str, operator: OperatorProcess) -> None:
    """The counters move by what this test did (they exist at zero from start-up, so their
    names alone prove nothing)."""
    deploy_stable(cluster, ns, "metered", replicas=1)
    operator.wait_serving()  # restarted by an earlier test, it may still be importing
    before = _rollout_counts(operator)
    measure_rollback(cluster, ns, "metered", IMAGE_IMAGEPULL, GOOD[0], {"ImagePullBackOff", "ErrImagePull"},
                     start=lambda: change_image(cluster, ns, "metered", IMAGE_IMAGEPULL, replicas=1))
    # The pass applies the rolled-back Deployment before it counts the rollback (status and
    # events come in between), so the test can see the Deployment first: wait for the count.
    after = wait_until(lambda: (c := _rollout_counts(operator))["rolled_back_auto"] > before["rolled_back_auto"] and c,
                       timeout=30, what="the auto rollback counted in /metrics")
    moved = {k: after[k] - before[k] for k in after}
    assert moved["rolled_back_auto"] == 1 and moved["time_to_rollback"] == 1, moved
    assert moved["started"] >= 1 and moved["reconciles_ok"] >= 2 and moved["reconcile_seconds"] >= 2, moved
    assert moved["rolled_back_manual"] == 0 and moved["halted"] == 0, moved


def _rollout_counts(operator: OperatorProcess) -> dict[str, float]:
    return {
        "started": operator.metric("modelship_rollouts_started_total"),
        "rolled_back_auto": operator.metric("modelship_rollouts_rolled_back_total", trigger="auto"),
        "rolled_back_manual": operator.metric("modelship_rollouts_rolled_back_total", trigger="manual"),
        "halted": operator.metric("modelship_rollouts_halted_total"),
        "time_to_rollback": operator.metric("modelship_time_to_rollback_seconds_count"),
        "reconciles_ok": operator.reconciles("ok"),
        "reconcile_seconds": operator.metric("modelship_reconcile_duration_seconds_count"),
    }
