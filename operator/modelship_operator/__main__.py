"""``python -m modelship_operator`` (= ``modelship-operator``): run the operator.

    modelship-operator [--all-namespaces | --namespace NS ...] [--kubeconfig PATH]
                       [--health-port 8080] [--metrics-port 9090]
                       [--leader-elect [--leader-elect-resource-name NAME] ...]

The leader election flags are kube-controller-manager's (``--leader-elect*``), with client-go's
defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from modelship_operator.runtime.settings import Settings, own_namespace


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="modelship-operator", description="Run the modelship operator.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable); default: all namespaces")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch all namespaces (default)")
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig file; default: in-cluster config, else $KUBECONFIG or ~/.kube/config")
    parser.add_argument("--health-port", type=int, default=defaults.health_port,
                        help=f"liveness endpoint port, GET /healthz (default {defaults.health_port})")
    parser.add_argument("--metrics-port", type=int, default=defaults.metrics_port,
                        help=f"Prometheus /metrics port (default {defaults.metrics_port})")
    parser.add_argument("--resync-seconds", type=float, default=defaults.resync_seconds,
                        help=f"safety-net resync interval (default {defaults.resync_seconds:g})")
    parser.add_argument("--workers", type=int, default=defaults.workers, metavar="N",
                        help=f"threads running reconcile passes (default {defaults.workers})")
    parser.add_argument("--log-level", default=os.environ.get("MODELSHIP_LOG_LEVEL", defaults.log_level),
                        help="DEBUG, INFO, WARNING... (default INFO, or $MODELSHIP_LOG_LEVEL)")
    le = parser.add_argument_group("leader election (replicas > 1: only the Lease holder reconciles)")
    le.add_argument("--leader-elect", action="store_true",
                    help="compete for a coordination.k8s.io/v1 Lease; default: off (one replica)")
    le.add_argument("--leader-elect-resource-name", default=defaults.lease_name, metavar="NAME",
                    help=f"Lease name (default {defaults.lease_name})")
    le.add_argument("--leader-elect-resource-namespace", default=None, metavar="NS",
                    help="Lease namespace (default: the pod's own, else default)")
    le.add_argument("--leader-elect-lease-duration", type=float, default=defaults.lease_duration_seconds,
                    metavar="S", help=f"a standby takes over this long after the last renewal "
                    f"(default {defaults.lease_duration_seconds:g})")
    le.add_argument("--leader-elect-renew-deadline", type=float, default=defaults.renew_deadline_seconds,
                    metavar="S", help=f"the leader stops writing when it could not renew for this long "
                    f"(default {defaults.renew_deadline_seconds:g})")
    le.add_argument("--leader-elect-retry-period", type=float, default=defaults.retry_period_seconds,
                    metavar="S", help=f"between attempts to acquire or renew (default {defaults.retry_period_seconds:g})")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings(
        namespaces=tuple(dict.fromkeys(args.namespace)),
        kubeconfig=args.kubeconfig,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        resync_seconds=args.resync_seconds,
        workers=max(args.workers, 1),
        log_level=args.log_level.upper(),
        leader_elect=args.leader_elect,
        lease_name=args.leader_elect_resource_name,
        lease_namespace=args.leader_elect_resource_namespace or own_namespace(),
        lease_duration_seconds=args.leader_elect_lease_duration,
        renew_deadline_seconds=args.leader_elect_renew_deadline,
        retry_period_seconds=args.leader_elect_retry_period,
    )
    try:
        settings.check()
    except ValueError as error:
        parser.error(str(error))
    return settings


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

    # Imported here: the CLI (--help) must work without touching the cluster.
    from modelship_operator.runtime import operator

    operator.run(settings)


if __name__ == "__main__":
    main()
