"""Sample ModelDeployments for the unit tests (plain dicts as the API returns them), and a
fake monotonic clock."""

from __future__ import annotations

import copy
from typing import Any

from modelship_operator.core import api

BASE: dict[str, Any] = {
    "apiVersion": "modelship.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "resnet", "namespace": "ml", "uid": "1234-uid", "generation": 3},
    "spec": {
        "image": "registry.example.com/ml/resnet-server:1.4.2",
        "model": {"name": "resnet", "uri": "file:///models/resnet18.pt2", "format": "torch-export"},
        "replicas": 2,
    },
}


def body(**spec: Any) -> dict[str, Any]:
    """A ModelDeployment body with spec keys replaced (None deletes a key)."""
    out = copy.deepcopy(BASE)
    for key, value in spec.items():
        if value is None:
            out["spec"].pop(key, None)
        else:
            out["spec"][key] = value
    return out


def md(name: str | None = None, **spec: Any) -> api.ModelDeployment:
    data = body(**spec)
    if name:
        data["metadata"]["name"] = name
    return api.parse(data)


class MonotonicClock:
    """A ``time.monotonic`` stand-in that moves only when a test sets ``now``."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
