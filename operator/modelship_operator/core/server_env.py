"""The contract with the server image: the ``MODELSHIP_*`` variables the operator sets.

One table, :data:`CONTRACT`, maps each variable to how it is derived from the spec. Everything
else reads it: the builder emits it (:func:`operator_env`), the API refuses a ``spec.env`` that
sets any of its names (:data:`RESERVED`, in the pydantic validator and in the CRD's CEL rule), and
a unit test feeds what the builder emits into the server's own settings parser, so a variable
renamed on either side fails a test instead of being silently ignored by the server.

Other ``MODELSHIP_*`` variables (log level, queue size, timeouts, ...) are the user's to set in
``spec.env``: the server reads them, the operator does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the API imports this module for RESERVED; only the type goes the other way
    from modelship_operator.core.api import ModelDeploymentSpec

Derive = Callable[["ModelDeploymentSpec"], "str | None"]


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _device(spec: ModelDeploymentSpec) -> str:
    """An explicit ``serving.device`` wins; else cuda with a GPU (the pod is not ready without
    one, see MODELSHIP_REQUIRE_GPU), cpu without."""
    return spec.serving.device or ("cuda" if spec.gpu_count > 0 else "cpu")


def _input_shape(spec: ModelDeploymentSpec) -> str | None:
    shape = spec.model.input_shape
    return ",".join(map(str, shape)) if shape else None


CONTRACT: dict[str, Derive] = {
    "MODELSHIP_MODEL_NAME": lambda s: s.model.name,
    "MODELSHIP_MODEL_URI": lambda s: s.model.uri,
    "MODELSHIP_MODEL_FORMAT": lambda s: s.model.format,
    "MODELSHIP_MODEL_HANDLER": lambda s: s.model.handler,
    "MODELSHIP_MODEL_SHA256": lambda s: s.model.sha256,
    "MODELSHIP_INPUT_SHAPE": _input_shape,
    "MODELSHIP_INPUT_DATATYPE": lambda s: s.model.input_datatype if s.model.input_shape else None,
    "MODELSHIP_HOST": lambda s: "0.0.0.0",  # the kubelet probes the pod IP
    "MODELSHIP_PORT": lambda s: str(s.serving.port),
    "MODELSHIP_DEVICE": _device,
    "MODELSHIP_REQUIRE_GPU": lambda s: _bool(s.gpu_count > 0),
    "MODELSHIP_HALF_PRECISION": lambda s: _bool(s.serving.half_precision),
    "MODELSHIP_MAX_BATCH_SIZE": lambda s: str(s.serving.batching.max_batch_size),
    "MODELSHIP_MAX_LATENCY_MS": lambda s: str(s.serving.batching.max_latency_ms),
    "MODELSHIP_SHUTDOWN_DELAY_S": lambda s: str(s.serving.shutdown_delay_seconds),
    "MODELSHIP_GRACEFUL_TIMEOUT_S": lambda s: str(s.serving.drain_timeout_seconds),
    "MODELSHIP_WORKERS": lambda s: str(s.serving.workers),
    "MODELSHIP_MODEL_PROCESS": lambda s: s.serving.model_process,
    "MODELSHIP_GRPC_PORT": lambda s: str(s.serving.grpc.port) if s.serving.grpc.enabled else "0",
    # A model that cannot load ends the process (exit code builders.MODEL_LOAD_FAILED_EXIT_CODE,
    # the reason in the termination message): the kubelet restarts it (a transient download
    # failure gets retried) and the pod status says why within seconds, where a live but
    # never-ready server would only be noticed when the startup budget runs out.
    "MODELSHIP_EXIT_ON_LOAD_FAILURE": lambda s: "true",
}
"""Variable name → its value for a spec (None: not set for this spec). Order is the env order."""

RESERVED: tuple[str, ...] = tuple(CONTRACT)
"""The names ``spec.env`` may not set: all of them, also those unset for a given spec (setting
``MODELSHIP_INPUT_SHAPE`` by hand would fight ``model.inputShape`` the day it is set)."""


def operator_env(spec: ModelDeploymentSpec) -> list[dict[str, str]]:
    """The variables the operator sets for ``spec``, as container env entries."""
    values = ((name, derive(spec)) for name, derive in CONTRACT.items())
    return [{"name": name, "value": value} for name, value in values if value is not None]
