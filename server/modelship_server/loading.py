"""Loading a model file into something callable: TorchScript, torch.export, or a user handler.

The result, :class:`ServedModel`, hides the format: it takes numpy arrays (one per input,
batch first), runs them on the planned device under ``inference_mode`` and returns numpy
arrays. It runs in the batcher's worker thread, so the GPU sync of ``.cpu()`` happens there,
never on the event loop.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import tensors
from .device import DevicePlan

log = logging.getLogger("modelship.loading")

METADATA_FILE = "modelship.json"
"""Optional extra file in a TorchScript archive: ``{"inputs": [{"name", "datatype", "shape"}]}``
(write it with ``torch.jit.save(m, f, _extra_files={"modelship.json": ...})``)."""


class LoadError(Exception):
    """The model file is not loadable as the configured format, or has no usable input spec."""


Predict = Callable[..., Any]


@dataclass
class ServedModel:
    """A loaded, device-placed model with its OIP v2 metadata."""

    name: str
    platform: str
    plan: DevicePlan
    inputs: list[tensors.TensorSpec]
    outputs: list[tensors.TensorSpec] = field(default_factory=list)
    dynamic_batch: bool = True
    predict_fn: Predict | None = None
    load_seconds: float = 0.0

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def batch_rows(self, wanted: int) -> int:
        """Most rows one call may get: ``wanted`` (max_batch_size), or fewer when the model was
        exported for fewer (a bigger batch would make every caller in it fail)."""
        return min((spec.fit(0, wanted) for spec in self.inputs if spec.shape), default=wanted)

    def __post_init__(self) -> None:
        self._on_cpu = self.plan.device.type == "cpu"
        self._floats = tensors.BY_TORCH[self.plan.dtype].numpy if self.plan.dtype in tensors.BY_TORCH else None
        """The numpy dtype of the plan's floats: an input already in it goes in as it is."""

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One model call on a (batched) set of inputs; blocking, thread-safe by the batcher.

        Written for a one-row call on a tiny model, where each torch attribute read is a
        visible share of the request: the usual case (contiguous inputs already in the plan's
        dtype, one CPU tensor out in a dtype clients read) asks torch nothing it need not."""
        predict = self.predict_fn
        if predict is None:
            raise RuntimeError(f"model {self.name} has no predict function")
        args = [self._tensor(array) for array in arrays]
        with torch.inference_mode():
            result = predict(*args)
        if (
            self._on_cpu
            and type(result) is torch.Tensor
            and result.dtype not in tensors.WIDENED
            and not result.requires_grad  # a handler may hand back a parameter itself
        ):
            return [np.ascontiguousarray(result.numpy())]
        return [tensors.to_numpy(t) for t in _flatten_outputs(result)]

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        if self._on_cpu and array.dtype == self._floats and array.flags.c_contiguous:
            return torch.from_numpy(array)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if tensor.is_floating_point() and tensor.dtype != self.plan.dtype:
            tensor = tensor.to(self.plan.dtype)
        if not self._on_cpu:
            tensor = tensor.to(self.plan.device, non_blocking=True)
        return tensor

    def warm_up(self, batch_rows: int) -> None:
        """Run zeros through the model (twice: TorchScript's profiler optimises on run 2) and
        learn the output specs from what comes back."""
        if not self.inputs:
            return
        for rows in (1, batch_rows if self.dynamic_batch else 1, 1):  # full batch: allocator, kernels
            outs = self.run([_zeros(spec, spec.fit(0, rows)) for spec in self.inputs])
        if not self.outputs:
            self.outputs = [
                tensors.TensorSpec(
                    f"output__{i}",
                    tensors.dtype_of_array(out).name,
                    (-1, *out.shape[1:]) if out.ndim else (),
                )
                for i, out in enumerate(outs)
            ]


def _zeros(spec: tensors.TensorSpec, rows: int) -> np.ndarray:
    dims = [rows if i == 0 and d == -1 else spec.fit(i, max(d, 1)) for i, d in enumerate(spec.shape)]
    return np.zeros(dims, dtype=tensors.BY_NAME[spec.datatype].numpy)


def _flatten_outputs(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        return [v for v in result.values() if isinstance(v, torch.Tensor)]
    if isinstance(result, list | tuple):
        return [v for v in result if isinstance(v, torch.Tensor)]
    if isinstance(result, np.ndarray):
        return [torch.from_numpy(result)]
    raise TypeError(f"model returned {type(result).__name__}, expected a tensor or tuple of tensors")


def _specs_from_json(raw: Any, where: str) -> list[tensors.TensorSpec]:
    try:
        return [
            tensors.TensorSpec(
                str(item["name"]),
                tensors.dtype_named(item.get("datatype", "FP32"), where).name,
                tuple(int(d) for d in item["shape"]),
            )
            for item in raw
        ]
    except (KeyError, TypeError, ValueError, tensors.errors.InvalidInput) as exc:
        raise LoadError(f"{where}: bad input spec {raw!r}: {exc}") from exc


def _settings_spec(shape: list[int] | None, datatype: str) -> list[tensors.TensorSpec] | None:
    if shape is None:
        return None
    return [
        tensors.TensorSpec("input__0", tensors.dtype_named(datatype, "input_datatype").name, tuple(shape))
    ]


def load_model(
    path: Path,
    *,
    name: str,
    fmt: str,
    plan: DevicePlan,
    handler: str | None = None,
    input_shape: list[int] | None = None,
    input_datatype: str = "FP32",
) -> ServedModel:
    """Load ``path`` as ``fmt`` onto ``plan.device``. Blocking; raises :class:`LoadError`."""
    started = time.perf_counter()
    override = _settings_spec(input_shape, input_datatype)
    try:
        if fmt == "torchscript":
            model = _load_torchscript(path, name, plan, override)
        elif fmt == "torch-export":
            model = _load_export(path, name, plan, override)
        elif fmt == "handler":
            model = _load_handler(path, name, plan, handler or "", override)
        else:
            raise LoadError(f"unknown model format {fmt!r}")
    except LoadError:
        raise
    except Exception as exc:  # torch raises many types on a bad archive; all mean "not loadable"
        raise LoadError(f"cannot load {path} as {fmt}: {type(exc).__name__}: {exc}") from exc
    model.load_seconds = time.perf_counter() - started
    return model


def _load_torchscript(path: Path, name: str, plan: DevicePlan, override: Any) -> ServedModel:
    extra = {METADATA_FILE: ""}
    with warnings.catch_warnings():  # "jit is deprecated": still the format many teams ship
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location=plan.device, _extra_files=extra)
    module.eval()
    if plan.dtype != torch.float32:
        module = module.to(plan.dtype)
    specs = override
    if specs is None and extra[METADATA_FILE]:
        raw = tensors.json_loads(extra[METADATA_FILE])
        specs = _specs_from_json(raw.get("inputs", []), f"{path}:{METADATA_FILE}")
    if not specs:
        raise LoadError(
            f"{path}: TorchScript carries no input shapes; set MODELSHIP_INPUT_SHAPE (e.g. -1,3,32,32) "
            f"or save the model with a {METADATA_FILE} extra file"
        )
    # forward, not __call__: nn.Module.__call__'s Python hook machinery costs ~6 µs a call (a
    # third of a tiny model's); a loaded TorchScript module has no Python hooks to run.
    return ServedModel(
        name,
        "pytorch_torchscript",
        plan,
        specs,
        dynamic_batch=specs[0].shape[:1] == (-1,),
        predict_fn=module.forward,
    )


def _load_export(path: Path, name: str, plan: DevicePlan, override: Any) -> ServedModel:
    program = torch.export.load(str(path))
    specs = override or _export_input_specs(program)
    if plan.device.type != "cpu":
        try:
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, plan.device)
        except ImportError:  # older torch: move the parameters, hope no constant is device-bound
            pass
    module = program.module().to(plan.device)
    if plan.dtype != torch.float32:
        module = module.to(plan.dtype)
    dynamic = bool(specs) and specs[0].shape[:1] == (-1,)
    return ServedModel(name, "pytorch_torch_export", plan, specs, dynamic_batch=dynamic, predict_fn=module)


def _export_input_specs(program: Any) -> list[tensors.TensorSpec]:
    """Names, dtypes and shapes from the exported graph's placeholders (symbolic dims → -1)."""
    user_inputs = list(program.graph_signature.user_inputs)
    specs = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise LoadError(f"exported input {node.name} is not a tensor; use a handler for this model")
        shape = tuple(d if isinstance(d, int) else -1 for d in val.shape)
        ranges = tuple(
            (axis, *_bounds(program.range_constraints.get(d.node.expr)))
            for axis, d in enumerate(val.shape)
            if not isinstance(d, int)
        )
        specs.append(tensors.TensorSpec(node.name, tensors.dtype_of(val.dtype).name, shape, ranges))
    return specs


def _bounds(value_range: Any) -> tuple[int, int | None]:
    """(min, max) of a symbolic dimension's value range; max None when unbounded (int_oo)."""

    def number(value: Any) -> int | None:
        try:
            return int(value)
        except (AttributeError, TypeError, ValueError, OverflowError):  # sympy's infinities
            return None

    if value_range is None:
        return 0, None
    return number(value_range.lower) or 0, number(value_range.upper)


def _load_handler(path: Path | None, name: str, plan: DevicePlan, ref: str, override: Any) -> ServedModel:
    module_name, _, class_name = ref.partition(":")
    if path is not None:
        folder = path if path.is_dir() else path.parent
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))  # a handler module may ship next to its weights
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise LoadError(f"cannot import handler {ref}: {exc}") from exc
    instance = cls()
    instance.load(str(path) if path is not None else None, plan.device)
    specs = override
    if specs is None and getattr(instance, "inputs", None):
        specs = _specs_from_json(instance.inputs, f"handler {ref}.inputs")
    model = ServedModel(name, "python_handler", plan, specs or [], predict_fn=instance.predict)
    model.dynamic_batch = bool(specs) and specs[0].shape[:1] == (-1,) and getattr(instance, "batching", True)
    return model
