"""The ModelDeployment API: the one schema source.

These pydantic models define the wire format (camelCase aliases), the defaults the operator
applies, and the rules it enforces. ``crdgen`` turns them into the CRD's structural OpenAPI
schema; the CEL rules there (``CEL_RULES``) mirror the validators here, so the API server
rejects what it can and the operator re-checks everything (a CRD from an older release may
let through what this code no longer accepts: that becomes ``InvalidSpec``, never a crash).

Defaults are applied by the operator, not by the API server: the CRD carries no ``default``
keys, so changing a default in a later release reaches existing objects and GitOps diffs
stay clean. Each field's description states its default.

Nothing in the spec is immutable: every field can roll forward through a Deployment rollout,
and the Deployment's selector is derived from the object's name only.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict

from modelship_operator.core import server_env

GROUP = "modelship.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ("md", "mdeploy")
CATEGORIES = ("modelship",)

#: An image reference must pin a tag or a digest: rollouts and rollbacks are by this value,
#: and an implicit ``:latest`` would make "roll back to the previous image" meaningless.
#: The tag is looked for after the last ``/`` so a registry port (``host:5000/img``) is no tag.
IMAGE_PATTERN = (
    r"^([^/@]+/)*[^/:@]+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[a-f0-9]{64})?$"
    r"|^[^@]+@sha256:[a-f0-9]{64}$"
)
HANDLER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"
SHA256_PATTERN = r"^[a-f0-9]{64}$"
MODEL_NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]+)$"
#: ``s3://bucket/key``: a bucket name as S3 allows it (3-63 of [a-z0-9.-]) and a non-empty key.
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$"
#: ``pvc://claim/path``: a claim name (DNS-1123 subdomain) and a path inside the volume that
#: stays inside it (no ``..`` segment).
PVC_URI_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/(.+)$"
_DOTDOT = r"(^|/)[.][.](/|$)"
ENDPOINT_PATTERN = r"^https?://[^\s/]+(/.*)?$"
REGION_PATTERN = r"^[a-z0-9-]{1,32}$"
ROLE_ARN_PATTERN = r"^arn:[a-z0-9-]+:iam::[0-9]{12}:role/.+$"
# bandit B105: a pattern for the *name* of a key in a Secret, not a password.
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # nosec B105
#: A DNS-1123 subdomain: Secret and claim names.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
PERCENT_PATTERN = r"^[0-9]{1,3}%$"
#: A Kubernetes resource quantity that is not negative. An unparseable one would make the API
#: server refuse the Deployment with an opaque HTTP 500. Stricter than the regex controller-gen
#: emits for resource.Quantity, which lets a sign and a fraction into the exponent ("1E-.7")
#: that the API server's parser refuses (found by the fuzzed ModelDeployments, issue 13); a
#: minus sign is left out too, as requests and limits cannot be negative.
QUANTITY_PATTERN = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]{1,3}))?$"
#: The largest count a Kubernetes int32 field holds (a PodDisruptionBudget's minAvailable).
INT32_MAX = 2**31 - 1
_QUANTITY_MAP: JsonDict = {"additionalProperties": {"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}}

#: Server env vars the operator derives from the spec (one table: ``server_env.CONTRACT``);
#: setting them in ``spec.env`` would give the container two entries of one name, so it is
#: refused. Other ``MODELSHIP_*`` vars (log level, queue size, timeouts) are the user's to set.
RESERVED_ENV = server_env.RESERVED

#: The AWS variables ``model.s3.credentials`` sets in the container (values from a Secret, or
#: the web identity's role and token file); ``spec.env`` may not set them beside it.
CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
)

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

ModelFormat = Literal["torchscript", "torch-export", "handler"]
SurgeMode = Literal["auto", "surge", "no-surge"]
ModelProcess = Literal["auto", "per-worker", "shared"]
InputDatatype = Literal["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]
ConditionStatus = Literal["True", "False", "Unknown"]
Outcome = Literal["Progressing", "Succeeded", "RolledBack", "Superseded", "Halted"]
RolloutPhase = Literal["Progressing", "Complete", "RolledBack", "Halted"]
#: A Kubernetes quantity ("500m", "2Gi", 4) or, for budgets, a count or a percentage.
IntOrString = int | str


class OutsidePod:
    """Marks a spec field that does not reach the pod template (``Annotated[T, OUTSIDE_POD]``).

    Every other spec field is pod-relevant: changing it is a new revision, and a rollback
    restores it (:func:`pod_fields`). A new field is pod-relevant unless marked, so forgetting
    the mark costs a needless rollout, never a missed one; a unit test builds a Deployment for
    a change of every field and fails when a mark is wrong.
    """


OUTSIDE_POD = OutsidePod()


def cel(*rules: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    """CEL rules (rule, message[, fieldPath]) for the CRD, attached where the pydantic rule lives.
    A rule on an object that checks one of its fields names it in ``fieldPath`` (``.volumeMounts``):
    the API server's refusal then says ``spec.volumeMounts: ...``, not ``spec: Invalid value: "object"``."""
    return {"x-kubernetes-validations": [
        {"rule": r[0], "message": r[1], **({"fieldPath": r[2]} if len(r) > 2 else {})} for r in rules
    ]}


class _Wire(BaseModel):
    """Base for every API model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: aliases, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class S3SecretRef(_Wire):
    """A Secret in the ModelDeployment's namespace holding S3 keys. The operator never reads it:
    the pod's env takes the values with secretKeyRef, so they are never copied anywhere."""

    name: str = Field(pattern=OBJECT_NAME_PATTERN, max_length=253, description="The Secret's name.")
    access_key_id_key: str = Field(
        default="AWS_ACCESS_KEY_ID",
        pattern=SECRET_KEY_PATTERN,
        max_length=253,
        description="Key of the access key id in the Secret. Default: AWS_ACCESS_KEY_ID.",
    )
    secret_access_key_key: str = Field(
        default="AWS_SECRET_ACCESS_KEY",
        pattern=SECRET_KEY_PATTERN,
        max_length=253,
        description="Key of the secret access key in the Secret. Default: AWS_SECRET_ACCESS_KEY.",
    )
    session_token_key: str | None = Field(
        default=None,
        pattern=SECRET_KEY_PATTERN,
        max_length=253,
        description="Key of a session token in the Secret (temporary credentials). Default: none.",
    )


class S3WebIdentity(_Wire):
    """Workload identity: the pod's ServiceAccount token, projected with this audience, is
    exchanged for the role's credentials (AWS STS AssumeRoleWithWebIdentity; the server's
    botocore does it from AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE)."""

    role_arn: str = Field(
        pattern=ROLE_ARN_PATTERN,
        max_length=2048,
        description="The role to assume, e.g. arn:aws:iam::123456789012:role/models-reader.",
    )
    audience: str = Field(
        default="sts.amazonaws.com",
        min_length=1,
        max_length=253,
        description="Audience of the projected token (what the role's OIDC trust expects). "
        "Default: sts.amazonaws.com.",
    )


class S3Credentials(_Wire):
    """Where the server's S3 credentials come from: set exactly one."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "has(self.secretRef) != has(self.webIdentity)",
                "model.s3.credentials: set exactly one of secretRef or webIdentity",
            )
        )
    )

    secret_ref: S3SecretRef | None = Field(default=None, description="Access keys from a Secret.")
    web_identity: S3WebIdentity | None = Field(
        default=None, description="Workload identity from the pod's ServiceAccount token."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> S3Credentials:
        if (self.secret_ref is None) == (self.web_identity is None):
            raise ValueError("model.s3.credentials: set exactly one of secretRef or webIdentity")
        return self

    def env_names(self) -> tuple[str, ...]:
        """The AWS_* variables these credentials set in the container."""
        if self.secret_ref is not None:
            token = ("AWS_SESSION_TOKEN",) if self.secret_ref.session_token_key else ()
            return ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", *token)
        return ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


class S3Options(_Wire):
    """How the server reaches an s3:// model (only with an s3:// uri)."""

    endpoint: str | None = Field(
        default=None,
        pattern=ENDPOINT_PATTERN,
        max_length=2048,
        description="URL of an S3-compatible server, e.g. http://minio.storage:9000. "
        "Default: none (AWS S3 in the region).",
    )
    region: str | None = Field(
        default=None,
        pattern=REGION_PATTERN,
        description="Region the requests are signed for, e.g. eu-west-1. Default: none (the "
        "server's AWS_REGION, else us-east-1, which MinIO expects).",
    )
    path_style: bool = Field(
        default=False,
        description="Path-style addressing (endpoint/bucket/key), which most S3-compatible "
        "servers need. Default: false (virtual-hosted style, bucket.endpoint/key).",
    )
    credentials: S3Credentials | None = Field(
        default=None,
        description="A Secret with access keys, or workload identity. Default: none: the server "
        "reads AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else AWS_ROLE_ARN/AWS_WEB_IDENTITY_TOKEN_FILE, "
        "from its environment (e.g. what EKS' pod identity webhook injects for the pod's "
        "ServiceAccount).",
    )


class ModelSource(_Wire):
    """Which model the server loads, from where, in which format."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.format == 'handler' ? has(self.handler) : !has(self.handler)",
                "model.handler (module:Class) is required when model.format is handler, and only then",
            ),
            (
                "!has(self.s3) || self.uri.startsWith('s3://')",
                "model.s3 is only for an s3:// model.uri",
            ),
            (
                "!self.uri.startsWith('s3://') || self.uri.matches('" + S3_URI_PATTERN + "')",
                "an s3 model.uri is s3://bucket/key",
            ),
            (
                "!self.uri.startsWith('pvc://') || (self.uri.matches('" + PVC_URI_PATTERN + "') && "
                "!self.uri.substring(6).matches('" + _DOTDOT + "'))",
                "a pvc model.uri is pvc://claim/path, the path inside the volume without '..'",
            ),
        )
    )

    name: str = Field(
        pattern=MODEL_NAME_PATTERN,
        max_length=63,
        description="Model name in the serving URLs (/v1/models/{name}:predict, /v2/models/{name}). "
        "Lowercase letters, digits, '.', '_' and '-'; at most 63 characters.",
    )
    uri: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the weights are: a path inside the image, file://, http(s)://, "
        "s3://bucket/key (see s3) or pvc://claim/path (the claim is mounted read-only at "
        "/mnt/models). Downloads (http(s), s3) are streamed to the pod's /tmp emptyDir, once per "
        "pod, size- and sha256-checked before loading.",
    )
    format: ModelFormat = Field(
        description="torchscript (torch.jit.load), torch-export (torch.export .pt2) or handler "
        "(a Python class named by `handler`).",
    )
    handler: str | None = Field(
        default=None,
        pattern=HANDLER_PATTERN,
        max_length=256,
        description="module:Class of a custom handler; required when format is handler, "
        "forbidden otherwise.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="Optional hex SHA-256 of the weights; the server refuses to load on mismatch "
        "(recommended for http(s) and s3 sources).",
    )
    s3: S3Options | None = Field(
        default=None,
        description="Endpoint, region, addressing and credentials for an s3:// uri. Default: none "
        "(AWS S3 in us-east-1, credentials from the server's environment).",
    )
    input_shape: list[int] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="Input shape including the batch dimension, -1 for a dynamic one, e.g. "
        "[-1, 3, 224, 224]. TorchScript files carry no shapes: without this (or a modelship.json "
        "extra file in the archive) the server cannot warm up or publish input metadata. "
        "Default: none (torch-export programs carry their own).",
        json_schema_extra=cel(
            ("self.all(d, d == -1 || d > 0)", "model.inputShape dimensions must be positive, or -1 for a dynamic one")
        ),
    )
    input_datatype: InputDatatype = Field(
        default="FP32",
        description="Open Inference Protocol datatype of the input, used with inputShape. Default: FP32.",
    )

    @field_validator("input_shape")
    @classmethod
    def _dims(cls, shape: list[int] | None) -> list[int] | None:
        if shape is not None and any(d == 0 or d < -1 for d in shape):
            raise ValueError("model.inputShape dimensions must be positive, or -1 for a dynamic one")
        return shape

    @model_validator(mode="after")
    def _handler_iff_format_handler(self) -> ModelSource:
        if (self.format == "handler") != (self.handler is not None):
            raise ValueError(
                "model.handler (module:Class) is required when model.format is handler, and only then"
            )
        return self

    @model_validator(mode="after")
    def _source_forms(self) -> ModelSource:
        if self.s3 is not None and not self.uri.startswith("s3://"):
            raise ValueError("model.s3 is only for an s3:// model.uri")
        if self.uri.startswith("s3://") and not re.match(S3_URI_PATTERN, self.uri):
            raise ValueError("an s3 model.uri is s3://bucket/key")
        if self.uri.startswith("pvc://") and (
            not re.match(PVC_URI_PATTERN, self.uri) or re.search(_DOTDOT, self.uri[len("pvc://"):])
        ):
            raise ValueError("a pvc model.uri is pvc://claim/path, the path inside the volume without '..'")
        return self

    @property
    def pvc(self) -> tuple[str, str] | None:
        """(claim, path inside the volume) of a pvc:// uri, else None."""
        if not self.uri.startswith("pvc://"):
            return None
        claim, _, path = self.uri[len("pvc://"):].partition("/")
        return claim, path


class ResourceRequirements(_Wire):
    """Container resources as in a Pod; GPUs go through `gpu`, not here."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                f"!(has(self.requests) && '{GPU_RESOURCE}' in self.requests) && "
                f"!(has(self.limits) && '{GPU_RESOURCE}' in self.limits)",
                "set GPUs with gpu.count, not resources.requests/limits nvidia.com/gpu",
            )
        )
    )

    requests: dict[str, IntOrString] = Field(
        default_factory=dict,
        description="Minimum resources, e.g. {cpu: '2', memory: 4Gi}. Default: none.",
        json_schema_extra=_QUANTITY_MAP,
    )
    limits: dict[str, IntOrString] = Field(
        default_factory=dict,
        description="Maximum resources, e.g. {memory: 8Gi}. Default: none. "
        "nvidia.com/gpu is not allowed here: set gpu.count.",
        json_schema_extra=_QUANTITY_MAP,
    )

    @model_validator(mode="after")
    def _no_gpu_here(self) -> ResourceRequirements:
        if GPU_RESOURCE in self.requests or GPU_RESOURCE in self.limits:
            raise ValueError("set GPUs with gpu.count, not resources.requests/limits nvidia.com/gpu")
        for kind, values in (("requests", self.requests), ("limits", self.limits)):
            for name, value in values.items():
                if isinstance(value, str) and not re.match(QUANTITY_PATTERN, value):
                    raise ValueError(f"{kind}.{name}: {value!r} is not a quantity (e.g. 500m, 2Gi, 4)")
                if isinstance(value, int) and value < 0:
                    raise ValueError(f"{kind}.{name} must not be negative")
        return self


class GPU(_Wire):
    """GPU needs; count 0 (or no `gpu` at all) means a CPU-only pod with no GPU fields."""

    count: int = Field(
        default=1,
        le=64,
        description="nvidia.com/gpu per pod (limit). Default: 1. 0 = no GPU.",
        json_schema_extra=cel(("self >= 0", "gpu.count must be 0 or more (0 = no GPU)")),
    )
    product: str | None = Field(
        default=None,
        max_length=253,
        description="Required value of the node label nvidia.com/gpu.product, "
        "e.g. NVIDIA-H100-80GB-HBM3. Default: any GPU node.",
    )

    @field_validator("count")
    @classmethod
    def _count_not_negative(cls, count: int) -> int:
        if count < 0:
            raise ValueError("gpu.count must be 0 or more (0 = no GPU)")
        return count


class Toleration(_Wire):
    """A pod toleration (same fields as in a Pod)."""

    key: str | None = Field(default=None, max_length=317)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class EnvVar(_Wire):
    """An extra container env var (same fields as in a Pod)."""

    name: str = Field(min_length=1, max_length=256)
    value: str | None = None
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="As in a Pod: secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef.",
    )


class Batching(_Wire):
    """Dynamic batching in the server: wait up to maxLatencyMs to fill a batch."""

    max_batch_size: int = Field(
        default=8, ge=1, le=4096, description="Largest batch the server forms. Default: 8. 1 = no batching."
    )
    max_latency_ms: int = Field(
        default=5, ge=0, le=60000, description="Longest wait to fill a batch, in ms. Default: 5."
    )


class Grpc(_Wire):
    """The Open Inference Protocol v2 gRPC service, beside HTTP."""

    enabled: bool = Field(default=False, description="Serve gRPC. Default: false.")
    port: int = Field(
        default=9000,
        description="Container and Service port for gRPC (named grpc). Default: 9000. "
        "1024-65535, and not serving.port.",
        json_schema_extra=cel(
            ("self >= 1024 && self <= 65535", "serving.grpc.port must be between 1024 and 65535 (the server runs as non-root)")
        ),
    )

    @field_validator("port")
    @classmethod
    def _port_range(cls, port: int) -> int:
        if not 1024 <= port <= 65535:
            raise ValueError("serving.grpc.port must be between 1024 and 65535 (the server runs as non-root)")
        return port


class Serving(_Wire):
    """How the server listens and runs the model."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.grpc) || !has(self.grpc.enabled) || !self.grpc.enabled || "
                "(has(self.grpc.port) ? self.grpc.port : 9000) != (has(self.port) ? self.port : 8000)",
                "serving.grpc.port must differ from serving.port",
            )
        )
    )

    port: int = Field(
        default=8000,
        description="Container port for HTTP (API, health, metrics). Default: 8000. "
        "1024-65535: the server runs as non-root.",
        json_schema_extra=cel(
            ("self >= 1024 && self <= 65535", "serving.port must be between 1024 and 65535 (the server runs as non-root)")
        ),
    )
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching settings.")
    device: str | None = Field(
        default=None,
        pattern=DEVICE_PATTERN,
        description="auto, cpu, cuda or cuda:N. Default: cuda with a GPU (the pod is not ready "
        "without one), cpu otherwise.",
    )
    half_precision: bool = Field(default=False, description="Run the model in fp16. Default: false.")
    shutdown_delay_seconds: int = Field(
        default=5,
        ge=0,
        le=300,
        description="After SIGTERM the server keeps serving (readiness already 503) this long, so "
        "endpoints stop routing to the pod before its listener closes. Default: 5.",
    )
    drain_timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="Longest the server waits for in-flight and queued requests after the delay. "
        "The pod's terminationGracePeriodSeconds is delay + drain + 5. Default: 30.",
    )
    workers: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Front-end processes sharing the port (one event loop each decodes requests). "
        "0 = one per CPU the container may use (its CPU limit), at most 8. Default: 1. More than "
        "one multiplies the model's memory when each owns a copy (modelProcess per-worker).",
    )
    model_process: ModelProcess = Field(
        default="auto",
        description="With several workers: per-worker (each front end loads the model: CPU), "
        "shared (one process owns the model, fed through shared memory, so batches span every "
        "front end and the model loads once: GPU) or auto (shared on GPU, per-worker on CPU). "
        "Default: auto.",
    )
    grpc: Grpc = Field(default_factory=Grpc, description="The OIP v2 gRPC service (off unless enabled).")

    @field_validator("port")
    @classmethod
    def _port_range(cls, port: int) -> int:
        if not 1024 <= port <= 65535:
            raise ValueError("serving.port must be between 1024 and 65535 (the server runs as non-root)")
        return port

    @model_validator(mode="after")
    def _grpc_port_differs(self) -> Serving:
        if self.grpc.enabled and self.grpc.port == self.port:
            raise ValueError("serving.grpc.port must differ from serving.port")
        return self


#: Probe settings when ``spec.probes.readiness``/``liveness`` leave them unset (the builder
#: applies them; the field docs below quote them).
READINESS_DEFAULTS = {"periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3}
LIVENESS_DEFAULTS = {"periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}


def _quote(defaults: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in defaults.items())


class ProbeOverride(_Wire):
    """Overrides for one probe; unset fields keep the documented default."""

    period_seconds: int | None = Field(default=None, ge=1, le=3600, description="How often to probe, s.")
    timeout_seconds: int | None = Field(default=None, ge=1, le=3600, description="Probe timeout, s.")
    failure_threshold: int | None = Field(
        default=None, ge=1, le=1000, description="Consecutive failures before acting."
    )


class Probes(_Wire):
    """Health probes. Readiness means "model loaded and warmed", so slow loads need a budget."""

    startup_timeout_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="How long a pod may take to load and warm the model before it is restarted. "
        "Default: 600. The startup probe gets failureThreshold = ceil(this / startupPeriodSeconds); "
        "liveness does not run until startup succeeded.",
    )
    startup_period_seconds: int = Field(
        default=5, ge=1, le=3600, description="Startup probe period, s. Default: 5."
    )
    readiness: ProbeOverride = Field(
        default_factory=ProbeOverride,
        description=f"GET /health. Defaults: {_quote(READINESS_DEFAULTS)}.",
    )
    liveness: ProbeOverride = Field(
        default_factory=ProbeOverride,
        description=f"GET /health/live. Defaults: {_quote(LIVENESS_DEFAULTS)}.",
    )


class Rollout(_Wire):
    """How a change of image (or model) rolls out."""

    progress_deadline_seconds: int = Field(
        default=600,
        ge=10,
        le=86400,
        description="Deployment progressDeadlineSeconds: a rollout without progress for this long "
        "has failed. Default: 600.",
    )
    auto_rollback: bool = Field(
        default=True,
        description="On a failed rollout, serve the last good image again (spec is never written). "
        "Default: true.",
    )
    surge: SurgeMode = Field(
        default="auto",
        description="surge: start new pods before old ones stop (maxSurge 25%, maxUnavailable 0). "
        "no-surge: replace one pod at a time (maxSurge 0, maxUnavailable 1). auto (default): surge, "
        "switching to no-surge when a surge pod cannot be scheduled for lack of nvidia.com/gpu "
        "(unless the disruption budget forbids it); an Event says so.",
    )


_BUDGET_VALUE = cel(
    (
        f"type(self) == string ? self.matches('{PERCENT_PATTERN}') : int(self) >= 0 && int(self) <= {INT32_MAX}",
        f"a disruption budget is a count (0 to {INT32_MAX}) or a percentage such as '50%'",
    )
)


class DisruptionBudget(_Wire):
    """A PodDisruptionBudget for the pods; set exactly one field. No budget = no PDB."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "has(self.minAvailable) != has(self.maxUnavailable)",
                "set exactly one of disruptionBudget.minAvailable or disruptionBudget.maxUnavailable",
            )
        )
    )

    min_available: IntOrString | None = Field(
        default=None,
        description="Pods that must stay up: a count or a percentage ('50%').",
        json_schema_extra=_BUDGET_VALUE,
    )
    max_unavailable: IntOrString | None = Field(
        default=None,
        description="Pods that may be down: a count or a percentage ('25%').",
        json_schema_extra=_BUDGET_VALUE,
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DisruptionBudget:
        if (self.min_available is None) == (self.max_unavailable is None):
            raise ValueError(
                "set exactly one of disruptionBudget.minAvailable or disruptionBudget.maxUnavailable"
            )
        for value in (self.min_available, self.max_unavailable):
            if isinstance(value, str) and not re.match(PERCENT_PATTERN, value):
                raise ValueError("a disruption budget is a count or a percentage such as '50%'")
            if isinstance(value, int) and value < 0:
                raise ValueError("a disruption budget count must not be negative")
            if isinstance(value, int) and value > INT32_MAX:
                raise ValueError(f"a disruption budget count must be at most {INT32_MAX}")
        return self


# ---------------------------------------------------------------- pod knobs (what platform teams set on every pod)

#: A DNS-1123 subdomain: names of Secrets, ServiceAccounts, PriorityClasses, RuntimeClasses,
#: ConfigMaps and claims.
SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A DNS-1123 label: volume names.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A label or annotation key: an optional DNS prefix and a name of at most 63 characters.
QUALIFIED_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"

#: Pod label keys the operator sets itself (the selector, the recommended labels, the revision
#: labels under modelship.io/): ``spec.podLabels`` may not set them, or the Deployment could lose
#: its pods, the watches their objects, or the rollout engine its revisions. A unit test checks
#: that every label the builder puts on a pod is covered here.
OPERATOR_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
#: Pod annotations the operator sets (the scrape hints; its owner annotation is under modelship.io/).
OPERATOR_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
#: Every key under this prefix (and its subdomains) is the operator's, on labels and annotations.
OPERATOR_PREFIX = "modelship.io/"
#: Annotation prefixes that would loosen the restricted security context (an AppArmor profile
#: of "unconfined", a seccomp profile by the legacy annotations): refused in podAnnotations.
SECURITY_ANNOTATION_PREFIXES = (
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
)
#: The container's imagePullPolicy when spec.imagePullPolicy is unset: images are pinned by tag
#: or digest, so a node that has the image need not ask the registry again.
DEFAULT_PULL_POLICY = "IfNotPresent"
#: The server's own paths: the image's venv and scripts, its writable scratch dirs (/tmp,
#: /dev/shm), the kernel's and the system's. An extra volume may be mounted neither on nor above
#: nor below one of them (it would hide the server, or its scratch space).
# bandit B108: a list of paths users may NOT mount over (/tmp among them), not a use of /tmp.
SERVER_PATHS = (  # nosec B108
    "/opt/venv", "/opt/modelship", "/tmp", "/dev", "/proc", "/sys", "/usr", "/bin", "/sbin", "/lib",
    "/lib64", "/etc", "/var/run", "/run",
)
#: Volume names the operator uses (its scratch dirs) or may use later (the ``modelship-`` prefix).
OPERATOR_VOLUMES = ("tmp", "dshm")
OPERATOR_VOLUME_PREFIX = "modelship-"
MOUNT_PATH_PATTERN = r"^(/[^/\x00]+)+$"


def _quoted_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def reserved_pod_key(key: str, kind: Literal["label", "annotation"]) -> str | None:
    """Why ``key`` may not be set in podLabels/podAnnotations, or None when it may."""
    domain = key.split("/", 1)[0] if "/" in key else ""
    if domain == OPERATOR_PREFIX.rstrip("/") or domain.endswith("." + OPERATOR_PREFIX.rstrip("/")):
        return f"{key}: keys under {OPERATOR_PREFIX} are the operator's"
    if kind == "label" and key in OPERATOR_LABELS:
        return f"{key}: the operator sets this label (selector and recommended labels)"
    if kind == "annotation" and key in OPERATOR_ANNOTATIONS:
        return f"{key}: the operator sets this annotation"
    if kind == "annotation" and key.startswith(SECURITY_ANNOTATION_PREFIXES):
        return f"{key}: would change the pod's restricted security profile"
    return None


def _pod_keys_rule(kind: Literal["label", "annotation"]) -> dict[str, Any]:
    prefix = OPERATOR_PREFIX.rstrip("/")
    own = OPERATOR_LABELS if kind == "label" else OPERATOR_ANNOTATIONS
    escaped = prefix.replace(".", "[.]")
    rule = f"self.all(k, !(k in {_quoted_list(own)}) && !k.matches('^([^/]*[.])?{escaped}/')"
    message = f"pod{kind.title()}s must not set the operator's keys ({', '.join(own)} or under {OPERATOR_PREFIX})"
    if kind == "annotation":
        rule += "".join(f" && !k.startsWith('{p}')" for p in SECURITY_ANNOTATION_PREFIXES)
        message += " nor AppArmor/seccomp annotations"
    return {"maxProperties": 32, **cel((rule + ")", message))}


def _shadows(path: str, reserved: str) -> bool:
    return path == reserved or path.startswith(reserved + "/") or reserved.startswith(path + "/")


class LocalObjectReference(_Wire):
    """A reference to an object in the ModelDeployment's namespace, by name."""

    name: str = Field(max_length=253, pattern=SUBDOMAIN_PATTERN, description="The object's name.")


class KeyToPath(_Wire):
    """Project one key of a ConfigMap or Secret to a relative path (as in a Pod)."""

    key: str = Field(min_length=1, max_length=253)
    path: str = Field(min_length=1, max_length=253, pattern=r"^[^/].*$",
                      description="Relative path; may not start with '/' nor contain '..'.",
                      json_schema_extra=cel(("!self.matches('(^|/)[.][.](/|$)')", "items[].path may not contain '..'")))
    mode: int | None = Field(default=None, ge=0, le=0o777, description="File mode bits (0-0777).")

    @field_validator("path")
    @classmethod
    def _no_dotdot(cls, path: str) -> str:
        if ".." in path.split("/"):
            raise ValueError("items[].path may not contain '..'")
        return path


class ConfigMapVolume(_Wire):
    """A ConfigMap as a volume (as in a Pod)."""

    name: str = Field(max_length=253, pattern=SUBDOMAIN_PATTERN, description="The ConfigMap's name.")
    items: list[KeyToPath] | None = Field(default=None, max_length=16, description="Keys to project. Default (unset): all.")
    optional: bool | None = Field(default=None, description="Start the pod without it. Default (unset): false.")
    default_mode: int | None = Field(default=None, ge=0, le=0o777, description="File mode bits. Default (unset): 0644.")


class SecretVolume(_Wire):
    """A Secret as a volume (as in a Pod)."""

    secret_name: str = Field(max_length=253, pattern=SUBDOMAIN_PATTERN, description="The Secret's name.")
    items: list[KeyToPath] | None = Field(default=None, max_length=16, description="Keys to project. Default (unset): all.")
    optional: bool | None = Field(default=None, description="Start the pod without it. Default (unset): false.")
    default_mode: int | None = Field(default=None, ge=0, le=0o777, description="File mode bits. Default (unset): 0644.")


class ClaimVolume(_Wire):
    """A PersistentVolumeClaim as a volume (as in a Pod)."""

    claim_name: str = Field(max_length=253, pattern=SUBDOMAIN_PATTERN, description="The claim's name.")
    read_only: bool | None = Field(default=None, description="Attach read-only. Default (unset): false (the mount decides).")


class Volume(_Wire):
    """An extra volume: exactly one of configMap, secret or persistentVolumeClaim (no other kinds:
    hostPath and the like are how a pod escapes its restrictions)."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "[has(self.configMap), has(self.secret), has(self.persistentVolumeClaim)].filter(x, x).size() == 1",
                "a volume sets exactly one of configMap, secret or persistentVolumeClaim",
            )
        )
    )

    name: str = Field(
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Volume name (a DNS label), unique; not tmp, dshm or modelship-* (the operator's).",
        json_schema_extra=cel(
            (f"!(self in {_quoted_list(OPERATOR_VOLUMES)}) && !self.startsWith('{OPERATOR_VOLUME_PREFIX}')",
             f"volume names {', '.join(OPERATOR_VOLUMES)} and {OPERATOR_VOLUME_PREFIX}* are the operator's")
        ),
    )
    config_map: ConfigMapVolume | None = None
    secret: SecretVolume | None = None
    persistent_volume_claim: ClaimVolume | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        if sum(s is not None for s in (self.config_map, self.secret, self.persistent_volume_claim)) != 1:
            raise ValueError("a volume sets exactly one of configMap, secret or persistentVolumeClaim")
        if self.name in OPERATOR_VOLUMES or self.name.startswith(OPERATOR_VOLUME_PREFIX):
            raise ValueError(f"volume names {', '.join(OPERATOR_VOLUMES)} and {OPERATOR_VOLUME_PREFIX}* are the operator's")
        return self


class VolumeMount(_Wire):
    """Where an extra volume appears in the server container."""

    name: str = Field(max_length=63, pattern=DNS_LABEL_PATTERN, description="A volume of spec.volumes.")
    mount_path: str = Field(
        max_length=256,
        pattern=MOUNT_PATH_PATTERN,
        description="Absolute path, without '..'. Not on, above or below the server's own paths ("
        + ", ".join(SERVER_PATHS) + ").",
        json_schema_extra=cel(
            ("!self.matches('/[.][.](/|$)') && !" + _quoted_list(SERVER_PATHS)
             + ".exists(p, self == p || self.startsWith(p + '/') || p.startsWith(self + '/'))",
             "volumeMounts[].mountPath must be absolute, without '..', and not on, above or below the server's own "
             "paths (" + ", ".join(SERVER_PATHS) + ")")
        ),
    )
    sub_path: str | None = Field(default=None, max_length=253, pattern=r"^[^/].*$",
                                 description="A path inside the volume. Default (unset): its root.")
    read_only: bool = Field(default=True, description="Mount read-only. Default: true.")

    @field_validator("mount_path")
    @classmethod
    def _not_the_servers(cls, path: str) -> str:
        if ".." in path.split("/") or any(_shadows(path, p) for p in SERVER_PATHS):
            raise ValueError(
                "volumeMounts[].mountPath must be absolute, without '..', and not on, above or below the server's own "
                "paths (" + ", ".join(SERVER_PATHS) + ")"
            )
        return path

    @field_validator("sub_path")
    @classmethod
    def _sub_path_inside(cls, sub_path: str | None) -> str | None:
        if sub_path is not None and ".." in sub_path.split("/"):
            raise ValueError("volumeMounts[].subPath may not contain '..'")
        return sub_path


class TopologySpreadConstraint(_Wire):
    """How to spread the pods across topology domains (as in a Pod). When labelSelector is
    omitted the operator fills it with the pods' selector labels, so the constraint counts this
    ModelDeployment's pods (a constraint without a selector counts none and spreads nothing)."""

    max_skew: int = Field(ge=1, le=1000, description="Largest allowed difference in pod counts between domains.")
    topology_key: str = Field(min_length=1, max_length=317, pattern=QUALIFIED_KEY_PATTERN,
                              description="Node label of the domains, e.g. topology.kubernetes.io/zone.")
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        description="DoNotSchedule (a hard rule) or ScheduleAnyway (a preference)."
    )
    label_selector: dict[str, Any] | None = Field(
        default=None, description="Pods to count, as in a Pod. Default (unset): this ModelDeployment's pods (its selector)."
    )
    match_label_keys: list[str] | None = Field(
        default=None, max_length=16, description="Pod label keys whose values narrow the count, e.g. "
        "[pod-template-hash] to spread each revision by itself. Default: none."
    )
    min_domains: int | None = Field(default=None, ge=1, le=1000, description="Minimum number of eligible domains.")
    node_affinity_policy: Literal["Honor", "Ignore"] | None = None
    node_taints_policy: Literal["Honor", "Ignore"] | None = None


# ---------------------------------------------------------------- autoscaling

#: The server's per-pod gauge of requests being handled (``modelship_server.metrics``): the
#: InFlightRequests metric of an HPA, served by a custom-metrics adapter.
IN_FLIGHT_METRIC = "modelship_requests_in_flight"
MetricType = Literal["CPU", "Memory", "InFlightRequests"]
#: The resource a utilization metric needs a request for.
_METRIC_RESOURCE = {"CPU": "cpu", "Memory": "memory"}


class Metric(_Wire):
    """One scaling signal; the HPA scales to satisfy the most demanding one."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "has(self.averageUtilization) != has(self.averageValue)",
                "a metric sets exactly one of averageUtilization or averageValue",
            ),
            (
                "self.type != 'InFlightRequests' || has(self.averageValue)",
                "the InFlightRequests metric takes averageValue (requests per pod)",
            ),
        )
    )

    type: MetricType = Field(
        description="CPU or Memory (per-pod usage, from metrics-server) or InFlightRequests (the server's "
        f"{IN_FLIGHT_METRIC} gauge per pod, from a custom-metrics adapter: prometheus-adapter or KEDA)."
    )
    average_utilization: int | None = Field(
        default=None, ge=1, le=1000,
        description="CPU/Memory only: target average usage in percent of the container's request "
        "(resources.requests must set it).",
    )
    average_value: IntOrString | None = Field(
        default=None,
        description="Target average per pod: a quantity (CPU '500m', Memory '2Gi', InFlightRequests '4').",
        json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN},
    )

    @model_validator(mode="after")
    def _one_target(self) -> Metric:
        if (self.average_utilization is None) == (self.average_value is None):
            raise ValueError("a metric sets exactly one of averageUtilization or averageValue")
        if self.type == "InFlightRequests" and self.average_value is None:
            raise ValueError("the InFlightRequests metric takes averageValue (requests per pod)")
        if isinstance(self.average_value, str) and not re.match(QUANTITY_PATTERN, self.average_value):
            raise ValueError(f"averageValue {self.average_value!r} is not a quantity (e.g. 500m, 2Gi, 4)")
        return self


#: The scaling signal when ``autoscaling.metrics`` is empty.
DEFAULT_METRICS = ({"type": "CPU", "averageUtilization": 80},)


class Autoscaling(_Wire):
    """A HorizontalPodAutoscaler (autoscaling/v2) on the Deployment, owned by the operator. While
    it is set the operator leaves the Deployment's replicas to the HPA (spec.replicas is not used);
    removing it deletes the HPA and spec.replicas applies again."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "(has(self.minReplicas) ? self.minReplicas : 1) <= self.maxReplicas",
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            )
        )
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest pods. Default: 1.")
    max_replicas: int = Field(ge=1, le=1000, description="Most pods.")
    metrics: list[Metric] = Field(
        default_factory=list,
        max_length=8,
        description="What to scale on. Default (empty): CPU at averageUtilization 80 (needs resources.requests.cpu).",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    behavior: dict[str, Any] | None = Field(
        default=None,
        description="Scale-up/scale-down policies and stabilization windows, as in an autoscaling/v2 HPA. "
        "Default: none (the HPA's: scale down after a 300 s stabilization window).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        return self

    def effective_metrics(self) -> list[Metric]:
        return list(self.metrics) or [Metric.model_validate(m) for m in DEFAULT_METRICS]


_SPEC_RULES = cel(
    (
        "!has(self.disruptionBudget) || !has(self.disruptionBudget.minAvailable) || "
        "type(self.disruptionBudget.minAvailable) == string || "
        "(has(self.replicas) ? self.replicas : 1) == 0 || "
        "int(self.disruptionBudget.minAvailable) < (has(self.autoscaling) ? "
        "(has(self.autoscaling.minReplicas) ? self.autoscaling.minReplicas : 1) : "
        "(has(self.replicas) ? self.replicas : 1))",
        "disruptionBudget.minAvailable must be less than replicas (autoscaling.minReplicas with autoscaling), "
        "or no pod could ever be evicted",
        ".disruptionBudget",
    ),
    (
        "!has(self.serving) || !has(self.serving.device) || !self.serving.device.startsWith('cuda') || "
        "(has(self.gpu) && (!has(self.gpu.count) || self.gpu.count > 0))",
        "serving.device cuda needs gpu.count >= 1",
        ".serving",
    ),
    (
        "!has(self.model.s3) || !has(self.model.s3.credentials) || !has(self.env) || "
        "self.env.all(e, !(e.name in [" + ", ".join(f"'{n}'" for n in CREDENTIAL_ENV) + "]))",
        "spec.env must not set the AWS credential vars (" + ", ".join(CREDENTIAL_ENV) + ") when "
        "model.s3.credentials is set: the operator sets them",
        ".env",
    ),
    (
        "!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && self.volumes.exists(v, v.name == m.name))",
        "every volumeMounts[].name must name a volume of spec.volumes",
        ".volumeMounts",
    ),
    (
        "!has(self.autoscaling) || ((has(self.autoscaling.metrics) && size(self.autoscaling.metrics) > 0) ? "
        "self.autoscaling.metrics.all(m, !has(m.averageUtilization) || (has(self.resources) && "
        "has(self.resources.requests) && (m.type == 'CPU' ? 'cpu' : 'memory') in self.resources.requests)) : "
        "(has(self.resources) && has(self.resources.requests) && 'cpu' in self.resources.requests))",
        "an autoscaling metric by averageUtilization needs resources.requests of its resource (cpu or memory); "
        "the default metric is CPU utilization",
        ".autoscaling",
    ),
)


def _repeated(values: Iterable[str]) -> list[str]:
    """The values that occur more than once, sorted."""
    seen = list(values)
    return sorted({v for v in seen if seen.count(v) > 1})


class ModelDeploymentSpec(_Wire):
    """The desired state: one model served by one image, N replicas."""

    model_config = ConfigDict(json_schema_extra=_SPEC_RULES)

    image: str = Field(
        max_length=512,
        description="Server image with a tag or a digest (registry/repo:tag or repo@sha256:...). "
        "Rollouts and rollbacks are by this value.",
        json_schema_extra=cel(
            (
                f"self.matches('{IMAGE_PATTERN}')",
                "image must carry a tag or a digest, e.g. repo/server:1.2.0 or repo@sha256:<64 hex>",
            )
        ),
    )
    model: ModelSource
    replicas: Annotated[int, OUTSIDE_POD] = Field(default=1, ge=0, le=1000, description="Pod count. Default: 1.")
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="Container requests/limits (no GPUs)."
    )
    gpu: GPU | None = Field(default=None, description="GPU needs. Default: none (CPU only).")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Extra node labels to require (merged with the GPU product label)."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=64,
        description="Extra tolerations (the nvidia.com/gpu one is added for GPU pods).",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    affinity: dict[str, Any] | None = Field(default=None, description="Pod affinity, as in a Pod.")
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        description="Extra env vars for the server (names unique). The MODELSHIP_* vars the operator "
        "derives from the spec (" + ", ".join(RESERVED_ENV) + ") cannot be set here.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            **cel(
                (
                    "self.all(e, !(e.name in [" + ", ".join(f"'{n}'" for n in RESERVED_ENV) + "]))",
                    "spec.env must not set the MODELSHIP_* vars the operator derives from the spec ("
                    + ", ".join(RESERVED_ENV) + "): set the spec field instead",
                )
            ),
        },
    )
    serving: Serving = Field(default_factory=Serving, description="Server settings.")
    probes: Probes = Field(default_factory=Probes, description="Health probe settings.")
    rollout: Annotated[Rollout, OUTSIDE_POD] = Field(default_factory=Rollout, description="Rollout settings.")
    disruption_budget: Annotated[DisruptionBudget | None, OUTSIDE_POD] = Field(
        default=None, description="PodDisruptionBudget. Default: none."
    )
    # Pod knobs. Each defaults to None (absent), so a spec that does not use them keeps the
    # revision hash it had before they existed (no rollout on upgrade).
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16,
        description="Secrets (docker-registry) for pulling the image from a private registry. Default: none "
        "(the ServiceAccount's).",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description=f"The container's imagePullPolicy: Always, IfNotPresent or Never. Default (unset): {DEFAULT_PULL_POLICY} "
        "(the image is pinned by tag or digest)."
    )
    service_account_name: str | None = Field(
        default=None, max_length=253, pattern=SUBDOMAIN_PATTERN,
        description="ServiceAccount the pod runs as (e.g. for workload identity). Default: none (the namespace's "
        "default). Its API token is still not mounted (automountServiceAccountToken: false).",
    )
    pod_labels: dict[str, str] | None = Field(
        default=None,
        description="Extra pod labels. Default: none. May not set the operator's own labels ("
        + ", ".join(OPERATOR_LABELS) + ", " + OPERATOR_PREFIX + "*).",
        json_schema_extra=_pod_keys_rule("label"),
    )
    pod_annotations: dict[str, str] | None = Field(
        default=None,
        description="Extra pod annotations. Default: none. May not set the operator's own ("
        + ", ".join(OPERATOR_ANNOTATIONS) + ", " + OPERATOR_PREFIX + "*) nor AppArmor/seccomp annotations.",
        json_schema_extra=_pod_keys_rule("annotation"),
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, pattern=SUBDOMAIN_PATTERN,
        description="PriorityClass of the pods. Default: none (the cluster's global default).",
    )
    topology_spread_constraints: list[TopologySpreadConstraint] | None = Field(
        default=None, max_length=8,
        description="Spread the pods across zones or nodes. Default: none. A constraint without labelSelector "
        "gets this ModelDeployment's pod selector.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    runtime_class_name: str | None = Field(
        default=None, max_length=253, pattern=SUBDOMAIN_PATTERN,
        description="RuntimeClass of the pods, e.g. nvidia. Default: none (the node's default runtime).",
    )
    volumes: list[Volume] | None = Field(
        default=None, max_length=16,
        description="Extra volumes: ConfigMaps, Secrets and PersistentVolumeClaims only. Default: none.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    volume_mounts: list[VolumeMount] | None = Field(
        default=None, max_length=16,
        description="Where the extra volumes appear in the server container (read-only unless readOnly: false). "
        "Default: none.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["mountPath"]},
    )
    autoscaling: Annotated[Autoscaling | None, OUTSIDE_POD] = Field(
        default=None,
        description="Scale the pods with load through an autoscaling/v2 HorizontalPodAutoscaler the operator "
        "owns; spec.replicas is then not used. Default: none (spec.replicas pods).",
    )

    @field_validator("pod_labels", "pod_annotations")
    @classmethod
    def _pod_keys(cls, values: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        if values is None:
            return None
        kind: Literal["label", "annotation"] = "label" if info.field_name == "pod_labels" else "annotation"
        if len(values) > 32:
            raise ValueError(f"at most 32 pod {kind}s")
        for key, value in values.items():
            if not re.match(QUALIFIED_KEY_PATTERN, key) or len(key) > 317:
                raise ValueError(f"{key!r} is not a valid {kind} key (prefix/name, name at most 63 characters)")
            if kind == "label" and not re.match(LABEL_VALUE_PATTERN, value):
                raise ValueError(f"{key}: {value!r} is not a valid label value (at most 63 characters, alphanumeric "
                                 "at both ends, '-', '_', '.' inside)")
            why = reserved_pod_key(key, kind)
            if why:
                raise ValueError(why)
        return values

    @field_validator("volumes")
    @classmethod
    def _volume_names_unique(cls, volumes: list[Volume] | None) -> list[Volume] | None:
        twice = _repeated(v.name for v in volumes or [])
        if twice:
            raise ValueError(f"volumes named {', '.join(twice)} more than once")
        return volumes

    @field_validator("volume_mounts")
    @classmethod
    def _mount_paths_unique(cls, mounts: list[VolumeMount] | None) -> list[VolumeMount] | None:
        twice = _repeated(m.mount_path for m in mounts or [])
        if twice:
            raise ValueError(f"volumeMounts mount {', '.join(twice)} more than once")
        return mounts

    @field_validator("image")
    @classmethod
    def _image_pinned(cls, image: str) -> str:
        if not re.match(IMAGE_PATTERN, image):
            raise ValueError("image must carry a tag or a digest, e.g. repo/server:1.2.0 or repo@sha256:<64 hex>")
        return image

    @field_validator("env")
    @classmethod
    def _env_not_reserved(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [e.name for e in env]
        taken = sorted(set(names) & set(RESERVED_ENV))
        if taken:
            raise ValueError(f"env must not set {', '.join(taken)}: the operator derives it from the spec")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"env sets {', '.join(twice)} more than once")
        return env

    @model_validator(mode="after")
    def _cross_field(self) -> ModelDeploymentSpec:
        device = self.serving.device or ""
        if device.startswith("cuda") and self.gpu_count == 0:
            raise ValueError("serving.device cuda needs gpu.count >= 1")
        s3 = self.model.s3
        if s3 is not None and s3.credentials is not None:
            taken = sorted(e.name for e in self.env if e.name in CREDENTIAL_ENV)
            if taken:
                raise ValueError(
                    f"spec.env must not set {', '.join(taken)} when model.s3.credentials is set: "
                    "the operator sets them"
                )
        budget = self.disruption_budget
        floor = self.autoscaling.min_replicas if self.autoscaling else self.replicas
        if budget and isinstance(budget.min_available, int) and 0 < floor <= budget.min_available:
            raise ValueError(
                "disruptionBudget.minAvailable must be less than replicas (autoscaling.minReplicas with autoscaling), "
                "or no pod could ever be evicted"
            )
        volumes = {v.name for v in self.volumes or []}
        for mount in self.volume_mounts or []:
            if mount.name not in volumes:
                raise ValueError(f"volumeMounts: {mount.name} is not a volume of spec.volumes")
        if self.autoscaling:
            for metric in self.autoscaling.effective_metrics():
                resource = _METRIC_RESOURCE.get(metric.type)
                if metric.average_utilization is not None and resource not in self.resources.requests:
                    raise ValueError(
                        f"autoscaling: {metric.type} utilization needs resources.requests.{resource} "
                        "(utilization is a percentage of the request)"
                    )
        return self

    @property
    def gpu_count(self) -> int:
        return self.gpu.count if self.gpu else 0


@functools.cache
def pod_fields() -> tuple[str, ...]:
    """Wire names of the spec fields that reach the pod template: every field not marked
    :data:`OUTSIDE_POD`. They define a revision (see ``rollout.revisions``)."""
    return tuple(
        field.alias or name
        for name, field in ModelDeploymentSpec.model_fields.items()
        if not any(isinstance(m, OutsidePod) for m in field.metadata)
    )


class Condition(_Wire):
    """A standard Kubernetes condition (metav1.Condition)."""

    model_config = ConfigDict(extra="ignore")

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


#: Keys of ``status.rollout`` that modelship <= 0.1.0 wrote as "" (or 0) to mean unset, because
#: its merge patches could not clear a key.
_LEGACY_UNSET = ("specHash", "phase", "servingRevision", "stableRevision", "noSurgeSince", "handledRetry",
                 "handledRollbackTo")


class _Record(_Wire):
    """Base of the status parts the rollout engine updates in place, on its own copy of them."""

    model_config = ConfigDict(extra="ignore", frozen=False)


class HistoryEntry(_Record):
    """One revision: a distinct pod-relevant spec that was rolled out, and how it ended."""

    revision: int = Field(ge=1)
    image: str
    model: str = Field(description="The model URI of this revision.")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: Outcome
    message: str = ""
    reason: str = Field(default="", description="Why it ended so (e.g. RolloutComplete, ImagePullFailed, ManualRollback).")
    hash: str = Field(default="", description="Hash of the revision's pod-relevant spec.")
    template: dict[str, Any] | None = Field(
        default=None,
        description="The revision's pod-relevant spec (image, model, serving, ...): what a rollback restores.",
    )


class RolloutEvidence(_Record):
    """Failure evidence seen but not yet established (kept so a restart does not reset its clock)."""

    key: str = Field(description="What was seen on what, e.g. ImagePullFailed:pod/NAME.")
    kind: str = Field(description="ImagePullFailed, CrashLoopBackOff, StartupTimeout, Unschedulable, ...")
    message: str = ""
    first_seen: datetime = Field(description="When it was first seen, or when it becomes evidence.")


class RolloutState(_Record):
    """Where the rollout stands: written by the operator, read back on every pass, so a restarted
    operator resumes where it was. Unset fields are absent."""

    spec_hash: str | None = Field(default=None, description="Hash of the pod-relevant spec last acted on (no-flap memory).")
    phase: RolloutPhase | None = Field(default=None, description="Progressing, Complete, RolledBack or Halted.")
    serving_revision: int | None = Field(default=None, description="The revision the Deployment carries.")
    stable_revision: int | None = Field(default=None, description="The last known good revision.")
    manual: bool = Field(default=False, description="The serving revision was chosen by a manual rollback.")
    no_surge: bool = Field(default=False, description="surge: auto switched this rollout to no-surge (GPUs short).")
    no_surge_since: datetime | None = None
    evidence: RolloutEvidence | None = Field(default=None, description="Failure evidence waiting to be established.")
    handled_retry: str | None = Field(default=None, description="Last modelship.io/retry value acted on.")
    handled_rollback_to: str | None = Field(default=None, description="Last modelship.io/rollback-to value acted on.")
    message: str = ""

    @model_validator(mode="before")
    @classmethod
    def _legacy_empty_values(cls, data: Any) -> Any:
        """Status written by modelship <= 0.1.0: "" / 0 / an evidence without key read as unset."""
        if not isinstance(data, Mapping):
            return data
        data = {k: None if k in _LEGACY_UNSET and v in ("", 0) else v for k, v in data.items()}
        if isinstance(data.get("evidence"), Mapping) and not data["evidence"].get("key"):
            data["evidence"] = None
        return data


class AutoscalingStatus(_Wire):
    """What the HorizontalPodAutoscaler last reported (absent while autoscaling is off)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="The HorizontalPodAutoscaler's name.")
    current_replicas: int | None = Field(default=None, description="Pods the HPA last saw.")
    desired_replicas: int | None = Field(default=None, description="Pods the HPA wants now.")
    last_scale_time: datetime | None = Field(default=None, description="When the HPA last changed the replica count.")
    message: str = Field(default="", description="Why the HPA cannot scale or compute its metrics, when so.")


class ModelDeploymentStatus(_Wire):
    """The observed state, written only by the operator."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(default=None, description="metadata.generation last acted on.")
    image: str | None = Field(default=None, description="The image serving now.")
    stable_image: str | None = Field(default=None, description="The last image that became Ready.")
    replicas: int = Field(default=0, description="Pods (all revisions).")
    ready_replicas: int = Field(default=0, description="Ready pods.")
    updated_replicas: int = Field(default=0, description="Pods of the current pod template.")
    available_replicas: int = Field(default=0, description="Pods ready for minReadySeconds.")
    selector: str | None = Field(default=None, description="Pod label selector (for the scale subresource).")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded (plus kstatus' Reconciling and Stalled).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    history: list[HistoryEntry] = Field(default_factory=list, description="Newest last, bounded.")
    rollout: RolloutState = Field(default_factory=RolloutState, description="Rollout bookkeeping (see kubectl modelship).")
    autoscaling: AutoscalingStatus | None = Field(
        default=None, description="The HorizontalPodAutoscaler's view, while spec.autoscaling is set."
    )

    def merge_patch(self) -> dict[str, Any]:
        """The whole status as a JSON merge patch: an unset field is sent as null, so what a pass
        cleared is removed on the server too (an omitted key would keep its old value). Lists
        replace the stored ones whole; their items carry no nulls."""
        patch: dict[str, Any] = _without_nulls_in_lists(self.model_dump(by_alias=True, mode="json"))
        return patch


def _without_nulls_in_lists(value: Any, in_list: bool = False) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls_in_lists(v, in_list) for k, v in value.items() if not (in_list and v is None)}
    if isinstance(value, list):
        return [_without_nulls_in_lists(v, True) for v in value]
    return value


class ModelDeployment(_Wire):
    """A served model. Validated at the operator's door; the CRD is generated from this."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation") or 0)


class InvalidSpec(ValueError):
    """The spec cannot be served as written. The message is for the user: it goes into the
    Degraded condition (reason InvalidSpec) and an Event, so it names fields by their wire path."""


def format_errors(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``spec.model.format: Input should be ...``."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return "; ".join(lines)


def parse(body: Mapping[str, Any]) -> ModelDeployment:
    """Validate a ModelDeployment as the API returns it; raise InvalidSpec with a readable message.

    The CRD already rejects most of this; the operator re-checks because a CRD from another
    release may differ, and some rules (e.g. every model format) are only the operator's.
    """
    if not isinstance(body.get("spec"), Mapping):
        raise InvalidSpec("spec: missing")
    try:
        spec = ModelDeploymentSpec.model_validate(body["spec"])
    except ValidationError as error:
        raise InvalidSpec(format_errors(error, "spec")) from error
    return ModelDeployment(metadata=dict(body.get("metadata") or {}), spec=spec, status=parse_status(body))


def parse_status(body: Mapping[str, Any]) -> ModelDeploymentStatus:
    """The status as last written; an unreadable one counts as empty (the operator rewrites it)."""
    try:
        return ModelDeploymentStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return ModelDeploymentStatus()
