"""The server's one typed settings object: env vars (prefix ``MODELSHIP_``) and CLI flags.

Nothing here runs at import time: :func:`load_settings` is called once by ``main()``
(and by tests with explicit values). CLI flags win over env vars, which win over defaults.
Every field is also a flag: ``model_uri`` → ``--model-uri``; booleans take
``--half-precision`` / ``--no-half-precision``.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ModelFormat = Literal["torchscript", "torch-export", "handler"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Settings(BaseSettings):
    """Everything the server can be told. The operator sets these as env vars only."""

    model_config = SettingsConfigDict(
        env_prefix="MODELSHIP_",
        extra="ignore",
        frozen=True,
        protected_namespaces=(),
        use_attribute_docstrings=True,
    )

    model_name: str = Field("model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Name the model is served under (``/v1/models/{name}:predict``, ``/v2/models/{name}``)."""

    model_uri: str | None = None
    """Where the model file lives: a path, ``file://`` (mounted volume/PVC), ``http(s)://`` or
    ``s3://bucket/key`` (downloaded once into ``cache_dir``, streamed, size- and
    sha256-checked). None serves nothing and /health explains why."""

    model_format: ModelFormat = "torchscript"
    """torchscript (``torch.jit.load``), torch-export (``.pt2``, ``torch.export.load``) or
    handler (a user class, see ``model_handler``)."""

    model_handler: str | None = None
    """``module:Class`` with ``load(path, device)`` and ``predict(*tensors)``; format=handler."""

    model_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    """Expected SHA-256 of the model file. Checked for every source when given."""

    require_sha256: bool = False
    """Refuse http(s) sources without ``model_sha256``: a download is only as good as its
    checksum. Off by default so a quick ``http://`` test needs no hash."""

    # bandit B108: in the pod /tmp is a private emptyDir; downloads are written through mkstemp
    # and kept only when their sha256 matches, so a planted file is refused, not served.
    cache_dir: str = "/tmp/modelship-cache"  # nosec B108
    """Downloads land here, named by checksum/URL hash, so a restart does not download again."""

    download_timeout_s: float = Field(300.0, gt=0)
    """Socket timeout for http(s) and s3 downloads (connect, and each read), seconds."""

    s3_endpoint: str | None = Field(None, pattern=r"^https?://[^\s/]+(/.*)?$")
    """S3-compatible endpoint for ``s3://`` sources, e.g. ``http://minio.storage:9000``. None:
    AWS S3 in ``s3_region``. Credentials: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
    (+ ``AWS_SESSION_TOKEN``), else web identity (``AWS_ROLE_ARN`` +
    ``AWS_WEB_IDENTITY_TOKEN_FILE``, exchanged with STS); see ``s3.py``."""

    s3_region: str | None = Field(None, pattern=r"^[a-z0-9-]{1,32}$")
    """Region requests are signed for. None: ``AWS_REGION``/``AWS_DEFAULT_REGION``, else
    us-east-1 (what MinIO expects by default)."""

    s3_path_style: bool = False
    """Path-style addressing (``endpoint/bucket/key``), which most S3-compatible servers need;
    off: virtual-hosted style (``bucket.endpoint/key``), AWS's default."""

    # bandit B104: the kubelet probes the pod IP (docstring below).
    host: str = "0.0.0.0"  # nosec B104
    """Listen address; 0.0.0.0 because the kubelet probes the pod IP."""

    port: int = Field(8000, ge=1, le=65535)
    """Listen port (the operator's ``serving.port``)."""

    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    """auto picks CUDA when ``torch.cuda.is_available()``, else CPU."""

    require_gpu: bool = False
    """A GPU pod without a GPU is a scheduling mistake: report not-ready with the reason
    instead of quietly serving at CPU speed (unless ``gpu_fallback``)."""

    gpu_fallback: bool = False
    """With ``require_gpu`` and no GPU visible, serve on CPU anyway (and say so in /health)."""

    exit_on_load_failure: bool = False
    """Exit (code 3) when the model cannot be loaded, writing the reason to ``termination_log``
    so ``kubectl describe pod`` shows it and the pod crash-loops visibly. Off: stay up, live but
    not ready, with the reason in /health (the startup probe restarts the pod in the end)."""

    termination_log: str = "/dev/termination-log"
    """Where the exit reason goes (Kubernetes' terminationMessagePath); skipped if not writable."""

    half_precision: bool = False
    """Run the model in float16 on GPU (ignored on CPU, where fp16 is slow). Floating outputs
    are returned as float32 either way, so clients see one datatype."""

    num_threads: int = Field(0, ge=0)
    """torch intra-op threads; 0 = the CPUs this process may actually use (affinity mask and
    cgroup quota), because torch's default (all host cores) thrashes in a small pod."""

    input_shape: str | None = Field(None, pattern=r"^\s*-?\d+(\s*,\s*-?\d+)*\s*$")
    """Input shape with the batch dim, e.g. ``-1,3,32,32``. TorchScript files carry no shapes,
    so warm-up and metadata need this (or a ``modelship.json`` extra file in the archive)."""

    input_datatype: str = "FP32"
    """OIP v2 datatype of the input when ``input_shape`` is given."""

    warmup: bool = True
    """Run one inference before reporting ready, so the first caller does not pay for lazy
    init (allocator, TorchScript profiling, CUDA kernels)."""

    max_batch_size: int = Field(32, ge=1)
    """Most rows one model call gets; 1 disables batching."""

    max_latency_ms: float = Field(5.0, ge=0)
    """Longest the first request of a batch waits for companions. An upper bound: the batcher
    dispatches as soon as no more requests are arriving, so a lone caller does not wait."""

    run_on_loop: Literal["auto", "always", "never"] = "auto"
    """Run the model on the event loop thread instead of the model thread. auto decides from
    what the batcher measures: on the loop while one model call costs less than handing it to
    the thread (a tiny model on CPU), in the thread otherwise, so the loop keeps parsing
    requests while a big model computes."""

    max_queue: int = Field(256, ge=1)
    """Requests waiting for the model beyond which new ones get 503 + Retry-After."""

    request_timeout_s: float = Field(30.0, gt=0)
    """A request not answered in this time gets 504 (it is dropped if not yet started). The
    same time bounds how long a client may take to send a request's head (from the connection's
    start or the previous answer) and then its body: a late one gets 408 and the connection is
    closed, so stalled or dripping clients cannot hold connections forever."""

    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Request bodies above this get 413 before they are read into memory."""

    retry_after_s: int = Field(1, ge=0)
    """Value of Retry-After on 503 (overload, not ready, draining)."""

    shutdown_delay_s: float = Field(0.0, ge=0)
    """After SIGTERM, keep serving (readiness already 503) this long so endpoints controllers
    stop routing here before the listener closes. Keep below terminationGracePeriodSeconds."""

    graceful_timeout_s: float = Field(30.0, gt=0)
    """Longest uvicorn waits for in-flight requests after SIGTERM before closing them."""

    workers: int = Field(1, ge=0, le=64)
    """HTTP (and gRPC) front-end processes. 0 = one per CPU this pod may use (cgroup quota,
    affinity), capped at 8. Above 1 a supervisor process starts them, all listening on the same
    port(s) (SO_REUSEPORT: the kernel spreads connections); probes and /metrics answer for all
    of them. 1 keeps today's single process."""

    model_process: Literal["auto", "per-worker", "shared"] = "auto"
    """With several workers: per-worker loads the model in every front end (CPU: each owns a
    copy and its share of the cores); shared loads it once, in its own process, and front ends
    hand it tensors through shared memory, so batching spans all front ends (GPU: one copy in
    device memory). auto: shared on a GPU, per-worker on CPU."""

    grpc_port: int = Field(0, ge=0, le=65535)
    """Port of the Open Inference Protocol v2 gRPC service (``inference.GRPCInferenceService``);
    0 = off. The operator sets it (and exposes the port) when gRPC is enabled in the spec."""

    log_level: LogLevel = "info"
    """Python logging level for the server and uvicorn."""

    access_log: bool = False
    """uvicorn access log; off by default (metrics count requests, and logging costs rps)."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.model_format == "handler" and not self.model_handler:
            raise ValueError("model_format=handler needs model_handler (module:Class)")
        if self.model_handler and ":" not in self.model_handler:
            raise ValueError("model_handler must look like module:Class")
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError("grpc_port must differ from port")
        return self

    def shape(self) -> list[int] | None:
        """``input_shape`` parsed, or None."""
        if self.input_shape is None:
            return None
        return [int(part) for part in self.input_shape.split(",")]


def _is_bool(annotation: object) -> bool:
    return annotation is bool


def build_parser() -> argparse.ArgumentParser:
    """One ``--flag`` per settings field; defaults are None so env vars still apply."""
    parser = argparse.ArgumentParser(
        prog="modelship-server",
        description="Serve one PyTorch model over HTTP (KServe v1, Open Inference Protocol v2).",
        epilog="Every flag is also an env var: --model-uri = MODELSHIP_MODEL_URI.",
    )
    hints = typing.get_type_hints(Settings)
    for name, field in Settings.model_fields.items():
        flag = _flag(name)
        doc = (field.description or "").strip()
        if _is_bool(hints[name]):
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=doc or None
            )
        else:
            parser.add_argument(flag, dest=name, default=None, help=doc or None)
    return parser


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _attach_dash_values(argv: Sequence[str]) -> list[str]:
    """``--input-shape -1,3,32,32`` as ``--input-shape=-1,3,32,32``.

    argparse takes any word that starts with ``-`` (other than a plain negative number) for an
    option, so a value such as ``-1,3,32,32``, the help's own example, was refused with
    "expected one argument". A value-taking flag followed by a word that is none of the flags
    gets that word attached; a real flag after it still fails as before."""
    hints = typing.get_type_hints(Settings)
    takes_value = {_flag(name) for name in Settings.model_fields if not _is_bool(hints[name])}
    flags = {"-h", "--help"} | {_flag(name) for name in Settings.model_fields}
    flags |= {"--no-" + _flag(name)[2:] for name in Settings.model_fields if _is_bool(hints[name])}
    words = list(argv)
    out: list[str] = []
    while words:
        word = words.pop(0)
        if word in takes_value and words and words[0].startswith("-") and words[0].split("=")[0] not in flags:
            word = f"{word}={words.pop(0)}"
        out.append(word)
    return out


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Read env vars and CLI flags once. Raises ``pydantic.ValidationError`` when invalid."""
    args = build_parser().parse_args(_attach_dash_values(sys.argv[1:] if argv is None else argv))
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    return Settings(**overrides)
