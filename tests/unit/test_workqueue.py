"""The work queue: coalescing, one worker per key, re-queue of keys added while running,
scheduled keys (earliest wins, an add makes them due now), shutdown."""

from __future__ import annotations

import threading

import pytest

from modelship_operator.runtime.workqueue import ShutDown, WorkQueue

from .samples import MonotonicClock


def test_a_key_added_many_times_is_processed_once():
    q = WorkQueue()
    for _ in range(5):
        q.add("a")
    q.add("b")
    assert [q.get(timeout=0), q.get(timeout=0), q.get(timeout=0)] == ["a", "b", None]


def test_a_key_added_while_active_comes_back_once_after_done():
    q = WorkQueue()
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("a")
    q.add("a")
    assert q.get(timeout=0) is None  # never to a second worker while the first runs
    q.done("a")
    assert q.get(timeout=0) == "a"
    q.done("a")
    assert q.get(timeout=0) is None


def test_scheduled_keys_wait_and_the_earliest_due_time_wins():
    clock = MonotonicClock()
    q = WorkQueue(clock=clock)
    q.add_after("a", 60)
    q.add_after("a", 3)
    q.add_after("a", 30)
    assert q.scheduled() == 1
    assert q.get(timeout=0) is None
    clock.now += 3
    assert q.get(timeout=0) == "a"
    q.done("a")
    clock.now += 100
    assert q.get(timeout=0) is None  # the 30/60 s entries were superseded


def test_an_add_makes_a_scheduled_key_due_now_and_only_once():
    clock = MonotonicClock()
    q = WorkQueue(clock=clock)
    q.add_after("a", 10)
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.done("a")
    clock.now += 20
    assert q.get(timeout=0) is None


def test_forget_drops_a_scheduled_key():
    clock = MonotonicClock()
    q = WorkQueue(clock=clock)
    q.add_after("a", 1)
    q.forget("a")
    clock.now += 5
    assert q.get(timeout=0) is None


def test_a_blocked_worker_wakes_for_a_new_key_and_on_shutdown():
    q = WorkQueue()
    got: list[object] = []

    def worker() -> None:
        try:
            while True:
                key = q.get()
                got.append(key)
                q.done(key)
        except ShutDown:
            got.append("shutdown")

    thread = threading.Thread(target=worker)
    thread.start()
    q.add("a")
    q.add_after("b", 0.05)
    for _ in range(200):
        if got == ["a", "b"]:
            break
        threading.Event().wait(0.01)
    q.shut_down()
    thread.join(5)
    assert got == ["a", "b", "shutdown"]
    with pytest.raises(ShutDown):
        q.get(timeout=0)


def test_urgent_keys_are_served_first_and_a_queued_key_can_be_promoted():
    q = WorkQueue()
    q.add("old-1")
    q.add("old-2")
    q.add("new", urgent=True)
    q.add("old-2", urgent=True)
    assert [q.get(timeout=0) for _ in range(4)] == ["new", "old-2", "old-1", None]


def test_while_urgent_keys_keep_coming_the_other_lane_waits():
    clock = MonotonicClock()
    q = WorkQueue(clock=clock, urgent_quiet=0.5)
    q.add("old")
    q.add("new", urgent=True)
    assert q.get(timeout=0) == "new"
    assert q.get(timeout=0) is None  # the burst may go on
    clock.now += 0.5
    assert q.get(timeout=0) == "old"
