"""A real S3-compatible server for the tests: MinIO, built from Go modules by
``hack/cluster/build.sh minio`` (``make setup`` builds it), started on 127.0.0.1 with its data
in a tmp dir. Plus :class:`SlowLink`, a TCP relay in front of it that lets the test hold a download
halfway (a slow network, not a fake S3: every byte still comes from MinIO).

Objects are written with SigV4-signed requests made here with the server's own signer
(``modelship_server.s3.authorization``); MinIO checks every signature, so a signing bug fails
the setup as loudly as the download."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import os
import secrets
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from modelship_server import s3

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


def minio_binary() -> Path:
    """The cached binary's path (``tool_path minio`` of hack/cluster/versions.sh)."""
    out = subprocess.run(
        ["bash", "-c", f"source {ROOT}/hack/cluster/versions.sh && tool_path minio"],
        check=True,
        capture_output=True,
        text=True,
    )
    path = Path(out.stdout.strip())
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is missing: run `make setup` (or `bash hack/cluster/build.sh minio`)")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Minio:
    endpoint: str
    access_key: str
    secret_key: str
    proc: subprocess.Popen[bytes] | None = None
    """The process started here; None for a MinIO reached otherwise (the node tier's pod)."""

    def request(self, method: str, path: str, body: BinaryIO | bytes | None = None, length: int = 0) -> int:
        """A signed request with the root user's keys (path-style); returns the HTTP status.
        A 503 (S3's "slow down"; MinIO's answer while it is still settling or short of disk)
        is retried for up to 30 s, as S3 clients do."""
        deadline = time.monotonic() + 30
        while True:
            status = self._request_once(method, path, body, length)
            if status != 503 or time.monotonic() > deadline:
                return status
            if hasattr(body, "seek"):
                body.seek(0)  # type: ignore[union-attr]
            time.sleep(0.5)

    def _request_once(self, method: str, path: str, body: BinaryIO | bytes | None, length: int) -> int:
        where = urllib.parse.urlsplit(self.endpoint)
        headers = {
            "host": where.netloc,
            "x-amz-date": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
            "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        }
        creds = s3.Credentials(self.access_key, self.secret_key)
        headers["Authorization"] = s3.authorization(method, path, {}, headers, "UNSIGNED-PAYLOAD", creds, REGION, "s3")
        conn = http.client.HTTPConnection(where.netloc, timeout=120)
        try:
            conn.request(method, path, body=body, headers={**headers, "Content-Length": str(length)})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def put(self, bucket: str, key: str, source: Path) -> None:
        """Upload a file (streamed from disk), creating the bucket when needed."""
        status = self.request("PUT", f"/{bucket}")
        assert status in (200, 409), f"create bucket {bucket}: HTTP {status}"  # 409: it exists
        with source.open("rb") as fh:
            status = self.request("PUT", f"/{bucket}/{urllib.parse.quote(key)}", fh, source.stat().st_size)
        assert status == 200, f"put {bucket}/{key}: HTTP {status}"

    def delete(self, bucket: str, key: str) -> None:
        status = self.request("DELETE", f"/{bucket}/{urllib.parse.quote(key)}")
        assert status == 204, f"delete {bucket}/{key}: HTTP {status}"

    def env(self, access_key: str | None = None, secret_key: str | None = None) -> dict[str, str]:
        """What the operator gives the server from a Secret: the standard AWS variables."""
        return {
            "AWS_ACCESS_KEY_ID": access_key or self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
        }


@contextlib.contextmanager
def run_minio(data: Path, address: str = "127.0.0.1") -> Iterator[Minio]:
    """``minio server`` on a free loopback port until the block ends."""
    port = _free_port()
    access, secret = "modelship-test", secrets.token_hex(16)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(data),
        "MINIO_ROOT_USER": access,
        "MINIO_ROOT_PASSWORD": secret,
        "MINIO_BROWSER": "off",  # no console listener
        "MINIO_UPDATE": "off",  # never looks for a newer release (no traffic off the machine)
        "MINIO_REGION": REGION,
    }
    (data / "export").mkdir(parents=True, exist_ok=True)
    log = (data / "minio.log").open("wb")
    proc = subprocess.Popen(
        [str(minio_binary()), "server", "--quiet", "--address", f"{address}:{port}",
         "--certs-dir", str(data / "certs"), str(data / "export")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://{address}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"minio exited ({proc.returncode}): {(data / 'minio.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{endpoint}/minio/health/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"minio not ready in 60 s: {(data / 'minio.log').read_text()}")
            time.sleep(0.1)
        yield Minio(endpoint, access, secret, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class SlowLink:
    """A TCP relay on loopback in front of ``target``: requests pass freely, responses only up to
    ``allowance`` bytes (over all connections) until :meth:`open`. It lets a test look at a
    download while it is halfway, however fast the machine."""

    def __init__(self, target_port: int, allowance: int) -> None:
        self.target_port = target_port
        self.allowance = allowance
        self.passed = 0
        self._opened = threading.Event()
        self._cond = threading.Condition()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._spawn(self._accept)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, fn: Any, *args: Any) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._spawn(self._pump, client, upstream, False)
            self._spawn(self._pump, upstream, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, metered: bool) -> None:
        try:
            while data := src.recv(64 * 1024):
                if metered:
                    with self._cond:
                        self._cond.wait_for(lambda: self._opened.is_set() or self.passed < self.allowance)
                        self.passed += len(data)
                        self._cond.notify_all()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def held(self) -> bool:
        """The allowance is used up: the download waits for :meth:`open`."""
        return self.passed >= self.allowance and not self._opened.is_set()

    def open(self) -> None:
        with self._cond:
            self._opened.set()
            self._cond.notify_all()

    def close(self) -> None:
        self._closing = True
        self.open()
        self._listener.close()
