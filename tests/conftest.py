"""Session fixtures shared by the tiers that need images: the private Docker engine and the
two images built from Dockerfile.server / Dockerfile.operator (the image tier tests them, the
node tier runs them on a real kubelet). Each is built once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS / "images"))
from images_support import BUILD_TIMEOUT_S, DOCKER, DOCKER_HOST, OUT, Docker, script  # noqa: E402


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    if not (Path(DOCKER).exists() and shutil.which("dockerd")):
        pytest.fail(f"{DOCKER} / dockerd missing: the image tier needs Debian's docker.io (run `make setup`)",
                    pytrace=False)
    dockerd = ["bash", str(REPO / "hack" / "docker" / "dockerd.sh")]
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
    #: the revision label it was built with: the last commit that changed its inputs
    revision: str
    log: Path

    def built_offline(self) -> bool:
        """build.sh ran `docker build --network none` (it does when the wheelhouse has wheels)."""
        return any(line.startswith("build.sh: ") and " --network none " in line
                   for line in self.log.read_text(errors="replace").splitlines())


def _build(what: str) -> Built:
    # The revision label: the last commit that changed the image's inputs (build.sh says
    # which); asked once, before the build, so commits made meanwhile do not move it.
    rev = subprocess.run(["bash", str(REPO / "hack" / "docker" / "build.sh"), "--revision", what], cwd=REPO,
                         capture_output=True, text=True, check=False)
    revision = rev.stdout.strip() or "unknown"
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
