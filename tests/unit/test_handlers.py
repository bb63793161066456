"""The kopf wrappers' error policy: invalid spec -> PermanentError on spec triggers only,
API trouble -> TemporaryError with the configured delay, metrics counted either way."""

import kopf
import pytest

from modelship_operator import handlers, kube, metrics
from modelship_operator.reconcile import Result
from modelship_operator.settings import Settings


class StubReconciler:
    def __init__(self, result=None, error=None):
        self.result, self.error, self.calls = result or Result(), error, []

    def reconcile(self, namespace, name, *, apply=True):
        self.calls.append((namespace, name, apply))
        if self.error:
            raise self.error
        return self.result


def _count(trigger, result):
    return metrics.REGISTRY.get_sample_value("modelship_reconciles_total", {"trigger": trigger, "result": result}) or 0


def test_invalid_spec_is_permanent_on_spec_triggers():
    rec = StubReconciler(Result(problem="spec.image: bad"))
    before = _count("update", "problem")
    with pytest.raises(kopf.PermanentError, match="spec.image"):
        handlers.run_pass(rec, Settings(), "ml", "x", trigger="update", permanent=True)
    assert _count("update", "problem") == before + 1


def test_invalid_spec_is_quiet_on_child_and_resync_triggers():
    handlers.run_pass(StubReconciler(Result(problem="bad")), Settings(), "ml", "x", trigger="resync")


def test_api_trouble_is_temporary_with_the_configured_delay():
    rec = StubReconciler(error=kube.Retryable("HTTP 429"))
    with pytest.raises(kopf.TemporaryError) as info:
        handlers.run_pass(rec, Settings(retry_delay_seconds=7), "ml", "x", trigger="child")
    assert info.value.delay == 7


def test_pods_refresh_status_only():
    rec = StubReconciler()
    handlers.run_pass(rec, Settings(), "ml", "x", trigger="pod", apply=False)
    assert rec.calls == [("ml", "x", False)]
