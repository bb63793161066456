"""Model sources: a local path, ``file://`` (mounted volume/PVC), ``http(s)://`` or ``s3://``.

Downloads stream in chunks of :data:`CHUNK` bytes into a temporary file in the cache dir
(an emptyDir in a pod: the root file system is read-only), are hashed and counted while
streaming, and are renamed into place only when the size matches what the server announced
and the sha256 (when given) matches, so a half-written or tampered file is never loaded and
never cached. The whole file is never held in memory. One process downloads at a time (a
lock on the cache dir): the other front ends of the pod wait and find it cached, so a
pod downloads its model once, and a restarted container (same pod, same emptyDir) not at all.

``s3://bucket/key`` is a SigV4-signed GET (:mod:`.s3`, stdlib only), with credentials from
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (the operator wires them from a Secret) or
web identity (``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``, exchanged with STS).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import s3

log = logging.getLogger("modelship.sources")

CHUNK = 1 << 20
"""Bytes read and written at a time: what a download holds in memory, whatever the file size."""

PROGRESS_LOG_S = 5.0
"""A download logs its progress at most this often (and when it ends)."""


class SourceError(Exception):
    """The model file could not be obtained or failed its checks (size, sha256)."""


@dataclass(frozen=True)
class S3Options:
    """Where an ``s3://`` source is served from (settings ``s3_*``)."""

    endpoint: str | None = None
    """An S3-compatible endpoint URL (MinIO, Ceph, R2, ...); None: AWS for ``region``."""
    region: str | None = None
    """The region requests are signed for; None: ``AWS_REGION``/the profile's, else us-east-1."""
    path_style: bool = False
    """``endpoint/bucket/key`` instead of ``bucket.endpoint/key`` (most S3-compatible servers)."""


class Progress:
    """How far a download is: written by the downloading thread, read by /health (plain
    attribute writes of ints; a reader sees a consistent enough pair)."""

    def __init__(self) -> None:
        self.uri: str | None = None
        self.bytes_done = 0
        self.bytes_total: int | None = None
        self.state = "idle"  # idle -> downloading -> verifying -> done | failed | cached
        self._started = 0.0
        self._lock = threading.Lock()

    def begin(self, uri: str, total: int | None) -> None:
        with self._lock:
            self.uri, self.bytes_done, self.bytes_total, self.state = uri, 0, total, "downloading"
            self._started = time.monotonic()

    def advance(self, n: int) -> None:
        self.bytes_done += n

    def end(self, state: str) -> None:
        self.state = state

    @property
    def active(self) -> bool:
        return self.state in ("downloading", "verifying")

    def describe(self) -> str:
        """``downloading s3://b/k: 12.0 of 100.0 MiB (12%)``, for /health's reason and the log."""
        done = self.bytes_done / (1 << 20)
        if self.bytes_total:
            pct = 100 * self.bytes_done // self.bytes_total
            return f"{self.state} {self.uri}: {done:.1f} of {self.bytes_total / (1 << 20):.1f} MiB ({pct}%)"
        return f"{self.state} {self.uri}: {done:.1f} MiB"

    def as_dict(self) -> dict[str, Any]:
        """The ``download`` object of /health."""
        return {
            "uri": self.uri,
            "state": self.state,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "seconds": round(time.monotonic() - self._started, 1) if self._started else 0.0,
        }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check(path: Path, expected: str | None) -> None:
    if expected is None or path.is_dir():
        return
    actual = sha256_of(path)
    if actual != expected.lower():
        raise SourceError(f"sha256 mismatch for {path}: expected {expected.lower()}, got {actual}")


def resolve(
    uri: str,
    *,
    cache_dir: str,
    sha256: str | None = None,
    require_sha256: bool = False,
    timeout_s: float = 300.0,
    s3: S3Options | None = None,
    progress: Progress | None = None,
) -> Path:
    """Return a local path for ``uri``, downloading (once) when it is http(s) or s3."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else uri)
        if not path.exists():
            raise SourceError(f"model file {path} does not exist (uri {uri})")
        _check(path, sha256)
        return path
    if parsed.scheme not in ("http", "https", "s3"):
        raise SourceError(f"unsupported model uri scheme {parsed.scheme!r} in {uri}")
    if require_sha256 and sha256 is None:
        raise SourceError(f"require_sha256 is set but no model_sha256 was given for {uri}")
    if parsed.scheme == "s3" and (not parsed.netloc or not parsed.path.strip("/")):
        raise SourceError(f"an s3 uri is s3://bucket/key, got {uri}")
    fetch = _S3Fetch(uri, s3 or S3Options(), timeout_s) if parsed.scheme == "s3" else _HttpFetch(uri, timeout_s)
    return _download(uri, fetch, Path(cache_dir), sha256, progress or Progress())


def _cache_target(uri: str, cache_dir: Path, sha256: str | None) -> Path:
    suffix = Path(urllib.parse.urlparse(uri).path).suffix
    key = sha256.lower() if sha256 else "url-" + hashlib.sha256(uri.encode()).hexdigest()[:32]
    return cache_dir / f"{key}{suffix}"


@contextlib.contextmanager
def _exclusive(cache_dir: Path) -> Iterator[None]:
    """One downloader at a time across the pod's processes (they share the cache dir): a
    lock on the directory itself, so no lock file is left behind."""
    fd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _cached(uri: str, target: Path, sha256: str | None) -> bool:
    if not target.exists():
        return False
    if sha256 is None:
        log.info("model %s: using cached %s", uri, target)
        return True
    if sha256_of(target) == sha256.lower():
        log.info("model %s: cache hit %s (checksum ok)", uri, target)
        return True
    log.warning("cached %s failed its checksum; downloading again", target)
    target.unlink()
    return False


def _download(uri: str, fetch: _Fetch, cache_dir: Path, sha256: str | None, progress: Progress) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = _cache_target(uri, cache_dir, sha256)
    with _exclusive(cache_dir):
        if _cached(uri, target, sha256):
            progress.begin(uri, target.stat().st_size)
            progress.advance(target.stat().st_size)
            progress.end("cached")
            return target
        try:
            _stream(uri, fetch, target, sha256, progress)
        except BaseException:
            progress.end("failed")
            raise
    return target


def _stream(uri: str, fetch: _Fetch, target: Path, sha256: str | None, progress: Progress) -> None:
    """Chunks from ``fetch`` into a temporary file, hashed and counted; checked, then renamed."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".download-")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, fetch.open() as (total, chunks):
            progress.begin(uri, total)
            log.info("model %s: downloading %s", uri, f"{total} bytes" if total is not None else "(size unknown)")
            logged = time.monotonic()
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
                progress.advance(len(chunk))
                if time.monotonic() - logged >= PROGRESS_LOG_S:
                    logged = time.monotonic()
                    log.info("model %s", progress.describe())
        progress.end("verifying")
        done = progress.bytes_done
        if total is not None and done != total:
            raise SourceError(f"size mismatch for {uri}: expected {total} bytes, got {done}")
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise SourceError(f"sha256 mismatch for {uri}: expected {sha256.lower()}, got {actual}")
        os.replace(tmp, target)
        progress.end("done")
        log.info("model %s: downloaded %d bytes to %s (sha256 %s)", uri, done, target, actual)
    finally:
        tmp.unlink(missing_ok=True)


Chunks = tuple[int | None, Iterable[bytes]]
"""(size in bytes as the server announced it, or None; the body's chunks)."""


class _Fetch:
    """One source's GET, as a context manager of :data:`Chunks`; failures are SourceErrors."""

    def open(self) -> contextlib.AbstractContextManager[Chunks]:
        raise NotImplementedError


class _HttpFetch(_Fetch):
    def __init__(self, uri: str, timeout_s: float) -> None:
        self.uri, self.timeout_s = uri, timeout_s

    @contextlib.contextmanager
    def open(self) -> Iterator[Chunks]:
        request = urllib.request.Request(self.uri, headers={"User-Agent": "modelship-server"})
        try:
            # bandit B310: resolve() hands only http(s) uris to this class (file: never reaches here).
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # nosec B310
                length = resp.headers.get("Content-Length")
                yield (int(length) if length and length.isdigit() else None), iter(lambda: resp.read(CHUNK), b"")
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(f"download of {self.uri} failed: {exc}") from exc


#: S3 error codes whose cause is the credentials (or their rights), not the object.
_S3_DENIED = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "HTTP403"}
)


class _S3Fetch(_Fetch):
    def __init__(self, uri: str, options: S3Options, timeout_s: float) -> None:
        parsed = urllib.parse.urlparse(uri)
        self.uri, self.options, self.timeout_s = uri, options, timeout_s
        self.bucket, self.key = parsed.netloc, urllib.parse.unquote(parsed.path.lstrip("/"))

    def _why(self, error: s3.S3Error) -> str:
        code, message = error.code, error.message
        if code == "NoCredentials":
            return (
                f"no S3 credentials ({message}): give model.s3.credentials (a Secret or web identity), "
                "or run where AWS_ROLE_ARN/AWS_WEB_IDENTITY_TOKEN_FILE are injected"
            )
        if code in ("NoSuchKey", "HTTP404"):
            return f"the object does not exist ({code})"
        if code == "NoSuchBucket":
            return f"the bucket {self.bucket} does not exist ({code})"
        if code in _S3_DENIED:
            return f"access denied: check the credentials and their rights on the object ({code}: {message})"
        return f"{code}: {message}" if message else code

    @contextlib.contextmanager
    def open(self) -> Iterator[Chunks]:
        where = self.uri + (f" at {self.options.endpoint}" if self.options.endpoint else "")
        try:
            total, chunks = s3.get_object(
                self.bucket,
                self.key,
                endpoint=self.options.endpoint,
                region=self.options.region,
                path_style=self.options.path_style,
                timeout_s=self.timeout_s,
                chunk=CHUNK,
            )
            try:
                yield total, chunks
            finally:
                chunks.close()
        except s3.S3Error as exc:
            raise SourceError(f"download of {where} failed: {self._why(exc)}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(f"download of {where} failed: {type(exc).__name__}: {exc}") from exc
