"""Where the spec's pod knobs land in the pod template: pull secrets and policy, ServiceAccount,
extra labels and annotations, priority, topology spread, RuntimeClass, extra volumes.

Pure, like :mod:`builders` (which calls these). The rules that keep the knobs from touching what
the operator owns (selector labels, its annotations, its volumes and paths, the restricted
security context) are validated in :mod:`api`; here the operator's own values are put *last*,
so even a CRD that let a reserved key through could not override them.
"""

from __future__ import annotations

from typing import Any

from modelship_operator.core import api

Obj = dict[str, Any]

def pull_policy(spec: api.ModelDeploymentSpec) -> str:
    return spec.image_pull_policy or api.DEFAULT_PULL_POLICY


def pod_labels(spec: api.ModelDeploymentSpec, own: dict[str, str]) -> dict[str, str]:
    """The user's extra labels, then the operator's ``own`` (which win)."""
    return {**(spec.pod_labels or {}), **own}


def pod_annotations(spec: api.ModelDeploymentSpec, own: dict[str, str]) -> dict[str, str]:
    """The user's extra annotations, then the operator's ``own`` (which win)."""
    return {**(spec.pod_annotations or {}), **own}


def topology_spread(spec: api.ModelDeploymentSpec, selector: dict[str, str]) -> list[Obj]:
    """The constraints as in a Pod; one without labelSelector counts this ModelDeployment's pods
    (``selector``): without one it would count no pod and spread nothing."""
    out = []
    for constraint in spec.topology_spread_constraints or []:
        wire = constraint.wire()
        wire.setdefault("labelSelector", {"matchLabels": dict(selector)})
        out.append(wire)
    return out


def extra_volumes(spec: api.ModelDeploymentSpec) -> list[Obj]:
    """spec.volumes as Pod volumes (the API allows only ConfigMaps, Secrets and claims)."""
    return [v.wire() for v in spec.volumes or []]


def extra_mounts(spec: api.ModelDeploymentSpec) -> list[Obj]:
    """spec.volumeMounts as container mounts; readOnly is always written (default true)."""
    return [m.model_dump(by_alias=True, exclude_none=True, mode="json") for m in spec.volume_mounts or []]


def pod_spec_fields(spec: api.ModelDeploymentSpec, selector: dict[str, str]) -> Obj:
    """The knobs that are pod spec fields; absent ones are left out (the API server's defaults)."""
    out: Obj = {}
    if spec.image_pull_secrets:
        out["imagePullSecrets"] = [s.wire() for s in spec.image_pull_secrets]
    if spec.service_account_name:
        out["serviceAccountName"] = spec.service_account_name
    if spec.priority_class_name:
        out["priorityClassName"] = spec.priority_class_name
    if spec.runtime_class_name:
        out["runtimeClassName"] = spec.runtime_class_name
    if spec.topology_spread_constraints:
        out["topologySpreadConstraints"] = topology_spread(spec, selector)
    return out
