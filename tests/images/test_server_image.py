"""The server image, run as a user would: a model on a read-only volume, a read-only
root filesystem, host networking on loopback, Docker's own HEALTHCHECK and `docker stop`."""

from __future__ import annotations

import json
import re
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from images_support import GID, UID, Container, Docker, free_port, wait_until

#: torch import + model load inside a fresh container on a busy 2-core machine.
START_S = 180


class TinyMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# A handler that loads slowly (so /health is seen at 503 first) and predicts slowly
# (so `docker stop` lands while requests are in flight).
SLOW_HANDLER = '''
import os
import time


class SlowDoubler:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]

    def load(self, path, device):
        time.sleep(float(os.environ.get("MS_TEST_LOAD_S", "3")))

    def predict(self, x):
        time.sleep(float(os.environ.get("MS_TEST_PREDICT_S", "2")))
        return x * 2
'''


@dataclass
class Models:
    folder: Path
    mlp: torch.nn.Module


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """Made with the host's torch, mounted read-only at /models; readable by UID 10001."""
    folder = tmp_path_factory.mktemp("image-models")
    torch.manual_seed(7)
    mlp = TinyMLP().eval()
    meta = {"modelship.json": json.dumps({"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [-1, 4]}]})}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(mlp), str(folder / "mlp.pt"), _extra_files=meta)
    (folder / "slow_handlers.py").write_text(SLOW_HANDLER)
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)
    return Models(folder, mlp)


def _run_server(docker: Docker, image: str, models: Models, port: int, env: dict[str, str]) -> Container:
    args = [
        "--read-only", "--tmpfs", "/tmp:rw,mode=1777,size=256m",
        "--volume", f"{models.folder}:/models:ro",
        "--health-interval", "1s", "--health-timeout", "5s",  # the image's check, probed faster
        "--env", "MODELSHIP_HOST=127.0.0.1", "--env", f"MODELSHIP_PORT={port}",
        "--env", "MODELSHIP_DEVICE=cpu",
    ]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    return Container(docker, image, args).start()


@pytest.fixture(scope="module")
def mlp_server(docker: Docker, server_image: str, models: Models) -> Iterator[tuple[Container, str]]:
    port = free_port()
    c = _run_server(docker, server_image, models, port, {
        "MODELSHIP_MODEL_NAME": "mlp", "MODELSHIP_MODEL_URI": "file:///models/mlp.pt",
        "MODELSHIP_MODEL_FORMAT": "torchscript",
    })
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200 or _exited(c),
                   timeout=START_S, what="the mlp container's /health to answer 200")
        assert not _exited(c), f"server container exited:\n{c.logs()}"
        yield c, url
    finally:
        c.close()


def _exited(c: Container) -> bool:
    return not c.state()["Running"]


def test_image_metadata_follows_the_contract(docker: Docker, server_build) -> None:  # type: ignore[no-untyped-def]
    config = docker.inspect(server_build.tag, "image")["Config"]
    assert config["User"] == f"{UID}:{GID}"
    assert config["Entrypoint"] == ["modelship-server"]
    assert "8000/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "python3"]  # urllib, not curl
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] == server_build.revision
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.base.name"] == "modelship-base:bookworm"


def test_built_from_the_wheelhouse_without_network(server_build) -> None:  # type: ignore[no-untyped-def]
    assert server_build.built_offline(), f"expected `docker build --network none` in {server_build.log}"


def test_server_image_has_no_operator_dependencies(docker: Docker, server_image: str) -> None:
    probe = ("import importlib.util as u, shutil; "
             "print([m for m in ('kopf', 'kubernetes', 'modelship_operator', 'pip') if u.find_spec(m)]"
             " + [s for s in ('modelship-operator', 'kubectl-modelship', 'pip') if shutil.which(s)])")
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "python3", server_image, "-c", probe).stdout
    assert out.strip() == "[]"


def test_prediction_on_a_mounted_torchscript_model(mlp_server: tuple[Container, str], models: Models) -> None:
    _, url = mlp_server
    rows = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]
    response = httpx.post(f"{url}/v1/models/mlp:predict", json={"instances": rows}, timeout=30)
    assert response.status_code == 200, response.text
    with torch.no_grad():
        expected = models.mlp(torch.tensor(rows)).tolist()
    got = response.json()["predictions"]
    assert len(got) == 2
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, abs=1e-5)


def test_runs_as_uid_10001_on_a_read_only_root(docker: Docker, mlp_server: tuple[Container, str]) -> None:
    c, _ = mlp_server
    status = c.exec("cat", "/proc/1/status", check=True).stdout
    assert re.search(rf"^Uid:\s+{UID}\s+{UID}\s+{UID}\s+{UID}$", status, re.M), status
    assert re.search(rf"^Gid:\s+{GID}\s+{GID}\s+{GID}\s+{GID}$", status, re.M), status
    assert "modelship-server" in c.exec("cat", "/proc/1/cmdline", check=True).stdout  # exec form: PID 1
    assert docker.inspect(c.name)["HostConfig"]["ReadonlyRootfs"] is True
    denied = c.exec("python3", "-c", "open('/opt/venv/probe', 'w')")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert c.exec("python3", "-c", "open('/tmp/probe', 'w')").returncode == 0  # the one writable place


def test_docker_healthcheck_turns_healthy(mlp_server: tuple[Container, str]) -> None:
    c, _ = mlp_server
    health = wait_until(lambda: (h := c.state()["Health"])["Status"] == "healthy" and h, timeout=60,
                        what="Docker HEALTHCHECK status healthy")
    assert health["Log"][-1]["ExitCode"] == 0


def test_health_goes_503_then_200_and_docker_stop_drains(docker: Docker, server_image: str, models: Models) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    c = _run_server(docker, server_image, models, port, {
        "MODELSHIP_MODEL_NAME": "slow", "MODELSHIP_MODEL_URI": "file:///models/slow_handlers.py",
        "MODELSHIP_MODEL_FORMAT": "handler", "MODELSHIP_MODEL_HANDLER": "slow_handlers:SlowDoubler",
        "MODELSHIP_WARMUP": "false", "MS_TEST_LOAD_S": "4", "MS_TEST_PREDICT_S": "2",
        "MODELSHIP_MAX_BATCH_SIZE": "1",  # one request per model call: the drain has a queue to finish
    })
    try:
        # Loading: the listener is up and says why it is not ready.
        loading = wait_until(lambda: (r := httpx.get(f"{url}/health", timeout=2)).status_code == 503 and r,
                             timeout=START_S, what="/health 503 while the model loads")
        body = loading.json()
        assert body["status"] == "loading" and body["reason"], body
        assert c.state()["Health"]["Status"] == "starting"
        wait_until(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, timeout=60,
                   what="/health 200 after loading")

        # In flight: 4 requests, 2 s each, one at a time (8 s of work), then SIGTERM.
        n = 4
        results: list[int | str] = []
        lock = threading.Lock()

        def call(i: int) -> None:
            try:
                r = httpx.post(f"{url}/v1/models/slow:predict", json={"instances": [[i, i, i]]}, timeout=60)
                outcome: int | str = r.status_code if r.json()["predictions"] == [[2 * i] * 3] else r.text
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            with lock:
                results.append(outcome)

        with ThreadPoolExecutor(n) as pool:
            for i in range(n):
                pool.submit(call, i)
            wait_until(lambda: _in_flight(url) >= n, timeout=30, what=f"{n} requests in flight")
            stop = docker("stop", "--time", "30", c.name, timeout=60)
        assert stop.returncode == 0
        assert results == [200] * n, results  # every accepted request finished: zero failures
        state = c.state()
        assert state["ExitCode"] == 0, f"exit {state['ExitCode']} (137 = killed, SIGTERM ignored):\n{c.logs()}"
        assert "draining" in c.logs()
    finally:
        c.close()


def _in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=2).text
    match = re.search(r"^modelship_requests_in_flight (\S+)$", text, re.M)
    # The scrape itself is one of the requests in flight.
    return float(match.group(1)) - 1 if match else 0.0
