"""The data the rollout core works on: revisions, the state kept in status, observations.

Pure. See :mod:`modelship_operator.rollout` for the behaviour and the annotation contract.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

Obj = Mapping[str, Any]

REVISION_LABEL = "modelship.io/revision"
"""Pod-template label: the revision number the pods belong to."""
REVISION_HASH_LABEL = "modelship.io/revision-hash"
"""Pod-template label: hash of the revision's pod-relevant spec."""
ROLLBACK_TO_ANNOTATION = "modelship.io/rollback-to"
RETRY_ANNOTATION = "modelship.io/retry"

POD_FIELDS: tuple[str, ...] = (
    "image",
    "model",
    "serving",
    "resources",
    "gpu",
    "env",
    "probes",
    "nodeSelector",
    "tolerations",
    "affinity",
)
"""Spec fields that end up in the pod template: changing any of them is a new revision."""

DEFAULT_STARTUP_TIMEOUT_S = 900.0
"""Mirrors ``spec.probes.startupTimeoutSeconds``' default when the spec passed in lacks it."""


class Phase:
    PROGRESSING = "Progressing"
    COMPLETE = "Complete"
    ROLLED_BACK = "RolledBack"
    HALTED = "Halted"


class Outcome:
    PROGRESSING = "Progressing"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"
    HALTED = "Halted"


IN_FLIGHT = (Outcome.PROGRESSING, Outcome.HALTED)


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the shell read from the API this pass (plain dicts)."""

    deployment: Obj | None = None
    pods: Sequence[Obj] = ()


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False"
    reason: str
    message: str


# ---------------------------------------------------------------- revision identity


def pod_template(spec: Obj) -> dict[str, Any]:
    """The pod-relevant part of a spec (``None`` fields dropped, so absent == null)."""
    return {k: spec[k] for k in POD_FIELDS if spec.get(k) is not None}


def revision_hash(template: Obj) -> str:
    """Stable short hash of a pod template (key order and whitespace do not matter)."""
    blob = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def effective_spec(spec: Obj, template: Obj) -> dict[str, Any]:
    """The spec with its pod-relevant fields replaced by ``template`` (to build the Deployment)."""
    rest = {k: v for k, v in spec.items() if k not in POD_FIELDS}
    return {**rest, **template}


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def revision_pods(pods: Sequence[Obj], revision: int) -> list[Obj]:
    """The pods labelled with ``revision``."""
    want = str(revision)
    return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL) == want]




@dataclasses.dataclass
class State:
    """The rollout's memory, loaded from and dumped to ``status`` (history + ``status.rollout``)."""

    history: list[dict[str, Any]]
    spec_hash: str | None = None
    phase: str | None = None
    serving: int | None = None
    stable: int | None = None
    manual: bool = False
    no_surge: bool = False
    no_surge_since: str | None = None
    evidence: dict[str, Any] | None = None
    handled_retry: str | None = None
    handled_rollback: str | None = None
    image: str | None = None
    message: str = ""

    @classmethod
    def load(cls, status: Obj) -> State:
        r = dict(status.get("rollout") or {})
        evidence = dict(r.get("evidence") or {})
        return cls(
            history=[dict(e) for e in status.get("history") or () if isinstance(e, Mapping)],
            spec_hash=r.get("specHash") or None,
            phase=r.get("phase") or None,
            serving=r.get("servingRevision") or None,
            stable=r.get("stableRevision") or None,
            manual=bool(r.get("manual")),
            no_surge=bool(r.get("noSurge")),
            no_surge_since=r.get("noSurgeSince") or None,
            evidence=evidence if evidence.get("key") else None,
            handled_retry=r.get("handledRetry") or None,
            handled_rollback=r.get("handledRollbackTo") or None,
            image=status.get("image"),
            message=r.get("message") or "",
        )

    def entry(self, revision: int | None) -> dict[str, Any] | None:
        for e in self.history:
            if e.get("revision") == revision:
                return e
        return None

    def in_flight(self) -> dict[str, Any] | None:
        for e in reversed(self.history):
            if e.get("outcome") in IN_FLIGHT:
                return e
        return None

    def next_revision(self) -> int:
        return max((int(e.get("revision") or 0) for e in self.history), default=0) + 1

    def trim(self, limit: int) -> None:
        keep = {self.serving, self.stable}
        while len(self.history) > limit:
            drop = next((e for e in self.history if e.get("revision") not in keep), None)
            if drop is None:
                return
            self.history.remove(drop)

    def dump(self) -> dict[str, Any]:
        stable = self.entry(self.stable)
        return {
            "image": self.image,
            "stableImage": stable.get("image") if stable else None,
            "history": self.history,
            # Never None below: status is merge-patched, where an omitted key keeps its old value,
            # so "cleared" must be written as "" / 0 (the empty values load() reads back as unset).
            "rollout": {
                "specHash": self.spec_hash or "",
                "phase": self.phase or "",
                "servingRevision": self.serving or 0,
                "stableRevision": self.stable or 0,
                "manual": self.manual,
                "noSurge": self.no_surge,
                "noSurgeSince": self.no_surge_since or "",
                "evidence": self.evidence or {"key": "", "kind": "", "message": "", "firstSeen": ""},
                "handledRetry": self.handled_retry or "",
                "handledRollbackTo": self.handled_rollback or "",
                "message": self.message,
            },
        }



def describe(entry: Obj | None) -> str:
    """``revision N (image)`` for messages."""
    if not entry:
        return "nothing"
    return f"revision {entry.get('revision')} ({entry.get('image')})"
