"""Desired child objects of a ModelDeployment: Deployment, Service, PodDisruptionBudget.

Pure functions: a validated ``api.ModelDeployment`` in, plain dicts out (ready for server-side
apply). No API calls, no clock, no environment. The reconcile pass applies the *whole* object every
time, so whatever a builder leaves out is released by the field manager, and drift is undone.

Rollout seams: ``desired_deployment`` takes ``image`` (serve another image than ``spec.image``)
and ``surge`` (the mode the rollout engine resolved, see :func:`resolve_surge`). A rollback
serves a whole earlier revision: the engine hands in a ModelDeployment whose pod-relevant
fields are that revision's.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Literal

from modelship_operator.core import api, autoscaling, pod_knobs, server_env

Obj = dict[str, Any]
Resolved = Literal["surge", "no-surge"]

MANAGER = "modelship"
#: On every child and pod: what the operator's watches select.
MANAGED_LABELS = {"app.kubernetes.io/managed-by": MANAGER}
#: On every child and pod template: the owning ModelDeployment's name, in full (a label value
#: could not hold a 253-char name), so a watch event on a pod leads back to its owner.
OWNER_ANNOTATION = "modelship.io/modeldeployment"
CONTAINER = "server"
PORT_NAME = "http"
GRPC_PORT_NAME = "grpc"
#: Shared memory each front end uses to hand tensors to a shared model process (the server's
#: arena), and the most front ends `workers: 0` starts.
SHM_PER_WORKER_MIB = 16
MAX_AUTO_WORKERS = 8
READY_PATH = "/health"
LIVE_PATH = "/health/live"
UID = 10001
#: ReplicaSets kept for `kubectl rollout undo` and inspection; modelship rolls back from its own
#: status history, so a few are enough.
REVISION_HISTORY_LIMIT = 5
#: Surge used when surging: the Deployment default, with no pod taken away before its successor
#: is ready (maxUnavailable 0) - the service never drops below its replica count.
SURGE = {"maxSurge": "25%", "maxUnavailable": 0}
#: No surge: one pod at a time is replaced; needed when no spare GPU exists for an extra pod.
NO_SURGE = {"maxSurge": 0, "maxUnavailable": 1}
STARTUP_PROBE_TIMEOUT_S = 3
#: The server's exit code when the model fails to load for good (MODELSHIP_EXIT_ON_LOAD_FAILURE):
#: a pod that exits with it is rollout evidence at once, not after the startup budget.
MODEL_LOAD_FAILED_EXIT_CODE = 3
MAX_NAME = 63
_NOT_LABEL = re.compile(r"[^a-z0-9-]+")


def child_name(name: str) -> str:
    """The name shared by every child: the ModelDeployment's own name when it is a valid
    DNS-1035 label (what a Service needs), else a readable prefix plus a short stable hash.

    A ModelDeployment name may be a 253-char DNS subdomain with dots or a leading digit; a
    Service name may not, and label values stop at 63 characters.
    """
    if len(name) <= MAX_NAME and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    base = _NOT_LABEL.sub("-", name.lower()).strip("-")
    if not base[:1].isalpha():
        base = f"md-{base}"
    return f"{base[: MAX_NAME - len(digest) - 1].rstrip('-')}-{digest}"


def image_version(image: str) -> str:
    """A label-safe version for app.kubernetes.io/version: the tag, else the digest's start."""
    if "@" in image:
        return image.rsplit(":", 1)[-1][:12]
    tag = image.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", tag)[:MAX_NAME]
    return tag.strip("-_.") or "unknown"


def selector_labels(md: api.ModelDeployment) -> dict[str, str]:
    """The pod selector: derived from the name only, so it never changes (it is immutable)."""
    return {
        "app.kubernetes.io/name": "modelship-server",
        "app.kubernetes.io/instance": child_name(md.name),
    }


def labels(md: api.ModelDeployment, image: str | None = None) -> dict[str, str]:
    """Kubernetes recommended labels for children and pods."""
    return {
        **selector_labels(md),
        "app.kubernetes.io/version": image_version(image or md.spec.image),
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "modelship",
        **MANAGED_LABELS,
    }


def owner_name(obj: Any) -> str | None:
    """The ModelDeployment a child or pod belongs to, from the annotation or the controller ref."""
    meta = obj.get("metadata") or {}
    name = (meta.get("annotations") or {}).get(OWNER_ANNOTATION)
    if name:
        return str(name)
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == api.KIND and str(ref.get("apiVersion", "")).startswith(f"{api.GROUP}/"):
            return str(ref.get("name"))
    return None


def selector_string(md: api.ModelDeployment) -> str:
    """The selector as `status.selector` carries it for the scale subresource."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(md).items()))


def owner_reference(md: api.ModelDeployment) -> Obj:
    """The controller reference: deleting the ModelDeployment garbage-collects the child."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": md.name,
        "uid": md.metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(md: api.ModelDeployment, image: str | None = None) -> Obj:
    return {
        "name": child_name(md.name),
        "namespace": md.namespace,
        "labels": labels(md, image),
        "annotations": {OWNER_ANNOTATION: md.name},
        "ownerReferences": [owner_reference(md)],
    }


def resolve_surge(mode: api.SurgeMode, *, gpus_short: bool = False) -> Resolved:
    """``spec.rollout.surge`` as the Deployment strategy to use now. ``auto`` is surge (the
    service never drops below its replica count) until the rollout engine saw a surge pod that
    cannot get ``nvidia.com/gpu`` in this rollout (``gpus_short``): then no-surge, which needs
    no spare GPU."""
    if mode == "no-surge" or (mode == "auto" and gpus_short):
        return "no-surge"
    return "surge"


def strategy(mode: Resolved) -> dict[str, Any]:
    """The Deployment's rollingUpdate parameters for a resolved surge mode."""
    return dict(SURGE if mode == "surge" else NO_SURGE)


def startup_failure_threshold(probes: api.Probes) -> int:
    """Enough startup checks to cover the whole load budget: ceil(timeout / period)."""
    return max(1, math.ceil(probes.startup_timeout_seconds / probes.startup_period_seconds))


def _probe(path: str, settings: dict[str, int]) -> Obj:
    return {"httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTP"}, "successThreshold": 1, **settings}


def probes(spec_probes: api.Probes) -> dict[str, Obj]:
    """startupProbe and readinessProbe on /health (model loaded and warmed), liveness on
    /health/live (process responsive). Liveness only starts after startup succeeded, so a slow
    load is bounded by startupTimeoutSeconds, not killed by liveness."""
    overrides = {
        "readinessProbe": (api.READINESS_DEFAULTS, spec_probes.readiness),
        "livenessProbe": (api.LIVENESS_DEFAULTS, spec_probes.liveness),
    }
    out = {
        "startupProbe": _probe(
            READY_PATH,
            {
                "periodSeconds": spec_probes.startup_period_seconds,
                "timeoutSeconds": STARTUP_PROBE_TIMEOUT_S,
                "failureThreshold": startup_failure_threshold(spec_probes),
            },
        )
    }
    for key, (defaults, override) in overrides.items():
        given = override.model_dump(by_alias=True, exclude_none=True)
        out[key] = _probe(LIVE_PATH if key == "livenessProbe" else READY_PATH, {**defaults, **given})
    return out


def container_env(spec: api.ModelDeploymentSpec) -> list[Obj]:
    """The MODELSHIP_* contract with the server image (:mod:`server_env`), the model source's
    credentials, then the user's extra env (which may not repeat those names: the API refuses
    it)."""
    return [*server_env.operator_env(spec), *credential_env(spec.model), *(e.wire() for e in spec.env)]


#: Where the web identity token is projected (not the ServiceAccount token's usual path: the
#: pod mounts no API token, ``automountServiceAccountToken: false``).
WEB_IDENTITY_DIR = "/var/run/secrets/modelship/aws"
# bandit B105: the file name the token is projected to, not a token.
WEB_IDENTITY_TOKEN = "token"  # nosec B105
#: The projected token's lifetime; the kubelet refreshes it at 80%, the server reads it once
#: per download.
WEB_IDENTITY_EXPIRATION_S = 3600
MODEL_PVC_VOLUME = "modelship-model"
WEB_IDENTITY_VOLUME = "modelship-aws-web-identity"


def credential_env(model: api.ModelSource) -> list[Obj]:
    """The AWS variables of ``model.s3.credentials`` (:data:`api.CREDENTIAL_ENV`): a Secret's keys
    by secretKeyRef (the operator never reads the Secret, so its values are copied nowhere), or
    the web identity's role and projected token file."""
    creds = model.s3.credentials if model.s3 else None
    if creds is None:
        return []
    if creds.secret_ref is not None:
        ref = creds.secret_ref
        keys = [("AWS_ACCESS_KEY_ID", ref.access_key_id_key), ("AWS_SECRET_ACCESS_KEY", ref.secret_access_key_key)]
        if ref.session_token_key:
            keys.append(("AWS_SESSION_TOKEN", ref.session_token_key))
        return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key}}} for name, key in keys]
    if creds.web_identity is None:  # S3Credentials holds exactly one; this satisfies the types
        return []
    return [
        {"name": "AWS_ROLE_ARN", "value": creds.web_identity.role_arn},
        {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": f"{WEB_IDENTITY_DIR}/{WEB_IDENTITY_TOKEN}"},
    ]


def model_source_volumes(model: api.ModelSource) -> list[tuple[Obj, Obj]]:
    """(volume, volumeMount) pairs the model source needs: a pvc:// claim, read-only at
    ``server_env.PVC_MOUNT_PATH``; a projected ServiceAccount token for S3 web identity."""
    out: list[tuple[Obj, Obj]] = []
    pvc = model.pvc
    if pvc is not None:
        out.append((
            {"name": MODEL_PVC_VOLUME, "persistentVolumeClaim": {"claimName": pvc[0], "readOnly": True}},
            {"name": MODEL_PVC_VOLUME, "mountPath": server_env.PVC_MOUNT_PATH, "readOnly": True},
        ))
    creds = model.s3.credentials if model.s3 else None
    if creds is not None and creds.web_identity is not None:
        token = {
            "audience": creds.web_identity.audience,
            "expirationSeconds": WEB_IDENTITY_EXPIRATION_S,
            "path": WEB_IDENTITY_TOKEN,
        }
        out.append((
            {"name": WEB_IDENTITY_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}},
            {"name": WEB_IDENTITY_VOLUME, "mountPath": WEB_IDENTITY_DIR, "readOnly": True},
        ))
    return out


def termination_grace_seconds(serving: api.Serving) -> int:
    """Kubelet's kill deadline: the server's routing delay plus its drain budget, plus margin
    for the interpreter to exit. Shorter, and SIGKILL cuts requests that were already in."""
    return serving.shutdown_delay_seconds + serving.drain_timeout_seconds + 5


def resources(spec: api.ModelDeploymentSpec) -> Obj:
    """requests/limits from the spec plus the GPU limit (extended resources need no request)."""
    requests = dict(spec.resources.requests)
    limits = dict(spec.resources.limits)
    if spec.gpu_count > 0:
        limits[api.GPU_RESOURCE] = spec.gpu_count
    out: Obj = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def scheduling(spec: api.ModelDeploymentSpec) -> Obj:
    """nodeSelector / tolerations / affinity; GPU pods get the product label and taint toleration."""
    node_selector = dict(spec.node_selector)
    tolerations = [t.wire() for t in spec.tolerations]
    if spec.gpu_count > 0:
        if spec.gpu and spec.gpu.product:
            node_selector[api.GPU_PRODUCT_LABEL] = spec.gpu.product
        gpu_toleration = {"key": api.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        if gpu_toleration not in tolerations:
            tolerations.append(gpu_toleration)
    out: Obj = {}
    if node_selector:
        out["nodeSelector"] = node_selector
    if tolerations:
        out["tolerations"] = tolerations
    if spec.affinity:
        out["affinity"] = spec.affinity
    return out


def pod_security_context() -> Obj:
    """Restricted Pod Security Standard, pod level; UID/GID 10001 is the images' user."""
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Obj:
    """Restricted Pod Security Standard, container level; writable paths are emptyDirs."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def container_ports(serving: api.Serving) -> list[Obj]:
    """http always; grpc when the gRPC service is on."""
    ports = [{"name": PORT_NAME, "containerPort": serving.port, "protocol": "TCP"}]
    if serving.grpc.enabled:
        ports.append({"name": GRPC_PORT_NAME, "containerPort": serving.grpc.port, "protocol": "TCP"})
    return ports


def service_ports(serving: api.Serving) -> list[Obj]:
    """The Service's ports, by the container ports' names (appProtocol tells meshes/ingresses)."""
    ports = [{"name": PORT_NAME, "port": serving.port, "targetPort": PORT_NAME, "protocol": "TCP"}]
    if serving.grpc.enabled:
        ports.append({"name": GRPC_PORT_NAME, "port": serving.grpc.port, "targetPort": GRPC_PORT_NAME,
                      "protocol": "TCP", "appProtocol": "grpc"})
    return ports


def scratch_volumes(serving: api.Serving) -> list[tuple[str, str, Obj]]:
    """(name, mount path, emptyDir) of the writable paths on the read-only root: /tmp always;
    /dev/shm when front ends hand tensors to a shared model process (each needs SHM_PER_WORKER
    of it, the runtime's default /dev/shm is 64 MiB)."""
    # bandit B108: "/tmp" here is a mount path inside the pod, backed by a private emptyDir
    # (the root filesystem is read-only); no host temp directory is involved.
    volumes: list[tuple[str, str, Obj]] = [("tmp", "/tmp", {})]  # nosec B108
    if serving.workers != 1 and serving.model_process != "per-worker":
        workers = serving.workers or MAX_AUTO_WORKERS
        size = f"{SHM_PER_WORKER_MIB * (workers + 1)}Mi"
        # bandit B108: as /tmp above, the pod's own memory-backed emptyDir.
        volumes.append(("dshm", "/dev/shm", {"medium": "Memory", "sizeLimit": size}))  # nosec B108
    return volumes


def pod_template(md: api.ModelDeployment, image: str) -> Obj:
    spec = md.spec
    container = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": pod_knobs.pull_policy(spec),
        "ports": container_ports(spec.serving),
        "env": container_env(spec),
        "resources": resources(spec),
        **probes(spec.probes),
        "securityContext": container_security_context(),
        "volumeMounts": [
            *({"name": name, "mountPath": path} for name, path, _ in scratch_volumes(spec.serving)),
            *(mount for _, mount in model_source_volumes(spec.model)),
            *pod_knobs.extra_mounts(spec),
        ],
        # The server writes why it exits to /dev/termination-log; the log tail when it could not.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "metadata": {
            "labels": pod_knobs.pod_labels(spec, labels(md, image)),
            "annotations": pod_knobs.pod_annotations(spec, {
                OWNER_ANNOTATION: md.name,
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(spec.serving.port),
                "prometheus.io/path": "/metrics",
            }),
        },
        "spec": {
            "containers": [container],
            "volumes": [
                *({"name": name, "emptyDir": empty_dir} for name, _, empty_dir in scratch_volumes(spec.serving)),
                *(volume for volume, _ in model_source_volumes(spec.model)),
                *pod_knobs.extra_volumes(spec),
            ],
            "securityContext": pod_security_context(),
            # The server needs no API access, and service links would inject *_PORT env vars
            # (a Service named "modelship" would collide with MODELSHIP_PORT).
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": termination_grace_seconds(spec.serving),
            **scheduling(spec),
            **pod_knobs.pod_spec_fields(spec, selector_labels(md)),
        },
    }


def desired_deployment(
    md: api.ModelDeployment,
    *,
    image: str | None = None,
    surge: Resolved | None = None,
) -> Obj:
    """The Deployment serving ``image`` (default: spec.image) with the resolved surge mode
    (default: how a rollout starts, :func:`resolve_surge`)."""
    image = image or md.spec.image
    mode = surge or resolve_surge(md.spec.rollout.surge)
    # With autoscaling the HPA owns replicas: leaving the field out never fights its writes
    # (see core/autoscaling.py for the hand-over).
    replicas = {} if md.spec.autoscaling else {"replicas": md.spec.replicas}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(md, image),
        "spec": {
            **replicas,
            "selector": {"matchLabels": selector_labels(md)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": strategy(mode)},
            "progressDeadlineSeconds": md.spec.rollout.progress_deadline_seconds,
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "template": pod_template(md, image),
        },
    }


def desired_service(md: api.ModelDeployment) -> Obj:
    """A ClusterIP Service on serving.port; only ready pods (model loaded) get traffic."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md),
            "ports": service_ports(md.spec.serving),
        },
    }


def desired_pdb(md: api.ModelDeployment) -> Obj | None:
    """The PodDisruptionBudget, or None when the spec asks for none (the handler deletes any)."""
    budget = md.spec.disruption_budget
    if budget is None:
        return None
    spec: Obj = {
        "selector": {"matchLabels": selector_labels(md)},
        # Pods that never became ready (crash loop, bad image) must not block node drains.
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    if budget.min_available is not None:
        spec["minAvailable"] = budget.min_available
    else:
        spec["maxUnavailable"] = budget.max_unavailable
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _metadata(md), "spec": spec}


def desired_hpa(md: api.ModelDeployment) -> Obj | None:
    """The autoscaling/v2 HorizontalPodAutoscaler on the Deployment, or None without
    ``spec.autoscaling`` (the reconcile pass deletes any)."""
    if md.spec.autoscaling is None:
        return None
    return {
        "apiVersion": autoscaling.API_VERSION,
        "kind": autoscaling.KIND,
        "metadata": _metadata(md),
        "spec": autoscaling.hpa_spec(md.spec.autoscaling, child_name(md.name)),
    }
