"""kube.py's error classification (the only module talking to the API), without a server."""

import datetime

import kubernetes
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from modelship_operator import kube


def _api_error(status: int, message: str = "boom") -> ApiException:
    error = ApiException(status=status, reason="Reason")
    error.body = f'{{"kind":"Status","message":"{message}"}}'
    return error


@pytest.mark.parametrize(("status", "kind"), [(400, kube.Rejected), (422, kube.Rejected), (409, kube.Retryable),
                                              (429, kube.Retryable), (500, kube.Retryable), (403, kube.Retryable)])
def test_classification(status, kind):
    def fail():
        raise _api_error(status, "spec.template: Invalid value")

    with pytest.raises(kind, match="Invalid value"):
        kube._call("apply Deployment ml/x", fail)


def test_not_found_returns_the_given_value():
    def missing():
        raise _api_error(404)

    assert kube._call("get", missing, missing=None) is None
    with pytest.raises(kube.Retryable):
        kube._call("get", missing)


def test_connection_errors_are_retryable():
    def refused():
        raise urllib3.exceptions.MaxRetryError(None, "/apis", "Connection refused")

    with pytest.raises(kube.Retryable, match="get Deployment ml/x"):
        kube._call("get Deployment ml/x", refused)


def test_event_failures_are_logged_not_raised(caplog):
    k = kube.Kube(kubernetes.client.ApiClient(kubernetes.client.Configuration()))

    def refuse(*_a, **_k):
        raise _api_error(403, "events is forbidden")

    k.core.create_namespaced_event = refuse
    k.event({"metadata": {"name": "x", "namespace": "ml"}}, "Normal", "Ready", "m", datetime.datetime.now())
    assert "events is forbidden" in caplog.text


def test_terminating_namespace_is_its_own_class():
    def terminating():
        error = _api_error(403, 'deployments.apps "x" is forbidden: unable to create new content in namespace ml '
                                "because it is being terminated")
        raise error

    with pytest.raises(kube.NamespaceTerminating):
        kube._call("apply Deployment ml/x", terminating)
