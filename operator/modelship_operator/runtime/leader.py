"""Leader election with a ``coordination.k8s.io/v1`` Lease, the way client-go's leaderelection
does it (and so controller-runtime operators, KServe, KubeAI).

Every replica watches and keeps its cache warm; only the one holding the Lease runs reconcile
passes (resync, polls and retries included). The three durations and their defaults are
client-go's:

- ``lease_duration`` (15 s): how long a candidate waits, after it last saw the Lease record
  change, before it takes the Lease over. Measured on the candidate's own monotonic clock from
  the moment it *observed* the record, so clock skew between nodes does not matter.
- ``renew_deadline`` (10 s): how long the leader keeps trying to renew before it gives up.
  :meth:`LeaderElector.holding` - "may I write?" - is true only until ``renew_deadline``
  after the start of the last successful renewal. Another replica can take over only
  ``lease_duration`` after it saw that renewal, which is later: a replica that loses the Lease
  (crash-free: a network partition, an API server that answers errors) stops writing at least
  ``lease_duration - renew_deadline`` (5 s) before another can start.
- ``retry_period`` (2 s): the interval between attempts to acquire or renew.

A replica that stops (SIGTERM) releases the Lease (client-go's ReleaseOnCancel): the record's
holder is cleared, and the next replica takes over at its next attempt instead of after
``lease_duration``. A SIGKILLed leader is replaced within ``lease_duration`` + ``retry_period``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from modelship_operator import kube

logger = logging.getLogger(__name__)

#: client-go's JitterFactor: candidates spread their attempts over 1x-2.2x the retry period.
JITTER = 1.2


@dataclasses.dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    """Namespace of the Lease: the operator's own (the chart's release namespace)."""
    name: str
    """Lease name, shared by the replicas of one operator installation."""
    identity: str
    """This replica's holderIdentity; unique per process (hostname + random suffix)."""
    lease_duration: float = 15.0
    """Seconds a candidate waits after the last observed renewal before taking over."""
    renew_deadline: float = 10.0
    """Seconds the leader may go without a successful renewal before it stops writing."""
    retry_period: float = 2.0
    """Seconds between attempts to acquire or renew."""

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > JITTER * self.retry_period > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > 1.2 x retry period > 0 "
                f"(got {self.lease_duration:g}, {self.renew_deadline:g}, {self.retry_period:g})"
            )


class LeaseStore(Protocol):
    """The Lease calls of :class:`modelship_operator.kube.Kube`."""

    def get_lease(self, namespace: str, name: str, *, timeout: float) -> dict[str, Any] | None: ...
    def create_lease(self, namespace: str, body: Mapping[str, Any], *, timeout: float) -> dict[str, Any]: ...
    def replace_lease(self, namespace: str, body: Mapping[str, Any], *, timeout: float) -> dict[str, Any]: ...


def _micro_time(now: dt.datetime) -> str:
    """A Lease MicroTime: RFC 3339 with microseconds, UTC."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _wall() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElector:
    """Acquires and renews one Lease from a thread; tells the runtime when leadership starts and
    stops, and answers :meth:`holding` for every write."""

    def __init__(
        self, store: LeaseStore, config: LeaseConfig, *, on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = _wall,
    ) -> None:
        self.store, self.config = store, config
        self.on_started, self.on_stopped = on_started, on_stopped
        self.clock, self.wall = clock, wall
        self._lease: dict[str, Any] | None = None  # as last read or written (its resourceVersion)
        self._observed: tuple[Any, ...] | None = None  # the record last seen, and when (local clock)
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # start of our last successful acquire/renew
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what the runtime asks ------------------------------------------------------------

    @property
    def holder(self) -> str:
        """The holder of the Lease as last seen ("" when free or unknown)."""
        return str(((self._lease or {}).get("spec") or {}).get("holderIdentity") or "")

    def holding(self) -> bool:
        """May this replica write? True while it holds the Lease and renewed it less than
        ``renew_deadline`` ago (so it stops before another replica may take over)."""
        renewed = self._renewed_at
        return (
            renewed is not None
            and self.holder == self.config.identity
            and self.clock() - renewed < self.config.renew_deadline
        )

    # -- one attempt ----------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew). True when this replica holds the Lease."""
        started = self.clock()
        timeout = self.config.renew_deadline
        cfg = self.config
        try:
            lease = self.store.get_lease(cfg.namespace, cfg.name, timeout=timeout)
            now = _micro_time(self.wall())
            if lease is None:
                spec = self._record(None, now)
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": cfg.name, "namespace": cfg.namespace}, "spec": spec}
                self._seen(self.store.create_lease(cfg.namespace, body, timeout=timeout))
                self._renewed_at = started
                return True
            self._seen(lease)
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
            if holder and holder != cfg.identity and self._observed_at + duration > self.clock():
                return False  # held by another replica, and renewed recently enough
            body = {**lease, "spec": {**spec, **self._record(spec, now)}}
            self._seen(self.store.replace_lease(cfg.namespace, body, timeout=timeout))
        except kube.KubeError as error:  # a conflict (another replica won), or no API
            logger.debug("lease %s/%s: %s", cfg.namespace, cfg.name, error)
            return False
        self._renewed_at = started
        return True

    def _record(self, old: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
        """Our record: a renewal keeps acquireTime; a takeover counts a transition."""
        previous = old or {}
        mine = previous.get("holderIdentity") == self.config.identity
        transitions = int(previous.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": int(self.config.lease_duration),
            "acquireTime": previous.get("acquireTime") if mine else now,
            "renewTime": now,
            "leaseTransitions": transitions if mine or old is None else transitions + 1,
        }

    def _seen(self, lease: dict[str, Any]) -> None:
        self._lease = lease
        spec = lease.get("spec") or {}
        record = tuple(spec.get(k) for k in ("holderIdentity", "renewTime", "acquireTime", "leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()

    def release(self) -> bool:
        """Give the Lease up (on shutdown), so the next replica need not wait it out."""
        lease, cfg = self._lease, self.config
        self._renewed_at = None  # no more writes from here, whatever happens below
        if lease is None or self.holder != cfg.identity:
            return False
        spec = lease.get("spec") or {}
        now = _micro_time(self.wall())
        released = {"leaseDurationSeconds": 1, "leaseTransitions": spec.get("leaseTransitions") or 0,
                    "acquireTime": now, "renewTime": now}
        try:
            self._seen(self.store.replace_lease(cfg.namespace, {**lease, "spec": released}, timeout=cfg.retry_period))
        except kube.KubeError as error:
            logger.warning("could not release the leader Lease %s/%s: %s", cfg.namespace, cfg.name, error)
            return False
        logger.info("released the leader Lease %s/%s", cfg.namespace, cfg.name)
        return True

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Campaign, lead, and campaign again after losing the Lease, until :meth:`stop`."""
        cfg = self.config
        while not self._stop.is_set():
            if not self.try_acquire_or_renew():
                self._stop.wait(cfg.retry_period * (1 + random.random() * JITTER))
                continue
            logger.info("%s acquired the leader Lease %s/%s", cfg.identity, cfg.namespace, cfg.name)
            self.on_started()
            while not self._stop.wait(cfg.retry_period):
                if not self.try_acquire_or_renew() and not self.holding():
                    break
            if self._stop.is_set():
                return  # stop() tells the runtime and releases
            self._renewed_at = None
            logger.warning("%s lost the leader Lease %s/%s (no renewal for %gs): stepping down",
                           cfg.identity, cfg.namespace, cfg.name, cfg.renew_deadline)
            self.on_stopped()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop campaigning; if leading, stop the runtime's writes first, then release."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._renewed_at is not None:
            self._renewed_at = None
            self.on_stopped()
        self.release()
