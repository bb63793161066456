"""Model sources: a local path, ``file://`` (mounted volume/PVC), or ``http(s)://`` (cached).

Downloads go to a temporary file in the cache dir, are hashed while streaming, and are
renamed into place only when the checksum matches, so a half-written or tampered file is
never loaded and never cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

log = logging.getLogger("modelship.sources")

_CHUNK = 1 << 20


class SourceError(Exception):
    """The model file could not be obtained or failed its checksum."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
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
) -> Path:
    """Return a local path for ``uri``, downloading (once) when it is http(s)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else uri)
        if not path.exists():
            raise SourceError(f"model file {path} does not exist (uri {uri})")
        _check(path, sha256)
        return path
    if parsed.scheme not in ("http", "https"):
        raise SourceError(f"unsupported model uri scheme {parsed.scheme!r} in {uri}")
    if require_sha256 and sha256 is None:
        raise SourceError(f"require_sha256 is set but no model_sha256 was given for {uri}")
    return _download(uri, Path(cache_dir), sha256, timeout_s)


def _download(uri: str, cache_dir: Path, sha256: str | None, timeout_s: float) -> Path:
    suffix = Path(urllib.parse.urlparse(uri).path).suffix
    key = sha256.lower() if sha256 else "url-" + hashlib.sha256(uri.encode()).hexdigest()[:32]
    target = cache_dir / f"{key}{suffix}"
    if target.exists():
        if sha256 is None:
            log.info("model %s: using cached %s", uri, target)
            return target
        if sha256_of(target) == sha256.lower():
            log.info("model %s: cache hit %s (checksum ok)", uri, target)
            return target
        log.warning("cached %s failed its checksum; downloading again", target)
        target.unlink()
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=".download-")
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(uri, headers={"User-Agent": "modelship-server"})
        # bandit B310: the scheme is checked above (http or https only; file: never reaches here).
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout_s) as resp:  # nosec B310
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise SourceError(f"sha256 mismatch for {uri}: expected {sha256.lower()}, got {actual}")
        shutil.move(str(tmp), target)
        log.info("model %s: downloaded to %s (sha256 %s)", uri, target, actual)
        return target
    except (urllib.error.URLError, OSError) as exc:
        raise SourceError(f"download of {uri} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
