"""Helpers for the server tier: tiny real torch models written to tmp dirs, and the real app
served by uvicorn on a loopback port (in a thread, or as a subprocess for signal tests)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch
import uvicorn

from modelship_server import create_app
from modelship_server.entry import uvicorn_config, watch_requests
from modelship_server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class TinyMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyCNN(torch.nn.Module):
    """1×12×12 images → 5 classes; small enough for CPU tests, real conv/pool/linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2),
        )
        self.head = torch.nn.Linear(16 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


MLP_SHAPE = [-1, 4]
CNN_SHAPE = [-1, 1, 12, 12]


def _meta(shape: list[int]) -> dict[str, str]:
    return {
        "modelship.json": json.dumps({"inputs": [{"name": "input__0", "datatype": "FP32", "shape": shape}]})
    }


@dataclass
class ModelFiles:
    """Every model file the tier uses, plus the eager modules to compute expected outputs."""

    folder: Path
    mlp: torch.nn.Module
    cnn: torch.nn.Module
    mlp_ts: Path
    mlp_ts_bare: Path
    mlp_export: Path
    cnn_ts: Path
    cnn_export: Path
    handlers: Path


def build_models(folder: Path) -> ModelFiles:
    torch.manual_seed(1234)
    mlp, cnn = TinyMLP().eval(), TinyCNN().eval()
    files = ModelFiles(
        folder,
        mlp,
        cnn,
        folder / "mlp.pt",
        folder / "mlp-bare.pt",
        folder / "mlp.pt2",
        folder / "cnn.pt",
        folder / "cnn.pt2",
        folder / "handlers",
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still served
        torch.jit.save(torch.jit.script(mlp), str(files.mlp_ts), _extra_files=_meta(MLP_SHAPE))
        torch.jit.save(torch.jit.script(mlp), str(files.mlp_ts_bare))
        torch.jit.save(
            torch.jit.trace(cnn, torch.zeros(2, 1, 12, 12)), str(files.cnn_ts), _extra_files=_meta(CNN_SHAPE)
        )
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.export.save(
            torch.export.export(mlp, (torch.zeros(2, 4),), dynamic_shapes={"x": {0: batch}}),
            str(files.mlp_export),
        )
        torch.export.save(
            torch.export.export(cnn, (torch.zeros(2, 1, 12, 12),), dynamic_shapes={"x": {0: batch}}),
            str(files.cnn_export),
        )
    files.handlers.mkdir()
    (files.handlers / "test_handlers.py").write_text(HANDLERS)
    shutil.copy(files.cnn_ts, files.handlers / "cnn.pt")
    return files


HANDLERS = '''
"""Handlers for the server tier (format=handler), loaded from this folder by the server."""
import os
import time
import warnings

import torch


class Doubler:
    """2*x, slowly (MS_TEST_DELAY_S per call), and refusing rows that start with -999."""

    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]

    def load(self, path, device):
        self.delay = float(os.environ.get("MS_TEST_DELAY_S", "0.05"))
        self.calls = 0

    def predict(self, x):
        self.calls += 1
        time.sleep(self.delay)
        if bool((x[:, 0] == -999).any()):
            raise ValueError("poisoned row")
        return x * 2


class SlowLoad:
    """A load that takes MS_TEST_LOAD_S (a model streaming in), then 2*x."""

    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]

    def load(self, path, device):
        time.sleep(float(os.environ.get("MS_TEST_LOAD_S", "60")))

    def predict(self, x):
        return x * 2


class Leaky:
    """2*x, keeping 8 KiB per call and an open file every 50th: a leak for the soak to find."""

    inputs = [{"name": "input__0", "datatype": "FP32", "shape": [-1, 4]}]

    def load(self, path, device):
        self.kept = []

    def predict(self, x):
        self.kept.append(bytearray(8192))
        if len(self.kept) % 50 == 0:
            self.kept.append(open(os.devnull))
        return x * 2


class SlowCNN:
    """A TorchScript CNN behind a delay, so concurrent requests pile up into batches."""

    inputs = [{"name": "input__0", "datatype": "FP32", "shape": [-1, 1, 12, 12]}]

    def load(self, path, device):
        warnings.simplefilter("ignore", FutureWarning)
        self.model = torch.jit.load(os.path.join(os.path.dirname(path), "cnn.pt"), map_location=device)
        self.batches = []

    def predict(self, x):
        time.sleep(0.2)  # long enough for concurrent callers to queue up even on a busy machine
        self.batches.append(x.shape[0])
        return self.model(x)
'''


@dataclass
class Running:
    url: str
    app: Any
    _http: httpx.Client | None = None

    @property
    def dataplane(self) -> Any:
        return self.app.state.dataplane

    @property
    def http(self) -> httpx.Client:
        """One shared client: building an httpx.Client costs ~0.2 s (TLS context)."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=30)
        return self._http

    def client(self) -> contextlib.nullcontext[httpx.Client]:
        return contextlib.nullcontext(self.http)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def serve(wait_ready: bool = True, **settings: Any) -> Iterator[Running]:
    """The real app under uvicorn on 127.0.0.1:<free port>, in a thread of this process."""
    settings.setdefault("host", "127.0.0.1")
    resolved = Settings(**settings)
    app = create_app(resolved)
    config = uvicorn_config(app, resolved, port=0, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    watch_requests(server, app)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), what="uvicorn to start")
        if not server.started:
            raise AssertionError("uvicorn did not start (see log above)")
        port = server.servers[0].sockets[0].getsockname()[1]
        running = Running(f"http://127.0.0.1:{port}", app)
        if wait_ready:
            wait_until(lambda: running.dataplane.state != "loading", what="model load")
        try:
            yield running
        finally:
            running.close()
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_subprocess(
    env_extra: dict[str, str], args: list[str], ready_timeout_s: float = 120
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m modelship_server`` as its own process (for real SIGTERM handling).
    ``ready_timeout_s``: the long runs allow more still (two workers each importing torch and loading
    the model on a shared 2-core machine took over a minute)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_")}
    env.update(env_extra)
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelship_server", "--host", "127.0.0.1", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"server exited early: {proc.stdout.read().decode() if proc.stdout else ''}"
                )
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=ready_timeout_s, what="subprocess server readiness")
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
