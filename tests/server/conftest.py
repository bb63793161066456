"""Server tier: the real app (uvicorn on loopback) with real torch models the tests create."""

from __future__ import annotations


from collections.abc import Iterator

import pytest
from s3_support import Minio, run_minio
from server_support import ModelFiles, build_models


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/server/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.server)
            item.add_marker(pytest.mark.timeout(120))


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return build_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Minio]:
    """A real MinIO on 127.0.0.1 for the whole tier (s3:// sources)."""
    with run_minio(tmp_path_factory.mktemp("minio")) as server:
        yield server
