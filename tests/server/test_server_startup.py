"""Settings, device selection, model sources (local, file://, http(s) with sha256; s3 in test_server_s3.py) and load
failures: each shows up in /health as a reason a human can act on."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest
import torch
from server_support import ModelFiles, serve

from modelship_server import dataplane as dataplane_mod
from modelship_server import device as device_mod
from modelship_server.entry import main
from modelship_server.settings import load_settings

# -- settings -------------------------------------------------------------------------------


def test_settings_read_env_then_cli_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSHIP_MODEL_URI", "file:///models/a.pt2")
    monkeypatch.setenv("MODELSHIP_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("MODELSHIP_HALF_PRECISION", "true")
    monkeypatch.setenv("MODELSHIP_LOG_LEVEL", "DEBUG")
    settings = load_settings(["--max-batch-size", "4", "--no-half-precision", "--device", "cuda:1"])
    assert settings.model_uri == "file:///models/a.pt2"
    assert settings.max_batch_size == 4 and settings.half_precision is False
    assert settings.device == "cuda:1" and settings.log_level == "debug"
    assert settings.port == 8000 and settings.host == "0.0.0.0"


@pytest.mark.parametrize(
    "argv",
    [
        ["--device", "tpu"],
        ["--model-format", "onnx"],
        ["--model-format", "handler"],
        ["--model-sha256", "abc"],
        ["--max-batch-size", "0"],
    ],
)
def test_invalid_settings_are_rejected(argv: list[str]) -> None:
    with pytest.raises(pydantic.ValidationError):
        load_settings(argv)


def test_the_help_s_own_input_shape_example_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    """``--input-shape -1,3,32,32`` (what --help suggests) was refused by argparse ("expected one
    argument"): a value starting with ``-`` looked like a flag."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "-1,3,32,32" in capsys.readouterr().out
    assert load_settings(["--input-shape", "-1,3,32,32", "--no-warmup"]).shape() == [-1, 3, 32, 32]
    assert load_settings(["--input-shape", "-1", "--port", "9"]).shape() == [-1]
    with pytest.raises(SystemExit):  # a real flag in the value's place is still an error
        load_settings(["--input-shape", "--port", "9"])


def test_main_exits_with_a_readable_message_on_bad_settings() -> None:
    with pytest.raises(SystemExit, match="invalid settings"):
        main(["--port", "0"])


# -- device ---------------------------------------------------------------------------------


def test_device_plan_table() -> None:
    plan = device_mod.plan_device
    assert plan(
        "auto", require_gpu=False, gpu_fallback=False, half_precision=True, cuda_available=False
    ).device == torch.device("cpu")
    gpu = plan(
        "auto", require_gpu=True, gpu_fallback=False, half_precision=True, cuda_available=True, cuda_count=2
    )
    assert gpu.device == torch.device("cuda:0") and gpu.dtype == torch.float16 and gpu.unavailable is None
    assert plan(
        "cuda:1",
        require_gpu=False,
        gpu_fallback=False,
        half_precision=False,
        cuda_available=True,
        cuda_count=2,
    ).device == torch.device("cuda:1")
    assert "only 1 CUDA device" in (
        plan(
            "cuda:3",
            require_gpu=False,
            gpu_fallback=False,
            half_precision=False,
            cuda_available=True,
            cuda_count=1,
        ).unavailable
        or ""
    )
    missing = plan("auto", require_gpu=True, gpu_fallback=False, half_precision=False, cuda_available=False)
    assert missing.unavailable and "GPU is required" in missing.unavailable
    fallback = plan("cuda", require_gpu=False, gpu_fallback=True, half_precision=True, cuda_available=False)
    assert fallback.device == torch.device("cpu") and fallback.unavailable is None
    assert fallback.dtype == torch.float32 and any("gpu_fallback" in n for n in fallback.notes)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUDA device visible, whatever the machine has (the GPU machine runs these too)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.usefixtures("no_gpu")
def test_require_gpu_without_gpu_is_not_ready_with_reason(models: ModelFiles) -> None:
    with serve(model_uri=str(models.mlp_ts), require_gpu=True) as running:
        health = running.http.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "unavailable" and "GPU is required" in body["reason"]
        assert "gpu_fallback" in body["reason"]
        assert running.http.get("/health/live").status_code == 200  # alive: restarting won't help
        assert running.http.get("/v2/health/ready").status_code == 503
        predict = running.http.post("/v1/models/model:predict", json={"instances": [[1, 2, 3, 4]]})
        assert predict.status_code == 503 and "GPU is required" in predict.json()["detail"]
        assert predict.headers["Retry-After"] == "1"


@pytest.mark.usefixtures("no_gpu")
def test_gpu_fallback_serves_on_cpu_and_says_so(models: ModelFiles) -> None:
    with serve(
        model_uri=str(models.mlp_ts), require_gpu=True, gpu_fallback=True, half_precision=True
    ) as running:
        health = running.http.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["device"]["device"] == "cpu" and body["device"]["dtype"] == "float32"
        assert any("gpu_fallback=true" in note for note in body["notes"])


def test_explicit_cpu_wins_over_require_gpu() -> None:
    plan = device_mod.plan_device(
        "cpu", require_gpu=True, gpu_fallback=False, half_precision=False, cuda_available=False
    )
    assert plan.unavailable is None and plan.device == torch.device("cpu")
    assert any("require_gpu ignored" in note for note in plan.notes)


def test_exit_on_load_failure_writes_the_termination_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exits: list[int] = []
    monkeypatch.setattr(dataplane_mod.os, "_exit", exits.append)  # in-process: record, don't die
    monkeypatch.setattr(dataplane_mod.logging, "shutdown", lambda *args, **kwargs: None)
    log_file = tmp_path / "termination-log"
    settings = dict(
        model_uri=str(tmp_path / "missing.pt"), exit_on_load_failure=True, termination_log=str(log_file)
    )
    with serve(**settings):
        pass
    assert exits == [dataplane_mod.EXIT_LOAD_FAILED] == [3]
    assert "failed to load" in log_file.read_text() and "does not exist" in log_file.read_text()
    # The operator reads that exit code as "the model failed to load" (rollout evidence at once).
    from modelship_operator.core import builders

    assert builders.MODEL_LOAD_FAILED_EXIT_CODE == dataplane_mod.EXIT_LOAD_FAILED


def test_usable_cpus_respects_affinity_and_cgroup_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert device_mod._cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert device_mod._cgroup_cpu_limit(tmp_path) is None
    monkeypatch.setattr(device_mod, "_cgroup_cpu_limit", lambda: 1.2)
    monkeypatch.setattr(device_mod.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert device_mod.usable_cpus() == 2


# -- sources and load failures ----------------------------------------------------------------


@contextlib.contextmanager
def http_files(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """A loopback static file server; yields its base URL and the paths it served."""
    served: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            served.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_http_source_with_checksum_downloads_once(models: ModelFiles, tmp_path: Path) -> None:
    digest = hashlib.sha256(models.mlp_export.read_bytes()).hexdigest()
    with http_files(models.folder) as (base, served):
        settings = dict(
            model_uri=f"{base}/mlp.pt2",
            model_format="torch-export",
            model_sha256=digest,
            cache_dir=str(tmp_path / "cache"),
            require_sha256=True,
        )
        with serve(**settings) as running:
            assert running.http.get("/health").status_code == 200
        with serve(**settings) as running:  # second start: served from the cache
            assert running.http.get("/health").status_code == 200
    assert served.count("/mlp.pt2") == 1
    assert (tmp_path / "cache" / f"{digest}.pt2").exists()


def test_http_source_checksum_mismatch_is_not_ready(models: ModelFiles, tmp_path: Path) -> None:
    with http_files(models.folder) as (base, _):
        with serve(model_uri=f"{base}/mlp.pt", model_sha256="0" * 64, cache_dir=str(tmp_path)) as running:
            health = running.http.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "failed" and "sha256 mismatch" in health.json()["reason"]
    assert not [p for p in tmp_path.iterdir()], "a file that failed its checksum must not be cached"


def test_http_source_without_checksum_when_required(models: ModelFiles, tmp_path: Path) -> None:
    with http_files(models.folder) as (base, _):
        with serve(model_uri=f"{base}/mlp.pt", require_sha256=True, cache_dir=str(tmp_path)) as running:
            assert "no model_sha256" in running.http.get("/health").json()["reason"]
        with serve(model_uri=f"{base}/missing.pt", cache_dir=str(tmp_path)) as running:
            assert "404" in running.http.get("/health").json()["reason"]


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({}, "set MODELSHIP_MODEL_URI"),
        ({"model_uri": "/nonexistent/model.pt"}, "does not exist"),
        ({"model_uri": "gs://bucket/model.pt"}, "unsupported model uri scheme"),
        ({"model_uri": "MLP_BARE"}, "MODELSHIP_INPUT_SHAPE"),
        ({"model_uri": "MLP_TS", "model_format": "torch-export"}, "cannot load"),
        (
            {"model_uri": "HANDLERS", "model_format": "handler", "model_handler": "nope_module:X"},
            "cannot import handler",
        ),
    ],
)
def test_load_failures_report_a_reason(models: ModelFiles, settings: dict, words: str) -> None:
    paths = {"MLP_BARE": models.mlp_ts_bare, "MLP_TS": models.mlp_ts, "HANDLERS": models.handlers}
    if settings.get("model_uri") in paths:
        settings = {**settings, "model_uri": str(paths[settings["model_uri"]])}
    with serve(**settings) as running:
        health = running.http.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "failed" and words in health.json()["reason"], health.json()


def test_file_uri_sha256_and_explicit_input_shape(models: ModelFiles) -> None:
    digest = hashlib.sha256(models.mlp_ts_bare.read_bytes()).hexdigest()
    with serve(model_uri=models.mlp_ts_bare.as_uri(), model_sha256=digest, input_shape="-1,4") as running:
        assert running.http.get("/health").status_code == 200
        meta = running.http.get("/v2/models/model").json()
        assert meta["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": [-1, 4]}]
