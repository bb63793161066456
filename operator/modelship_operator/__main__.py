"""``python -m modelship_operator`` (= ``modelship-operator``): run the operator.

    modelship-operator [--all-namespaces | --namespace NS ...] [--kubeconfig PATH]
                       [--health-port 8080] [--metrics-port 9090]
                       [--peering NAME [--peering-lifetime 60]]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
from collections.abc import Sequence

from modelship_operator.runtime.settings import Settings


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="modelship-operator", description="Run the modelship operator.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable); default: all namespaces")  # fmt: skip
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch all namespaces (default)")
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig file; default: in-cluster config, else $KUBECONFIG or ~/.kube/config")  # fmt: skip
    parser.add_argument("--health-port", type=int, default=defaults.health_port,
                        help=f"liveness endpoint port, GET /healthz (default {defaults.health_port})")  # fmt: skip
    parser.add_argument("--metrics-port", type=int, default=defaults.metrics_port,
                        help=f"Prometheus /metrics port (default {defaults.metrics_port})")  # fmt: skip
    parser.add_argument("--resync-seconds", type=float, default=defaults.resync_seconds,
                        help=f"safety-net resync interval (default {defaults.resync_seconds:g})")  # fmt: skip
    parser.add_argument("--workers", type=int, default=defaults.workers, metavar="N",
                        help=f"threads running reconcile passes (default {defaults.workers})")  # fmt: skip
    parser.add_argument("--log-level", default=os.environ.get("MODELSHIP_LOG_LEVEL", defaults.log_level),
                        help="DEBUG, INFO, WARNING... (default INFO, or $MODELSHIP_LOG_LEVEL)")  # fmt: skip
    parser.add_argument("--peering", default=None, metavar="NAME",
                        help="kopf peering object for HA (replicas > 1); default: standalone")  # fmt: skip
    parser.add_argument("--peering-lifetime", type=int, default=defaults.peering_lifetime, metavar="S",
                        help=f"failover time after a peer dies, s (default {defaults.peering_lifetime})")  # fmt: skip
    parser.add_argument("--peering-priority", type=int, default=None, metavar="N",
                        help="kopf peering priority (default: random, so peers never tie)")  # fmt: skip
    args = parser.parse_args(argv)
    return Settings(
        namespaces=tuple(dict.fromkeys(args.namespace)),
        kubeconfig=args.kubeconfig,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        resync_seconds=args.resync_seconds,
        workers=max(args.workers, 1),
        log_level=args.log_level.upper(),
        peering=args.peering,
        peering_lifetime=args.peering_lifetime,
        peering_priority=args.peering_priority if args.peering_priority is not None else random.randint(1, 2**30),
    )


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every thread its own malloc arena (up to 8 per core), and memory freed in one
    is not reused by the others: with a few dozen threads parsing API responses, RSS grew by
    tens of MB that were free but never returned. Two arenas are plenty for threads that mostly
    wait on the network. (No-op where libc has no mallopt, e.g. musl.)"""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    limit_malloc_arenas()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # kopf logs "Handler ... succeeded" for every watch event (thousands a minute at scale);
        # our own log says what each pass did. Warnings and errors still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    # Imported here: the CLI (--help) must work without touching kopf or the cluster.
    import kopf

    from modelship_operator import kube
    from modelship_operator.runtime import controller as handlers, metrics

    try:
        kube.load_config(settings.kubeconfig)
    except Exception as error:  # ConfigException, FileNotFoundError, bad YAML: all fatal here
        raise SystemExit(f"modelship-operator: cannot load the Kubernetes client config: {error}") from error
    gate = handlers.PeeringGate().install()
    controller = handlers.Controller(kube.Kube(pool_size=settings.workers + 2), settings, active=lambda: gate.active)
    registry = handlers.build_registry(controller, settings)
    metrics.serve(settings.metrics_port)
    kopf.run(
        registry=registry,
        settings=handlers.filter_watches(settings.kopf_settings()),
        clusterwide=settings.clusterwide,
        namespaces=list(settings.namespaces),
        liveness_endpoint=settings.liveness_endpoint,
        standalone=not settings.peering,
    )


if __name__ == "__main__":
    main()
