"""security tier: bandit on the Python sources, checkov on the rendered chart and on the objects
the operator builds (pip-audit of the images lives in the image tier, which builds them)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.security)
