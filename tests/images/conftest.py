"""Image tier: Dockerfile.server and Dockerfile.operator built and run on a real engine.

The session starts a private dockerd (hack/docker/dockerd.sh: unix:///tmp/ms-docker.sock,
layer cache under ~/.cache/modelship/docker) unless one already answers there, and
stops it afterwards if it started it. Images build FROM the local debootstrapped
base (modelship-base:bookworm; nothing can be pulled here) and install from the
host-made wheelhouse with --network none. A missing prerequisite (docker.io,
debootstrap, the venv) FAILS the tier with the command that fixes it.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from images_support import BUILD_TIMEOUT_S, ROOT


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/images/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.images)
            # The first test to use an image pays for its build (minutes when cold).
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S + 600))


# The operator test reconciles against the local control plane: reuse the e2e
# tier's session fixtures (cluster up/down, CRD installed) rather than a copy.
sys.path.insert(0, str(ROOT / "tests" / "e2e"))  # the e2e conftest imports e2e_support
_spec = importlib.util.spec_from_file_location("modelship_e2e_fixtures", ROOT / "tests" / "e2e" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_e2e)
cluster = _e2e.cluster
crd = _e2e.crd


# The engine and the two images (docker, server_build, operator_build, server_image,
# operator_image) are session fixtures in tests/conftest.py, shared with the node tier.
