"""Server tier: the real app (uvicorn on loopback) with real torch models the tests create."""

from __future__ import annotations


import pytest
from server_support import ModelFiles, build_models


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/server/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.server)
            item.add_marker(pytest.mark.timeout(120))


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_models(tmp_path_factory.mktemp("models"))
