"""Helpers for the image tier: the private Docker engine, image builds, containers.

The engine is Debian's docker.io started by hack/docker/dockerd.sh on
unix:///tmp/ms-docker.sock; the client is Debian's /usr/bin/docker with BuildKit
(DOCKER.md: the other installed client lacks buildx). Containers run with
``--network host`` and listen on 127.0.0.1 only; waiting is polling with a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "_out" / "images"
DOCKER = "/usr/bin/docker"
DOCKER_HOST = "unix:///tmp/ms-docker.sock"
UID = GID = 10001
#: A cold build of the server image installs ~3 GB of torch/CUDA wheels (see README).
BUILD_TIMEOUT_S = 45 * 60

# Polling and port helpers are the e2e tier's (one copy for both tiers).
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from e2e_support import free_port, wait_until  # noqa: E402,F401 - re-exported to the image tests


def script(name: str, *args: str, log: Path | None = None, timeout: float = 3600,
           env: dict[str, str] | None = None) -> None:
    """Run hack/docker/<name> (output to ``log``); fail with the log's tail."""
    env = {**os.environ, "DOCKER_HOST": DOCKER_HOST, "DOCKER_BUILDKIT": "1", **(env or {})}
    OUT.mkdir(parents=True, exist_ok=True)
    log = log or OUT / f"{name.split('.')[0]}.log"
    with log.open("w") as fh:
        proc = subprocess.run(["bash", str(ROOT / "hack" / "docker" / name), *args], cwd=ROOT, env=env,
                              stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(
            f"hack/docker/{name} {' '.join(args)} exited {proc.returncode}:\n"
            f"--- {log}\n{log.read_text(errors='replace')[-6000:]}"
        )


@dataclass
class Docker:
    """The client bound to the private engine."""

    host: str = DOCKER_HOST

    def __call__(self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}
        proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, env=env, timeout=timeout,
                              input=input, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    def inspect(self, ref: str, kind: str = "container") -> dict[str, Any]:
        return json.loads(self(kind, "inspect", ref).stdout)[0]


@dataclass
class Container:
    """One detached container; removed (with its logs kept in _out/images/) on close()."""

    docker: Docker
    image: str
    args: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    name: str = field(default_factory=lambda: f"ms-test-{uuid.uuid4().hex[:8]}")

    def start(self) -> Container:
        run = self.docker("run", "--detach", "--name", self.name, "--network", "host", *self.args, self.image,
                          *self.command, check=False)
        if run.returncode != 0:
            self.docker("rm", "--force", self.name, check=False)  # `run` may leave it Created
            raise AssertionError(f"docker run {self.image} failed ({run.returncode}):\n{run.stderr}{run.stdout}")
        return self

    def state(self) -> dict[str, Any]:
        return self.docker.inspect(self.name)["State"]

    def logs(self) -> str:
        proc = self.docker("logs", "--tail", "200", self.name, check=False)
        return proc.stdout + proc.stderr

    def exec(self, *cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.docker("exec", self.name, *cmd, check=check)

    def close(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"{self.name}.log").write_text(self.logs())
        self.docker("rm", "--force", self.name, check=False)
