"""Lease leader election (runtime.leader) against an in-memory Lease store, with a fake clock:
client-go's rules, and the margin that keeps a replica that lost the Lease from writing while
another may already hold it."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from modelship_operator import kube
from modelship_operator.runtime.leader import LeaderElector, LeaseConfig

from .samples import MonotonicClock


class LeaseStore:
    """One Lease with optimistic concurrency (resourceVersion), as the API server keeps it."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.down = False  # every call fails, as in a network partition

    def _check(self) -> None:
        if self.down:
            raise kube.Retryable("connection refused")

    def get_lease(self, namespace: str, name: str, *, timeout: float) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.lease)

    def create_lease(self, namespace: str, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        self._check()
        if self.lease is not None:
            raise kube.Refused("leases.coordination.k8s.io already exists", 409)
        return self._store(body)

    def replace_lease(self, namespace: str, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        self._check()
        if self.lease is None or body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise kube.Refused("the object has been modified", 409)
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.lease)

    @property
    def holder(self) -> str | None:
        return (self.lease or {}).get("spec", {}).get("holderIdentity")


def _elector(store: LeaseStore, clock: MonotonicClock, identity: str) -> LeaderElector:
    wall = lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=clock.now)  # noqa: E731
    return LeaderElector(store, LeaseConfig("ops", "modelship", identity), clock=clock, wall=wall)


def test_the_first_candidate_creates_the_lease_and_the_other_waits_it_out() -> None:
    store, clock = LeaseStore(), MonotonicClock()
    a, b = _elector(store, clock, "a"), _elector(store, clock, "b")
    assert a.try_acquire_or_renew() and a.holding() and store.holder == "a"
    assert store.lease is not None and store.lease["spec"]["leaseDurationSeconds"] == 15
    assert not b.try_acquire_or_renew() and not b.holding()
    for _ in range(20):  # a renews every retry period: b never gets it
        clock.now += 2
        assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    assert store.lease["spec"]["leaseTransitions"] == 0


def test_a_dead_leader_is_replaced_after_the_lease_duration_on_the_candidates_clock() -> None:
    store, clock = LeaseStore(), MonotonicClock()
    a, b = _elector(store, clock, "a"), _elector(store, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()  # b observes a's record now
    clock.now += 14.9  # a is SIGKILLed: no more renewals
    assert not b.try_acquire_or_renew()
    clock.now += 0.2
    assert b.try_acquire_or_renew() and b.holding() and store.holder == "b"
    assert store.lease is not None and store.lease["spec"]["leaseTransitions"] == 1


def test_a_partitioned_leader_stops_writing_before_anyone_may_take_over() -> None:
    store, clock = LeaseStore(), MonotonicClock()
    a, b = _elector(store, clock, "a"), _elector(store, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    store.down = True  # a's API calls fail from now on (b's would too, but b only needs to read later)
    stopped_writing = taken_over = None
    while taken_over is None:
        clock.now += 0.5
        a.try_acquire_or_renew()
        if stopped_writing is None and not a.holding():
            stopped_writing = clock.now
        store.down = False
        if b.try_acquire_or_renew():
            taken_over = clock.now
        store.down = True
    assert stopped_writing is not None and stopped_writing <= 100 + 10  # the renew deadline
    assert taken_over >= 100 + 15  # the lease duration
    assert taken_over - stopped_writing >= 15 - 10


def test_a_conflicting_update_loses_the_race() -> None:
    store, clock = LeaseStore(), MonotonicClock()
    a, b = _elector(store, clock, "a"), _elector(store, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    clock.now += 16  # a stalled past the lease duration
    stale = store.get_lease("ops", "modelship", timeout=1)
    assert b.try_acquire_or_renew() and store.holder == "b"
    store.get_lease = lambda *_, **__: copy.deepcopy(stale)  # a read before b wrote
    assert not a.try_acquire_or_renew() and not a.holding()  # its write from that read is a conflict
    del store.get_lease
    assert not a.try_acquire_or_renew() and not a.holding()  # and now it sees b's record
    assert store.holder == "b"


def test_release_on_shutdown_lets_the_next_replica_in_at_once() -> None:
    store, clock = LeaseStore(), MonotonicClock()
    a, b = _elector(store, clock, "a"), _elector(store, clock, "b")
    stopped: list[str] = []
    a.on_stopped = lambda: stopped.append("a")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    a._renewed_at = clock.now  # (as run() would have it)
    a.stop()
    assert stopped == ["a"] and not a.holding() and store.holder is None
    assert b.try_acquire_or_renew() and store.holder == "b"


def test_lease_timings_must_leave_the_leader_time_to_stop() -> None:
    assert LeaseConfig("ns", "n", "me").lease_duration == 15  # client-go's defaults
    with pytest.raises(ValueError, match="lease duration > renew deadline"):
        LeaseConfig("ns", "n", "me", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError):
        LeaseConfig("ns", "n", "me", renew_deadline=2, retry_period=2)


def test_the_loop_leads_steps_down_when_it_cannot_renew_and_campaigns_again() -> None:
    """The real loop on the real clock, with short timings (lease 0.6 s, renew 0.4 s, retry 0.1 s)."""
    import threading

    store = LeaseStore()
    started, stopped = threading.Event(), threading.Event()
    elector = LeaderElector(store, LeaseConfig("ops", "modelship", "a", 0.6, 0.4, 0.1),
                            on_started=started.set, on_stopped=stopped.set)
    elector.start()
    try:
        assert started.wait(5) and elector.holding()
        started.clear()
        store.down = True
        assert stopped.wait(5) and not elector.holding()
        store.down = False
        assert started.wait(5) and elector.holding()  # its own record: taken back at once
    finally:
        elector.stop()
    assert store.holder is None  # released
