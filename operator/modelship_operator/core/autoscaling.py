"""The HorizontalPodAutoscaler a ModelDeployment with ``spec.autoscaling`` owns, and who owns
the Deployment's ``replicas``.

Pure, like :mod:`builders`. The ownership story (server-side apply):

- autoscaling off: the operator applies ``spec.replicas`` on the Deployment, as field manager
  ``modelship`` with force, so ``spec.replicas`` and ``kubectl scale md`` work and a
  ``kubectl scale deploy`` is undone;
- autoscaling on: the operator's apply leaves ``replicas`` out, so the HPA's writes (through
  the scale subresource, manager ``kube-controller-manager``) are never fought. A field that a
  manager stops applying is *removed* when nobody else owns it - the Deployment would drop to
  the default of 1 pod - so before any apply without ``replicas`` the operator first applies
  ``replicas`` at its live value as a second manager, :data:`HANDOVER_MANAGER` (without force:
  if the HPA owns it with another value, the HPA keeps it). The HPA's next write takes the
  field from that manager. A Deployment created with autoscaling on has no owner of
  ``replicas`` (the API server's default, 1, which a later apply leaves alone): the HPA raises
  it to ``minReplicas`` on its next sync.
"""

from __future__ import annotations

from typing import Any

from modelship_operator.core import api

Obj = dict[str, Any]

#: The field manager that holds ``spec.replicas`` between the operator letting it go and the
#: HPA's first write.
HANDOVER_MANAGER = "modelship-replicas-handover"
KIND = "HorizontalPodAutoscaler"
API_VERSION = "autoscaling/v2"


def metric(m: api.Metric) -> Obj:
    """One ``spec.autoscaling.metrics`` item as an autoscaling/v2 MetricSpec."""
    if m.type == "InFlightRequests":
        return {
            "type": "Pods",
            "pods": {
                "metric": {"name": api.IN_FLIGHT_METRIC},
                "target": {"type": "AverageValue", "averageValue": m.average_value},
            },
        }
    target: Obj = (
        {"type": "Utilization", "averageUtilization": m.average_utilization}
        if m.average_utilization is not None
        else {"type": "AverageValue", "averageValue": m.average_value}
    )
    return {"type": "Resource", "resource": {"name": m.type.lower(), "target": target}}


def hpa_spec(spec: api.Autoscaling, deployment_name: str) -> Obj:
    out: Obj = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name},
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.max_replicas,
        "metrics": [metric(m) for m in spec.effective_metrics()],
    }
    if spec.behavior:
        out["behavior"] = spec.behavior
    return out


def replicas_seed(deployment: Obj, replicas: int) -> Obj:
    """What :data:`HANDOVER_MANAGER` applies: only the Deployment's ``spec.replicas``."""
    meta = deployment["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": replicas},
    }


def seed_replicas(spec: api.Autoscaling, live: Obj | None) -> int:
    """The replicas to hand over: the live count kept within [minReplicas, maxReplicas]
    (the HPA would move it there anyway); ``minReplicas`` for a Deployment being created."""
    current = ((live or {}).get("spec") or {}).get("replicas")
    if current is None:
        return spec.min_replicas
    return max(spec.min_replicas, min(spec.max_replicas, int(current)))


def observed(hpa: Obj | None) -> api.AutoscalingStatus | None:
    """``status.autoscaling`` from the HPA as the API shows it."""
    if hpa is None:
        return None
    st = hpa.get("status") or {}
    problems = [
        f"{c.get('type')}: {c.get('reason')}: {c.get('message', '')}".strip()
        for c in st.get("conditions") or []
        if c.get("status") == "False" and c.get("type") in ("AbleToScale", "ScalingActive")
    ]
    return api.AutoscalingStatus(
        name=hpa["metadata"]["name"],
        current_replicas=st.get("currentReplicas"),
        desired_replicas=st.get("desiredReplicas"),
        last_scale_time=st.get("lastScaleTime"),
        message="; ".join(problems),
    )
