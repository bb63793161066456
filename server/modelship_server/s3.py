"""A small S3 GET client, stdlib only: AWS Signature Version 4, path-style or virtual-hosted
URLs, and the two credential sources a pod gets from the operator.

Why not botocore: it cannot share one environment with the operator's Kubernetes client
(python-dateutil < 3 against >= 3), and a model download needs one signed GET, streamed.

Credentials, first match wins (the order of the AWS SDKs' default chain for these two):

1. ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``): the operator
   sets them from a Secret (``model.s3.credentials.secretRef``).
2. ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``: workload identity. The pod's
   ServiceAccount token (projected by the operator for ``webIdentity``, or by EKS' pod identity
   webhook) is exchanged for temporary keys with STS ``AssumeRoleWithWebIdentity`` (an unsigned
   request). The STS endpoint is ``AWS_ENDPOINT_URL_STS`` when set, else the regional
   ``https://sts.REGION.amazonaws.com`` (``AWS_STS_REGIONAL_ENDPOINTS=legacy``: the global one).

Nothing else (no profile files, no instance metadata): a pod without either gets a clear error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import os
import re
import ssl
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
DEFAULT_REGION = "us-east-1"
#: S3's unreserved characters in a canonical URI (it does not encode '/' and does not double-encode).
_SAFE = "-_.~/"
#: Attempts for a GET that fails before any byte arrived (connection refused/reset, HTTP 5xx).
ATTEMPTS = 3


class S3Error(Exception):
    """The object could not be read. ``code`` is S3's error code (NoSuchKey, AccessDenied, ...)
    or a short word of ours (NoCredentials, Connection, WebIdentity)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    source: str = "env"


# -- signing --------------------------------------------------------------------------------------


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def authorization(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_sha256: str,
    credentials: Credentials,
    region: str,
    service: str,
) -> str:
    """The ``Authorization`` header of SigV4 for a request with exactly ``headers`` (which must
    hold ``host`` and ``x-amz-date``); ``path`` is already URI-encoded as it goes on the wire."""
    amz_date = headers["x-amz-date"]
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    names = sorted(name.lower() for name in headers)
    lowered = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    canonical = "\n".join(
        [
            method,
            path or "/",
            "&".join(
                f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                for k, v in sorted(query.items())
            ),
            "".join(f"{name}:{lowered[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = signing_key(credentials.secret_access_key, amz_date[:8], region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )


# -- credentials ----------------------------------------------------------------------------------


def region_from_env(configured: str | None) -> str:
    return configured or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def credentials_from_env(region: str, timeout_s: float) -> Credentials:
    """The chain in this module's docstring; raises S3Error(NoCredentials | WebIdentity)."""
    env = os.environ
    key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        return Credentials(key_id, secret, env.get("AWS_SESSION_TOKEN") or None, "env")
    role, token_file = env.get("AWS_ROLE_ARN"), env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    if role and token_file:
        return assume_role_with_web_identity(role, Path(token_file), region, timeout_s)
    raise S3Error(
        "NoCredentials",
        "neither AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY nor AWS_ROLE_ARN/AWS_WEB_IDENTITY_TOKEN_FILE is set",
    )


def sts_endpoint(region: str) -> str:
    explicit = os.environ.get("AWS_ENDPOINT_URL_STS")
    if explicit:
        return explicit
    if os.environ.get("AWS_STS_REGIONAL_ENDPOINTS", "regional") == "legacy":
        return "https://sts.amazonaws.com"
    return f"https://sts.{region}.amazonaws.com"


def _xml_field(body: str, name: str) -> str | None:
    """One element's text from a small XML answer (S3/STS errors, STS credentials): a regex, no
    XML parser on a server's bytes."""
    match = re.search(rf"<{name}>([^<]*)</{name}>", body)
    return match.group(1) if match else None


def assume_role_with_web_identity(role_arn: str, token_file: Path, region: str, timeout_s: float) -> Credentials:
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise S3Error("WebIdentity", f"cannot read the web identity token {token_file}: {exc}") from exc
    endpoint = sts_endpoint(region)
    session = os.environ.get("AWS_ROLE_SESSION_NAME") or f"modelship-{int(time.time())}"
    form = urllib.parse.urlencode(
        {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": role_arn,
            "RoleSessionName": session,
            "WebIdentityToken": token,
        }
    )
    url = urllib.parse.urlsplit(endpoint)
    try:
        conn = _connection(url, timeout_s)
        conn.request("POST", url.path or "/", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/xml",
        })
        resp = conn.getresponse()
        body = resp.read(1 << 20).decode(errors="replace")
        conn.close()
    except OSError as exc:
        raise S3Error("WebIdentity", f"STS at {endpoint} cannot be reached: {exc}") from exc
    if resp.status != 200:
        code = _xml_field(body, "Code") or f"HTTP {resp.status}"
        raise S3Error("WebIdentity", f"STS at {endpoint} refused AssumeRoleWithWebIdentity for {role_arn}: "
                      f"{code}: {_xml_field(body, 'Message') or ''}".rstrip(": "), resp.status)
    key_id, secret = _xml_field(body, "AccessKeyId"), _xml_field(body, "SecretAccessKey")
    if not key_id or not secret:
        raise S3Error("WebIdentity", f"STS at {endpoint} answered without credentials")
    return Credentials(key_id, secret, _xml_field(body, "SessionToken"), "web-identity")


# -- GET ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where a GET of s3://bucket/key goes."""

    scheme: str
    host: str  # with the port when there is one
    path: str  # URI-encoded

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"


def locate(bucket: str, key: str, endpoint: str | None, region: str, path_style: bool) -> Location:
    base = urllib.parse.urlsplit(endpoint or f"https://s3.{region}.amazonaws.com")
    quoted = urllib.parse.quote(key, safe=_SAFE)
    prefix = base.path.rstrip("/")
    if path_style:
        return Location(base.scheme, base.netloc, f"{prefix}/{urllib.parse.quote(bucket, safe='')}/{quoted}")
    return Location(base.scheme, f"{bucket}.{base.netloc}", f"{prefix}/{quoted}")


def _connection(url: urllib.parse.SplitResult | Location, timeout_s: float) -> http.client.HTTPConnection:
    scheme = url.scheme
    host = url.host if isinstance(url, Location) else url.netloc
    if scheme == "https":
        context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
        return http.client.HTTPSConnection(host, timeout=timeout_s, context=context)
    if scheme == "http":
        return http.client.HTTPConnection(host, timeout=timeout_s)
    raise S3Error("Endpoint", f"endpoint scheme must be http or https, got {scheme!r}")


def get_object(
    bucket: str,
    key: str,
    *,
    endpoint: str | None,
    region: str | None,
    path_style: bool,
    timeout_s: float,
    chunk: int,
) -> tuple[int | None, Body]:
    """Start a signed GET; returns (Content-Length, the body). The caller closes the body.
    Raises S3Error for anything but a 200."""
    region = region_from_env(region)
    credentials = credentials_from_env(region, timeout_s)
    where = locate(bucket, key, endpoint, region, path_style)
    for attempt in range(1, ATTEMPTS + 1):
        headers = {
            "host": where.host,
            "x-amz-date": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
            "x-amz-content-sha256": EMPTY_SHA256,
        }
        if credentials.session_token:
            headers["x-amz-security-token"] = credentials.session_token
        headers["Authorization"] = authorization(
            "GET", where.path, {}, headers, EMPTY_SHA256, credentials, region, "s3"
        )
        conn = _connection(where, timeout_s)
        try:
            conn.request("GET", where.path, headers={**headers, "User-Agent": "modelship-server"})
            resp = conn.getresponse()
        except OSError as exc:
            conn.close()
            if attempt < ATTEMPTS:
                time.sleep(0.5 * attempt)
                continue
            raise S3Error("Connection", f"{where.url} cannot be reached: {exc}") from exc
        if resp.status == 200:
            length = resp.getheader("Content-Length")
            return (int(length) if length and length.isdigit() else None), Body(conn, resp, chunk)
        body = resp.read(64 * 1024).decode(errors="replace")
        conn.close()
        if resp.status >= 500 and attempt < ATTEMPTS:
            time.sleep(0.5 * attempt)
            continue
        code = _xml_field(body, "Code") or f"HTTP{resp.status}"
        message = _xml_field(body, "Message") or resp.reason
        region_hint = resp.getheader("x-amz-bucket-region")
        if region_hint and region_hint != region:
            message += f" (the bucket is in {region_hint}: set model.s3.region)"
        raise S3Error(code, message, resp.status)
    raise AssertionError("unreachable")  # the loop returns or raises


class Body:
    """An object's bytes as they arrive, ``size`` at a time; :meth:`close` (also after a partial
    read, or none) closes the connection."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, size: int) -> None:
        self._conn, self._resp, self._size = conn, resp, size

    def __iter__(self) -> Iterator[bytes]:
        while data := self._resp.read(self._size):
            yield data

    def close(self) -> None:
        self._conn.close()
