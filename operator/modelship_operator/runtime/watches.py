"""What kopf watches, and the handlers it calls: the only module that knows kopf's registry.

Every handler is an ``on.event`` handler that hands the event to the
:class:`~.controller.Controller` (two cheap things on kopf's event loop: record the object,
queue its ModelDeployment). Why not kopf's create/update handlers and timers: kopf runs one
handler per event, so an object whose Deployment and pods moved ten times got ten full passes;
its handlers persist progress in annotations (an extra PATCH per change); and its timers put a
finalizer on every object, so nothing could be deleted while the operator was down. kopf still
gives us what it is good at: watches that resume and re-list, login, the liveness endpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kopf

from modelship_operator import kube
from modelship_operator.core import api, builders
from modelship_operator.runtime.controller import Controller
from modelship_operator.runtime.settings import Settings

MODEL_DEPLOYMENTS = (api.API_VERSION, api.PLURAL)
CHILDREN = (
    ("apps/v1", "deployments", "Deployment"),
    ("v1", "services", "Service"),
    ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    ("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
)
PODS = ("v1", "pods")
#: Claims of pvc:// models: not labelled by us (users make them), so watched unfiltered; their
#: creation or deletion passes the ModelDeployments that name them.
CLAIMS = ("v1", "persistentvolumeclaims")
MANAGED = builders.MANAGED_LABELS


def filter_watches(kopf_settings: kopf.OperatorSettings) -> kopf.OperatorSettings:
    """Children and pods are watched filtered server-side by :data:`MANAGED`: on a real cluster
    the API server sends only what modelship manages, not every pod and Deployment in it."""
    selector = ",".join(f"{k}={v}" for k, v in MANAGED.items())
    for group_version, plural, *_ in (*CHILDREN, PODS):
        kopf_settings.watching.label_selectors[group_version, plural] = selector
    return kopf_settings


def build_registry(
    controller: Controller, settings: Settings, *, on_start: Callable[[], None] = lambda: None,
    on_stop: Callable[[], None] = lambda: None,
) -> kopf.OperatorRegistry:
    """All handlers, registered on a fresh registry (nothing happens at import time).
    ``on_start``/``on_stop`` run after the workers started / after they stopped (leader
    election: campaign once passes can run; release the Lease once they no longer do)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kube.connection_info(settings.kubeconfig)

    @kopf.on.startup(registry=registry, id="workers")
    async def start_workers(**_: Any) -> None:
        controller.start()
        on_start()

    @kopf.on.cleanup(registry=registry, id="workers")
    async def stop_workers(**_: Any) -> None:
        controller.stop()
        on_stop()

    @kopf.on.event(*MODEL_DEPLOYMENTS, registry=registry, id="model-deployments")
    async def model_deployment_event(event: Mapping[str, Any], **_: Any) -> None:
        controller.model_deployment_event(event.get("type"), event["object"])

    for group_version, plural, kind in CHILDREN:

        async def child_event(event: Mapping[str, Any], _kind: str = kind, **_: Any) -> None:
            controller.child_event(_kind, event.get("type"), event["object"])

        kopf.on.event(group_version, plural, labels=MANAGED, registry=registry, id=f"child-{plural}")(child_event)

    @kopf.on.event(*PODS, labels=MANAGED, registry=registry, id="pods")
    async def pod_event(event: Mapping[str, Any], **_: Any) -> None:
        controller.pod_event(event.get("type"), event["object"])

    @kopf.on.event(*CLAIMS, registry=registry, id="claims")
    async def claim_event(event: Mapping[str, Any], **_: Any) -> None:
        controller.claim_event(event.get("type"), event["object"])

    return registry
