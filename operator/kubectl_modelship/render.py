"""Pure rendering and reading of ModelDeployment objects (plain dicts): tables, progress, verdicts."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

Obj = Mapping[str, Any]


def _time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def age(timestamp: object, now: dt.datetime) -> str:
    """kubectl-style age: 42s, 5m, 3h, 2d; ``<unknown>`` when missing."""
    when = _time(timestamp)
    if when is None:
        return "<unknown>"
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration(start: object, end: object) -> str:
    a, b = _time(start), _time(end)
    if a is None or b is None:
        return "-"
    return age(a.isoformat(), b)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by three spaces, like ``kubectl get``."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def short(text: object, width: int = 100) -> str:
    """One line, at most ``width`` characters (tables stay readable; status has the full text)."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def conditions(md: Obj) -> dict[str, Obj]:
    return {c.get("type", ""): c for c in (md.get("status") or {}).get("conditions") or ()}


def rollout_state(md: Obj) -> Obj:
    return (md.get("status") or {}).get("rollout") or {}


def status_word(md: Obj) -> str:
    """One word for the STATUS column: the most important thing a user should know."""
    conds = conditions(md)
    degraded = conds.get("Degraded") or {}
    if degraded.get("status") == "True":
        return str(degraded.get("reason") or "Degraded")
    progressing = conds.get("Progressing") or {}
    if rollout_state(md).get("phase") == "Progressing" or progressing.get("status") == "True":
        return "RollingOut"
    ready = conds.get("Ready") or {}
    if ready.get("status") == "True":
        return "Ready"
    return str(ready.get("reason") or "Pending")


def ready_text(md: Obj) -> str:
    spec = md.get("spec") or {}
    status = md.get("status") or {}
    return f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas', 1) or 0)}"


def render_get(mds: Sequence[Obj], now: dt.datetime, *, all_namespaces: bool = False) -> str:
    headers = ["NAME", "IMAGE", "READY", "STATUS", "REVISION", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for md in mds:
        meta = md.get("metadata") or {}
        status = md.get("status") or {}
        image = status.get("image") or (md.get("spec") or {}).get("image") or ""
        row = [meta.get("name"), image, ready_text(md), status_word(md),
               rollout_state(md).get("servingRevision") or "-", age(meta.get("creationTimestamp"), now)]
        if all_namespaces:
            row.insert(0, meta.get("namespace"))
        rows.append(row)
    return table(headers, rows)


def render_detail(md: Obj, events: Sequence[Obj], now: dt.datetime) -> str:
    """``get NAME``: the table row, which image is desired/serving/stable, conditions, events."""
    status = md.get("status") or {}
    state = rollout_state(md)
    lines = [render_get([md], now), ""]
    lines.append(f"Desired image:  {(md.get('spec') or {}).get('image', '-')}")
    lines.append(f"Serving image:  {status.get('image') or '-'} (revision {state.get('servingRevision') or '-'})")
    lines.append(f"Stable image:   {status.get('stableImage') or '-'} (revision {state.get('stableRevision') or '-'})")
    if state.get("message"):
        lines.append(f"Rollout:        {state.get('phase', '-')}: {state['message']}")
    lines.append("")
    rows = [[c.get("type"), c.get("status"), c.get("reason"), age(c.get("lastTransitionTime"), now),
             short(c.get("message"))] for c in status.get("conditions") or ()]
    lines.append(table(["CONDITION", "STATUS", "REASON", "AGE", "MESSAGE"], rows) if rows else "No conditions yet.")
    if events:
        lines.append("")
        recent = sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))[-8:]
        rows = [[e.get("type"), e.get("reason"), age(e.get("lastTimestamp") or e.get("eventTime"), now),
                 short(e.get("message"))] for e in recent]
        lines.append(table(["TYPE", "REASON", "AGE", "MESSAGE"], rows))
    return "\n".join(lines)


def render_history(md: Obj, now: dt.datetime) -> str:
    state = rollout_state(md)
    history = (md.get("status") or {}).get("history") or ()
    if not history:
        return "No revisions yet (has the operator seen this ModelDeployment?)."
    rows = []
    for e in history:
        marks = [m for m, rev in (("serving", state.get("servingRevision")), ("stable", state.get("stableRevision")))
                 if rev == e.get("revision")]
        rows.append([e.get("revision"), e.get("image"), e.get("model") or "-", age(e.get("startedAt"), now),
                     duration(e.get("startedAt"), e.get("finishedAt")), e.get("outcome"), e.get("reason") or "",
                     ",".join(marks)])
    return table(["REVISION", "IMAGE", "MODEL", "STARTED", "TOOK", "OUTCOME", "REASON", ""], rows)


def progress_bar(done: int, total: int, width: int = 20) -> str:
    """``[########------------]``; an empty target (0 replicas) counts as full."""
    filled = width if total <= 0 else min(width, max(0, round(width * done / total)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def render_progress(md: Obj) -> str:
    """One line for ``watch``: revision, bar of ready replicas, updated/ready counts, state."""
    spec = md.get("spec") or {}
    status = md.get("status") or {}
    state = rollout_state(md)
    want = int(spec.get("replicas", 1) or 0)
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    history = {e.get("revision"): e for e in status.get("history") or ()}
    serving = history.get(state.get("servingRevision")) or {}
    target = f"revision {state.get('servingRevision', '?')} ({serving.get('image') or spec.get('image')})"
    return (f"{target} {progress_bar(min(updated, ready), want)} updated {updated}/{want} "
            f"ready {ready}/{want}  {status_word(md)}")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Where a rollout stands, for ``watch``: ``code`` is None while it is still going."""

    code: int | None
    message: str


def verdict(md: Obj) -> Verdict:
    """Has the rollout of the current spec ended, and how (0 success, 1 rolled back/halted)?"""
    meta = md.get("metadata") or {}
    status = md.get("status") or {}
    state = rollout_state(md)
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0) or not state:
        return Verdict(None, "waiting for the operator to pick up the spec")
    phase = state.get("phase")
    message = str(state.get("message") or phase or "")
    desired = (md.get("spec") or {}).get("image")
    if phase == "Complete" and status.get("image") == desired:
        return Verdict(0, f"rollout complete: {message}")
    if phase == "Halted":
        return Verdict(1, f"rollout halted: {message}")
    if phase == "RolledBack":
        if state.get("manual"):
            return Verdict(1, f"{message}; spec.image {desired} is not serving")
        return Verdict(1, message)
    return Verdict(None, message)


def find_revision(md: Obj, revision: int) -> tuple[Obj | None, str]:
    """A history entry a user may roll back to, or a message saying why not."""
    history = (md.get("status") or {}).get("history") or ()
    known = ", ".join(str(e.get("revision")) for e in history) or "none"
    name = (md.get("metadata") or {}).get("name")
    for entry in history:
        if entry.get("revision") == revision:
            if entry.get("outcome") != "Succeeded":
                return None, (f"revision {revision} of {name} never succeeded (outcome {entry.get('outcome')}); "
                              f"only Succeeded revisions can be rolled back to")
            return entry, ""
    return None, f"modeldeployment {name} has no revision {revision} (known: {known})"
