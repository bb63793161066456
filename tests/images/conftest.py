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
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from images_support import DOCKER, DOCKER_HOST, OUT, ROOT, Docker, script

#: A cold build of the server image installs ~3 GB of torch/CUDA wheels (see README).
BUILD_TIMEOUT_S = 45 * 60


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


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    if not (Path(DOCKER).exists() and shutil.which("dockerd")):
        pytest.fail(f"{DOCKER} / dockerd missing: the image tier needs Debian's docker.io (run `make setup`)",
                    pytrace=False)  # fmt: skip
    dockerd = ["bash", str(ROOT / "hack" / "docker" / "dockerd.sh")]
    was_running = subprocess.run([*dockerd, "status"], capture_output=True, check=False).returncode == 0
    start = subprocess.run([*dockerd, "start"], capture_output=True, text=True, check=False, timeout=120)
    if start.returncode != 0:
        pytest.fail(f"dockerd did not start:\n{start.stdout}{start.stderr}", pytrace=False)
    yield Docker(DOCKER_HOST)
    if not was_running and os.environ.get("MODELSHIP_KEEP_DOCKERD") != "1":
        subprocess.run([*dockerd, "stop"], capture_output=True, check=False, timeout=60)


@pytest.fixture(scope="session")
def wheelhouse() -> None:
    """wheelhouse/{operator,server}: a no-op when the stamps match (make setup made them)."""
    script("wheelhouse.sh", "operator", log=OUT / "wheelhouse-operator.log")
    script("wheelhouse.sh", "server", log=OUT / "wheelhouse-server.log")


@dataclass(frozen=True)
class Built:
    tag: str
    #: the revision label it was built with (others commit while the tier runs)
    revision: str
    log: Path

    def built_offline(self) -> bool:
        """build.sh ran `docker build --network none` (it does when the wheelhouse has wheels)."""
        return any(line.startswith("build.sh: ") and " --network none " in line
                   for line in self.log.read_text(errors="replace").splitlines())  # fmt: skip


def _build(what: str) -> Built:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    revision = head.stdout.strip() or "unknown"
    started = time.monotonic()
    log = OUT / f"build-{what}.log"
    script("build.sh", what, log=log, timeout=BUILD_TIMEOUT_S, env={"REVISION": revision})
    (OUT / f"build-{what}.seconds").write_text(f"{time.monotonic() - started:.1f}\n")
    return Built(f"modelship-{what}:{os.environ.get('IMAGE_TAG', 'dev')}", revision, log)


@pytest.fixture(scope="session")
def operator_build(docker: Docker, wheelhouse: None) -> Built:
    return _build("operator")


@pytest.fixture(scope="session")
def server_build(docker: Docker, wheelhouse: None) -> Built:
    return _build("server")


@pytest.fixture(scope="session")
def operator_image(operator_build: Built) -> str:
    return operator_build.tag


@pytest.fixture(scope="session")
def server_image(server_build: Built) -> str:
    return server_build.tag
