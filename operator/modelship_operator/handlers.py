"""kopf handlers: the thin shell. Each one finds the ModelDeployment concerned and runs one
reconcile pass (``reconcile.Reconciler``); none holds state or talks to the API itself.

Triggers:
- the ModelDeployment is created, changed or found at startup (create/update/resume);
- one of its children (Deployment, Service, PDB) changes or is deleted: drift is undone and
  status follows the Deployment within a second;
- one of its pods changes (crash loop, image pull failure, readiness): status only;
- a periodic resync, the safety net for a missed watch event.

Errors: an invalid spec is reported in status + an Event and ends as ``kopf.PermanentError``
(retrying cannot help; the next spec change is a new attempt). API trouble becomes
``kopf.TemporaryError`` with a delay. kopf catches everything else per handler, so one bad
object never stops the operator from serving the others.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf

from modelship_operator import api, builders, evidence, kube, metrics, rollout
from modelship_operator.reconcile import Reconciler
from modelship_operator.settings import Settings

logger = logging.getLogger(__name__)

MODEL_DEPLOYMENTS = (api.API_VERSION, api.PLURAL)
CHILDREN = (("apps/v1", "deployments"), ("v1", "services"), ("policy/v1", "poddisruptionbudgets"))
PODS = ("v1", "pods")
MANAGED = {"app.kubernetes.io/managed-by": builders.MANAGER}


def run_pass(
    reconciler: Reconciler, settings: Settings, namespace: str, name: str, *, trigger: str, apply: bool = True,
    permanent: bool = False,
) -> None:  # fmt: skip
    """One reconcile pass with the error policy and metrics shared by every trigger."""
    started = time.monotonic()
    result = "error"
    try:
        outcome = reconciler.reconcile(namespace, name, apply=apply)
        result = "problem" if outcome.problem else "skipped" if outcome.skipped else "ok"
        if outcome.problem and permanent:
            raise kopf.PermanentError(outcome.problem)
    except kube.Retryable as error:
        result = "retry"
        raise kopf.TemporaryError(str(error), delay=settings.retry_delay_seconds) from error
    finally:
        metrics.RECONCILES.labels(trigger=trigger, result=result).inc()
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)


def rollout_evidence_pending(body: kopf.Body, **_: Any) -> bool:
    """kopf filter: the rollout waits for time to pass on some evidence (a failed pull to be
    confirmed, a grace or startup budget to end, a GPU wait before the surge switch).

    Everything else in a rollout arrives as a watch event (pods, the Deployment), so only these
    objects are polled: a thousand ModelDeployments rolling out normally cost no timer passes.
    """
    return bool((((body.get("status") or {}).get("rollout") or {}).get("evidence") or {}).get("key"))


def rollout_request_pending(body: kopf.Body, **_: Any) -> bool:
    """kopf filter: a rollback/retry annotation carries a value the operator has not acted on.

    Needed because kopf leaves every ``modelship.io/*`` annotation out of its change detection
    (that prefix holds its own bookkeeping), so on.update never sees these requests.
    """
    annotations = body.get("metadata", {}).get("annotations") or {}
    state = (body.get("status") or {}).get("rollout") or {}
    pending = (
        (rollout.RETRY_ANNOTATION, "handledRetry"),
        (rollout.ROLLBACK_TO_ANNOTATION, "handledRollbackTo"),
    )
    return any(annotations.get(key) not in (None, state.get(handled)) for key, handled in pending)


def build_registry(reconciler: Reconciler, settings: Settings) -> kopf.OperatorRegistry:
    """All handlers, registered on a fresh registry (nothing happens at import time)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kube.connection_info(settings.kubeconfig)

    # Explicit ids: kopf keeps handler progress in annotations named after them.
    @kopf.on.create(*MODEL_DEPLOYMENTS, registry=registry, id="reconcile")
    @kopf.on.update(*MODEL_DEPLOYMENTS, registry=registry, id="reconcile")
    @kopf.on.resume(*MODEL_DEPLOYMENTS, registry=registry, id="reconcile")
    def model_deployment_changed(namespace: str, name: str, reason: str, **_: Any) -> None:
        run_pass(reconciler, settings, namespace, name, trigger=str(reason), permanent=True)

    @kopf.timer(*MODEL_DEPLOYMENTS, interval=settings.resync_seconds, initial_delay=settings.resync_seconds,
                registry=registry, id="resync")  # fmt: skip
    def resync(namespace: str, name: str, **_: Any) -> None:
        run_pass(reconciler, settings, namespace, name, trigger="resync")

    # While evidence waits for its grace/confirmation to end, look every few seconds: an image
    # that cannot be pulled or a pod waiting for a GPU brings no further watch event.
    @kopf.timer(*MODEL_DEPLOYMENTS, interval=evidence.RolloutPolicy().poll_interval_s,
                when=rollout_evidence_pending, registry=registry, id="rollout")  # fmt: skip
    def rollout_poll(namespace: str, name: str, **_: Any) -> None:
        run_pass(reconciler, settings, namespace, name, trigger="rollout", apply=False)

    @kopf.on.event(*MODEL_DEPLOYMENTS, when=rollout_request_pending, registry=registry, id="rollout-request")
    def rollout_requested(namespace: str, name: str, **_: Any) -> None:
        run_pass(reconciler, settings, namespace, name, trigger="annotation")

    def child_changed(body: kopf.Body, namespace: str, **_: Any) -> None:
        owner = builders.owner_name(body)
        if owner:
            run_pass(reconciler, settings, namespace, owner, trigger="child")

    def pod_changed(body: kopf.Body, namespace: str, **_: Any) -> None:
        owner = builders.owner_name(body)
        if owner:
            run_pass(reconciler, settings, namespace, owner, trigger="pod", apply=False)

    for group_version, plural in CHILDREN:
        kopf.on.event(group_version, plural, labels=MANAGED, registry=registry, id=f"child-{plural}")(child_changed)
    kopf.on.event(*PODS, labels=MANAGED, registry=registry, id="pods")(pod_changed)
    return registry
