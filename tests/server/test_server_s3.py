"""s3:// model sources against a real MinIO (tests/server/s3_support.py): download, size and
sha256 checks, the reasons /health gives for bad credentials, a missing object or a wrong
checksum, the load-failure exit the operator reads, progress, and memory that does not grow
with the model file."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from s3_support import Minio, SlowLink
from server_support import ModelFiles, free_port, serve, wait_until

from modelship_server import dataplane as dataplane_mod
from modelship_server import s3, sources

BUCKET = "models"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the AWS_* variables a test sets."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)


def _credentials(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def s3_settings(minio: Minio, key: str, cache: Path, **extra: Any) -> dict[str, Any]:
    return dict(
        model_uri=f"s3://{BUCKET}/{key}",
        s3_endpoint=minio.endpoint,
        s3_path_style=True,
        cache_dir=str(cache),
        **extra,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_s3_source_is_downloaded_verified_and_served_then_cached(
    models: ModelFiles, minio: Minio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, size, digest = "mlp/v1/model.pt2", models.mlp_export.stat().st_size, sha256(models.mlp_export)
    minio.put(BUCKET, key, models.mlp_export)
    _credentials(monkeypatch, minio.env())
    cache = tmp_path / "cache"
    with serve(**s3_settings(minio, key, cache, model_sha256=digest, model_format="torch-export")) as running:
        health = running.http.get("/health")
        assert health.status_code == 200, health.text
        download = health.json()["model"]["download"]
        assert (download["state"], download["bytes_done"], download["bytes_total"]) == ("done", size, size)
        rows = [[0.5, -1.0, 0.25, 2.0]]
        got = running.http.post("/v1/models/model:predict", json={"instances": rows}).json()["predictions"]
        with torch.no_grad():
            want = models.mlp(torch.tensor(rows)).numpy()
        np.testing.assert_allclose(np.array(got), want, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in cache.iterdir()) == [f"{digest}.pt2"]

    # A restarted container (same pod, same emptyDir) does not download again: with the object
    # gone from the bucket it still serves, from the verified copy.
    minio.delete(BUCKET, key)
    with serve(**s3_settings(minio, key, cache, model_sha256=digest, model_format="torch-export")) as running:
        health = running.http.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["model"]["download"]["state"] == "cached"


@pytest.mark.parametrize(
    ("credentials", "words"),
    [
        ({"secret_key": "not-the-secret"}, "SignatureDoesNotMatch"),
        ({"access_key": "nobody", "secret_key": "nothing"}, "InvalidAccessKeyId"),
    ],
    ids=["wrong-secret", "unknown-key-id"],
)
def test_bad_credentials_are_named_in_health(
    models: ModelFiles, minio: Minio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    credentials: dict[str, str], words: str,
) -> None:
    minio.put(BUCKET, "mlp/creds.pt", models.mlp_ts)
    _credentials(monkeypatch, minio.env(**credentials))
    with serve(**s3_settings(minio, "mlp/creds.pt", tmp_path)) as running:
        health = running.http.get("/health")
    body = health.json()
    assert health.status_code == 503 and body["status"] == "failed"
    assert "access denied" in body["reason"] and words in body["reason"], body["reason"]
    assert f"s3://{BUCKET}/mlp/creds.pt" in body["reason"]


@pytest.mark.parametrize(
    ("uri_key", "words"),
    [("mlp/absent.pt", "the object does not exist (NoSuchKey)"), (None, "does not exist (NoSuchBucket)")],
    ids=["missing-key", "missing-bucket"],
)
def test_a_missing_object_is_named_in_health(
    minio: Minio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri_key: str | None, words: str
) -> None:
    _credentials(monkeypatch, minio.env())
    settings = s3_settings(minio, uri_key or "x.pt", tmp_path)
    if uri_key is None:
        settings["model_uri"] = "s3://no-such-bucket/x.pt"
    with serve(**settings) as running:
        health = running.http.get("/health")
    assert health.status_code == 503 and words in health.json()["reason"], health.json()["reason"]


def test_a_wrong_sha256_is_refused_and_nothing_is_cached(
    models: ModelFiles, minio: Minio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    minio.put(BUCKET, "mlp/sha.pt", models.mlp_ts)
    _credentials(monkeypatch, minio.env())
    with serve(**s3_settings(minio, "mlp/sha.pt", tmp_path, model_sha256="0" * 64)) as running:
        health = running.http.get("/health")
    reason = health.json()["reason"]
    assert health.status_code == 503 and "sha256 mismatch" in reason and sha256(models.mlp_ts) in reason
    assert [p.name for p in tmp_path.iterdir()] == []  # no partial file


def test_no_credentials_at_all_say_what_to_give(minio: Minio, tmp_path: Path) -> None:
    with serve(**s3_settings(minio, "mlp/x.pt", tmp_path)) as running:
        reason = running.http.get("/health").json()["reason"]
    assert "no S3 credentials" in reason and "model.s3.credentials" in reason


def _server_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELSHIP_", "AWS_"))}
    env.update(extra)
    return env


def test_a_bad_source_ends_the_process_with_the_load_failure_code_and_its_reason(
    models: ModelFiles, minio: Minio, tmp_path: Path
) -> None:
    """What a pod does (the operator sets MODELSHIP_EXIT_ON_LOAD_FAILURE): exit code 3, the reason
    in the termination message, which the operator's status quotes (ModelLoadFailed)."""
    minio.put(BUCKET, "mlp/exit.pt", models.mlp_ts)
    log = tmp_path / "termination-log"
    env = _server_env({
        **minio.env(secret_key="wrong"),
        "MODELSHIP_MODEL_URI": f"s3://{BUCKET}/mlp/exit.pt",
        "MODELSHIP_S3_ENDPOINT": minio.endpoint,
        "MODELSHIP_S3_PATH_STYLE": "true",
        "MODELSHIP_CACHE_DIR": str(tmp_path / "cache"),
        "MODELSHIP_EXIT_ON_LOAD_FAILURE": "true",
        "MODELSHIP_TERMINATION_LOG": str(log),
    })
    proc = subprocess.run(
        [sys.executable, "-m", "modelship_server", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env, capture_output=True, timeout=90,
    )
    assert proc.returncode == dataplane_mod.EXIT_LOAD_FAILED, proc.stderr.decode()[-2000:]
    message = log.read_text()
    assert "failed to load" in message and "access denied" in message and "SignatureDoesNotMatch" in message


def _memory_kib(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


@pytest.fixture
def big_object(minio: Minio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A 192 MiB object of random bytes (no model: only the download is looked at)."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    size = 192 << 20
    with path.open("wb") as fh:
        for _ in range(size >> 20):
            fh.write(os.urandom(1 << 20))
    minio.put(BUCKET, "big/model.pt", path)
    path.unlink()
    yield "big/model.pt", size
    minio.delete(BUCKET, "big/model.pt")


STREAMING_LIMIT_MIB = 48
"""Most the server's peak RSS may grow while it downloads a 192 MiB file: a few chunks of
sources.CHUNK and the HTTP client's buffers, never the file."""


def test_a_download_streams_to_disk_and_shows_its_progress(
    minio: Minio, big_object: tuple[str, int], tmp_path: Path
) -> None:
    key, size = big_object
    link = SlowLink(int(minio.endpoint.rsplit(":", 1)[1]), allowance=16 << 20)
    port = free_port()
    env = _server_env({
        **minio.env(),
        "MODELSHIP_MODEL_URI": f"s3://{BUCKET}/{key}",
        "MODELSHIP_MODEL_SHA256": "0" * 64,  # refused after the download: never loaded
        "MODELSHIP_S3_ENDPOINT": link.endpoint,
        "MODELSHIP_S3_PATH_STYLE": "true",
        "MODELSHIP_CACHE_DIR": str(tmp_path / "cache"),
    })
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelship_server", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/health"

    def health() -> dict[str, Any]:
        try:
            return httpx.get(url, timeout=2).json()
        except httpx.HTTPError:
            return {}

    try:
        wait_until(link.held, timeout=90, what="the download to reach the link's allowance")
        wait_until(lambda: health().get("model", {}).get("download", {}).get("bytes_done", 0) > 0,
                   timeout=30, what="/health to show the download")
        halfway = health()
        download = halfway["model"]["download"]
        assert halfway["status"] == "loading" and download["state"] == "downloading"
        assert 0 < download["bytes_done"] < size and download["bytes_total"] == size
        assert halfway["reason"].startswith(f"downloading s3://{BUCKET}/{key}: ") and "of 192.0 MiB" in halfway["reason"]
        before = _memory_kib(proc.pid)["VmRSS"]
        partial = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".download-")]
        assert len(partial) == 1 and partial[0].stat().st_size > 0  # on disk, not in memory

        link.open()
        wait_until(lambda: health().get("status") == "failed", timeout=120, what="the download to end")
        done = health()
        assert done["model"]["download"]["bytes_done"] == size and "sha256 mismatch" in done["reason"]
        grown_mib = (_memory_kib(proc.pid)["VmHWM"] - before) / 1024
        print(f"peak RSS growth during a 192 MiB download: {grown_mib:.1f} MiB (limit {STREAMING_LIMIT_MIB})")
        assert grown_mib < STREAMING_LIMIT_MIB, f"peak RSS grew {grown_mib:.0f} MiB for a 192 MiB download"
    finally:
        link.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def test_s3_uri_must_name_a_key(tmp_path: Path) -> None:
    with pytest.raises(sources.SourceError, match="s3://bucket/key"):
        sources.resolve("s3://bucket-only", cache_dir=str(tmp_path))


@pytest.mark.parametrize(
    ("key_id", "secret", "method_path", "headers", "service", "signature"),
    [
        # Amazon S3 API reference, "Signature calculations for the Authorization header", GET Object.
        (
            "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ("GET", "/test.txt"),
            {"host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9",
             "x-amz-content-sha256": s3.EMPTY_SHA256, "x-amz-date": "20130524T000000Z"},
            "s3", "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
        # The AWS Signature Version 4 test suite, get-vanilla.
        (
            "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ("GET", "/"),
            {"host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z"},
            "service", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
    ],
    ids=["s3-get-object", "get-vanilla"],
)
def test_sigv4_matches_the_published_vectors(
    key_id: str, secret: str, method_path: tuple[str, str], headers: dict[str, str], service: str, signature: str
) -> None:
    header = s3.authorization(*method_path, {}, headers, s3.EMPTY_SHA256, s3.Credentials(key_id, secret),
                              "us-east-1", service)
    assert header.endswith(f"Signature={signature}")
    assert f"Credential={key_id}/{headers['x-amz-date'][:8]}/us-east-1/{service}/aws4_request" in header


def test_locations_path_style_and_virtual_hosted() -> None:
    assert s3.locate("models", "a b/m.pt", "http://127.0.0.1:9000", "us-east-1", True).url == \
        "http://127.0.0.1:9000/models/a%20b/m.pt"
    assert s3.locate("models", "m.pt", None, "eu-west-1", False).url == "https://models.s3.eu-west-1.amazonaws.com/m.pt"


def test_web_identity_goes_to_sts_and_its_refusal_is_named(
    minio: Minio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workload identity: the projected token is exchanged with STS (here MinIO's STS, which has
    no OpenID provider configured, so it refuses: the reason must say who refused what)."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtb2RlbHNoaXAifQ.c2ln\n")
    role = "arn:aws:iam::123456789012:role/models-reader"
    _credentials(monkeypatch, {"AWS_ROLE_ARN": role, "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
                               "AWS_ENDPOINT_URL_STS": minio.endpoint})
    with serve(**s3_settings(minio, "mlp/x.pt", tmp_path / "cache")) as running:
        reason = running.http.get("/health").json()["reason"]
    assert f"STS at {minio.endpoint} refused AssumeRoleWithWebIdentity for {role}" in reason, reason
