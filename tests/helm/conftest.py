"""helm tier: the chart linted, rendered and schema-checked by the real helm binary (no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helm_support import helm_binary


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "helm: the Helm chart rendered and checked by the real helm binary")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/helm/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.helm)


@pytest.fixture(scope="session")
def helm() -> Path:
    """The cached helm binary. Missing = FAIL (never skip), with the command that builds it."""
    try:
        return helm_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
