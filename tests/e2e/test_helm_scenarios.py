"""The operator e2e scenarios (tests/e2e/test_operator.py), re-run under the chart's identity.

Here the `operator` fixture is overridden for this module: instead of an operator with
the admin kubeconfig, it is the process the chart would run, with the flags of the
installed Deployment (`helm install`, defaults: all namespaces) and a token of the
chart's ServiceAccount. Every scenario that passes here passes with the chart's
least-privilege RBAC and nothing more. The session's admin operator is stopped for
the module and restarted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import test_operator
from e2e_support import Cluster, OperatorProcess
from test_helm import OUT, ChartOperator, Release

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def operator(operator: OperatorProcess, cluster: Cluster, crd: str) -> Iterator[ChartOperator]:
    """The chart's operator (overrides conftest's for this module; `operator` below is the admin one)."""
    namespace = f"modelship-chart-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", namespace)
    release = Release(cluster, namespace)
    operator.stop()
    chart_op: ChartOperator | None = None
    try:
        release.install("crds.enabled=false")
        chart_op = ChartOperator(cluster, OUT / f"{release.name}-scenarios.log", release.operator_args(),
                                 release.token_kubeconfig())
        chart_op.start()
        yield chart_op
    finally:
        if chart_op is not None:
            chart_op.stop()
        release.cleanup()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)
        operator.start()


# Every scenario of the operator tier, collected again in this module (so with the fixture above).
for _name in dir(test_operator):
    if _name.startswith("test_"):
        globals()[_name] = getattr(test_operator, _name)


def test_chart_operator_never_hit_an_api_refusal(operator: ChartOperator) -> None:
    """Runs last: across all the scenarios above, no reconcile was refused (a 403 is a retry)."""
    from test_helm import _rbac_trouble

    assert operator.reconciles("ok") > 0
    assert not _rbac_trouble(operator.log()), "\n".join(_rbac_trouble(operator.log()))
    assert operator.reconciles("retry", "error") == 0, operator.log_tail()
