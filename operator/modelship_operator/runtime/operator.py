"""Wiring: settings in, a running operator out (kopf, the controller, leader election, metrics)."""

from __future__ import annotations

import logging
import socket
import uuid

import kopf

from modelship_operator import kube
from modelship_operator.runtime import metrics, watches
from modelship_operator.runtime.controller import Controller
from modelship_operator.runtime.leader import LeaderElector
from modelship_operator.runtime.settings import Settings

logger = logging.getLogger(__name__)

def elector(client: kube.Kube, settings: Settings) -> LeaderElector:
    """The Lease campaign of this process; its identity is unique per process, as client-go's."""
    identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    return LeaderElector(client, settings.lease_config(identity))


def run(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT. Without ``--leader-elect`` this replica always leads."""
    try:
        kube.load_config(settings.kubeconfig)
    except Exception as error:  # ConfigException, FileNotFoundError, bad YAML: all fatal here
        raise SystemExit(f"modelship-operator: cannot load the Kubernetes client config: {error}") from error
    client = kube.Kube(pool_size=settings.workers + 2)
    campaign = elector(client, settings) if settings.leader_elect else None
    if campaign is not None:
        client.may_write = campaign.holding
    controller = Controller(client, settings, gate=campaign.holding if campaign else lambda: True)
    metrics.watch_sizes(lambda: len(controller.queue), controller.queue.scheduled, controller.store.sizes)

    def leading() -> None:
        metrics.LEADER.set(1)
        controller.lead()

    if campaign is not None:
        campaign.on_started = leading
        campaign.on_stopped = lambda: metrics.LEADER.set(0)
    else:
        metrics.LEADER.set(1)
    registry = watches.build_registry(
        controller, settings, on_start=campaign.start if campaign else lambda: None,
        on_stop=campaign.stop if campaign else lambda: None,
    )
    metrics.serve(settings.metrics_port)
    kopf.run(
        registry=registry,
        settings=watches.filter_watches(settings.kopf_settings()),
        clusterwide=settings.clusterwide,
        namespaces=list(settings.namespaces),
        liveness_endpoint=settings.liveness_endpoint,
        standalone=True,
    )
