"""Revisions and what the rollout engine reads: pod templates, their hash, history, observations.

Pure. See :mod:`modelship_operator.core.rollout` for the behaviour and the annotation contract.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from modelship_operator.core import api

Obj = Mapping[str, Any]

REVISION_LABEL = "modelship.io/revision"
"""Pod-template label: the revision number the pods belong to."""
REVISION_HASH_LABEL = "modelship.io/revision-hash"
"""Pod-template label: hash of the revision's pod-relevant spec."""
ROLLBACK_TO_ANNOTATION = "modelship.io/rollback-to"
RETRY_ANNOTATION = "modelship.io/retry"

IN_FLIGHT: tuple[api.Outcome, ...] = ("Progressing", "Halted")
"""Outcomes of a revision that is still being tried."""


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the shell read from the API this pass (plain dicts, as the API returns them)."""

    deployment: Obj | None = None
    pods: Sequence[Obj] = ()


@dataclasses.dataclass(frozen=True)
class Event:
    """A Kubernetes Event the pass records on the ModelDeployment."""

    type: str  # Normal | Warning
    reason: str
    message: str


# ---------------------------------------------------------------- revision identity


def pod_template(spec: api.ModelDeploymentSpec) -> dict[str, Any]:
    """The pod-relevant part of a spec, on the wire (``None`` fields dropped, so absent ==
    null): every field :func:`api.pod_fields` names. This is what a revision records and a
    rollback restores."""
    wire = spec.wire()
    return {k: wire[k] for k in api.pod_fields() if wire.get(k) is not None}


def revision_hash(template: Obj) -> str:
    """Stable short hash of a pod template (key order and whitespace do not matter)."""
    blob = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def serving_spec(spec: api.ModelDeploymentSpec, template: Obj) -> api.ModelDeploymentSpec:
    """``spec`` with its pod-relevant fields replaced by a revision's ``template`` (what a
    rollback serves). Fields outside the pod (replicas, rollout, budget) stay the spec's.

    A template recorded by an older operator may no longer validate; then only the image is
    taken from it (rollbacks are by image first and foremost).
    """
    wire = spec.wire()
    merged = {**{k: v for k, v in wire.items() if k not in api.pod_fields()}, **template}
    try:
        return api.ModelDeploymentSpec.model_validate(merged)
    except ValidationError:
        return spec.model_copy(update={"image": template.get("image", spec.image)})


def revision_pods(pods: Sequence[Obj], revision: int) -> list[Obj]:
    """The pods labelled with ``revision``."""
    want = str(revision)
    return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL) == want]


def template_labels(deployment: Obj | None) -> Mapping[str, str]:
    """The pod-template labels of a Deployment as the API returns it."""
    return ((((deployment or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


# ---------------------------------------------------------------- history


def entry(history: Sequence[api.HistoryEntry], revision: int | None) -> api.HistoryEntry | None:
    return next((e for e in history if e.revision == revision), None) if revision is not None else None


def in_flight(history: Sequence[api.HistoryEntry]) -> api.HistoryEntry | None:
    """The newest revision still being tried."""
    return next((e for e in reversed(history) if e.outcome in IN_FLIGHT), None)


def next_revision(history: Sequence[api.HistoryEntry]) -> int:
    return max((e.revision for e in history), default=0) + 1


def trim(history: list[api.HistoryEntry], limit: int, keep: set[int | None]) -> None:
    """Drop the oldest entries beyond ``limit``, never one whose revision is in ``keep``."""
    while len(history) > limit:
        drop = next((e for e in history if e.revision not in keep), None)
        if drop is None:
            return
        history.remove(drop)


def describe(entry: api.HistoryEntry | None) -> str:
    """``revision N (image)`` for messages."""
    return f"revision {entry.revision} ({entry.image})" if entry else "nothing"


def model_of(template: Obj) -> str:
    """The model a template serves, for history: its URI (else its name)."""
    model = template.get("model") or {}
    return str(model.get("uri") or model.get("name") or "")
