"""Typed tensors on the wire: OIP v2 datatypes, decoding/validating inputs, encoding outputs.

JSON goes through orjson when installed (it reads and writes numpy arrays natively, several
times faster than the stdlib on float lists); the stdlib is the fallback.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import errors

try:  # pragma: no cover - exercised by whichever is installed
    import orjson

    def json_loads(data: bytes | str) -> Any:
        return orjson.loads(data)

    def json_dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

    JSONDecodeError: type[Exception] = orjson.JSONDecodeError
    JSON_HAS_NON_FINITE = False  # orjson refuses NaN, Infinity and numbers beyond a double
except ImportError:  # pragma: no cover
    import json

    def _default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray | np.generic):
            return obj.tolist()
        raise TypeError(f"not JSON serializable: {type(obj).__name__}")

    def json_loads(data: bytes | str) -> Any:
        return json.loads(data)

    def json_dumps(obj: Any) -> bytes:
        return json.dumps(obj, default=_default, separators=(",", ":")).encode()

    JSONDecodeError = json.JSONDecodeError
    JSON_HAS_NON_FINITE = True


@dataclass(frozen=True)
class DType:
    name: str  # OIP v2 datatype
    numpy: np.dtype
    torch: torch.dtype
    kinds: str  # numpy kinds accepted from JSON data ('b' bool, 'i'/'u' int, 'f' float)


_TABLE = [
    DType("BOOL", np.dtype(np.bool_), torch.bool, "b"),
    DType("UINT8", np.dtype(np.uint8), torch.uint8, "iu"),
    DType("INT8", np.dtype(np.int8), torch.int8, "iu"),
    DType("INT16", np.dtype(np.int16), torch.int16, "iu"),
    DType("INT32", np.dtype(np.int32), torch.int32, "iu"),
    DType("INT64", np.dtype(np.int64), torch.int64, "iu"),
    DType("FP16", np.dtype(np.float16), torch.float16, "iuf"),
    DType("FP32", np.dtype(np.float32), torch.float32, "iuf"),
    DType("FP64", np.dtype(np.float64), torch.float64, "iuf"),
]
BY_NAME: dict[str, DType] = {d.name: d for d in _TABLE}
BY_TORCH: dict[torch.dtype, DType] = {d.torch: d for d in _TABLE}
BY_NUMPY: dict[np.dtype, DType] = {d.numpy: d for d in _TABLE}
KNOWN_BUT_UNSUPPORTED = {"BYTES", "BF16", "UINT16", "UINT32", "UINT64"}


def dtype_named(name: object, where: str) -> DType:
    if not isinstance(name, str):
        raise errors.InvalidInput(f"{where}: datatype must be a string, got {type(name).__name__}")
    found = BY_NAME.get(name)
    if found is None:
        if name in KNOWN_BUT_UNSUPPORTED:
            raise errors.InvalidInput(f"{where}: datatype {name} is not supported by this server")
        raise errors.InvalidInput(f"{where}: unknown datatype {name!r}; expected one of {sorted(BY_NAME)}")
    return found


def dtype_of(tensor_dtype: torch.dtype) -> DType:
    return BY_TORCH.get(tensor_dtype, BY_NAME["FP32"])


def dtype_of_array(array: np.ndarray) -> DType:
    return BY_NUMPY.get(array.dtype.newbyteorder("="), BY_NAME["FP32"])


Range = tuple[int, int, int | None]
"""(axis, smallest, largest or None) of a dimension that is not fixed."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as OIP v2 metadata describes it (-1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    ranges: tuple[Range, ...] = ()
    """Sizes a -1 dimension may take, when the model says (torch.export's ``Dim(min=, max=)``):
    outside them the model refuses to run, so the request is refused first."""

    def as_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def check(self, array: np.ndarray, where: str) -> None:
        """Shape must have the same rank, agree on every fixed dimension and stay in the ranges."""
        shape = array.shape
        if len(shape) != len(self.shape) or any(
            want != got and want != -1 for want, got in zip(self.shape, shape, strict=True)
        ):
            raise errors.InvalidInput(
                f"{where}: shape {list(array.shape)} does not match the model's {list(self.shape)}"
            )
        for axis, low, high in self.ranges:
            if shape[axis] < low or (high is not None and shape[axis] > high):
                allowed = f"{low} to {high}" if high is not None else f"at least {low}"
                raise errors.InvalidInput(
                    f"{where}: dimension {axis} of shape {list(shape)} is {shape[axis]}; "
                    f"the model takes {allowed}"
                )

    def fit(self, axis: int, size: int) -> int:
        """``size`` moved into the range of ``axis`` (for warm-up inputs and batch limits)."""
        for at, low, high in self.ranges:
            if at == axis:
                size = max(size, low)
                return min(size, high) if high is not None else size
        return size


def _as_array(data: Any, dtype: DType, where: str) -> np.ndarray:
    """Numbers (flat or nested lists) → array of ``dtype``; anything else is the caller's fault."""
    if not isinstance(data, list | tuple | int | float | bool):
        raise errors.InvalidInput(f"{where}: data must be a list of numbers, got {type(data).__name__}")
    if dtype.numpy.kind == "f" and not JSON_HAS_NON_FINITE:
        quick = _floats_at_once(data, dtype.numpy)
        if quick is not None:
            return quick
    return _as_array_checked(data, dtype, where)


def _as_array_checked(data: Any, dtype: DType, where: str) -> np.ndarray:
    """The full path: any JSON value in, the array or an error that names what is wrong."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:  # ragged nesting
        raise errors.InvalidInput(f"{where}: data is not a rectangular array of numbers ({exc})") from None
    kind = array.dtype.kind
    if kind in "iuf" and _holds_booleans(data, array.ndim):  # numpy read them as 1 and 0
        raise errors.InvalidInput(f"{where}: true/false among numbers do not fit datatype {dtype.name}")
    if kind not in dtype.kinds:
        if kind in "USO":
            what = "non-numeric values"
        elif kind == "f":
            what = "non-integer values"
        else:
            what = f"{array.dtype} values"
        raise errors.InvalidInput(f"{where}: {what} do not fit datatype {dtype.name}")
    if JSON_HAS_NON_FINITE and kind == "f" and not np.isfinite(array).all():
        raise errors.InvalidInput(f"{where}: data holds NaN or infinity")
    _check_range(array, dtype, where)
    return array.astype(dtype.numpy, copy=False)


_NUMBERS = frozenset({int, float})


_SMALL = 64
"""Up to this many values, the float fast path checks ranges on the parsed numbers in Python
(cheaper than any numpy reduction on one row); above it, numpy checks the converted array."""


def _floats_at_once(data: Any, dtype: np.dtype) -> np.ndarray | None:
    """The common case in one numpy call: plain ints and floats, rectangular, each within
    ``dtype``'s range, converted straight to it (the full path builds a float64 array, then
    scans and casts it: on a one-row request that was a third of the server's time). ``None``
    when anything is off (ragged rows, bools, strings, nulls, a value beyond the datatype), so
    the full path can name the problem: numpy itself would read ``"1.5"`` as 1.5, ``true`` as
    1 and ``null`` as NaN, hence the element types are checked here too. A value a hair above
    the largest float (it would round down to it) counts as beyond, as in the full path and the
    OpenAPI schema."""
    try:
        with np.errstate(over="raise"):  # 1e39 as FP32: FloatingPointError, not inf
            array = np.array(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError, FloatingPointError):
        return None
    flat = _leaves(data, array.ndim)
    if array.ndim > 1:
        flat = list(flat)  # read twice below
    if not set(map(type, flat)) <= _NUMBERS:
        return None
    limit = _FLOAT_MAX[dtype]
    if array.size <= _SMALL:
        return array if not array.size or max(map(abs, flat)) <= limit else None
    return array if float(np.abs(array).max()) < limit else None  # == limit: let the full path decide


_FLOAT_MAX = {d.numpy: float(np.finfo(d.numpy).max) for d in _TABLE if d.numpy.kind == "f"}


def _leaves(data: Any, depth: int) -> Any:
    """The values of nested lists ``depth`` deep, flattened in C (an iterable; ``[data]`` for
    a scalar)."""
    if depth == 0:
        return [data]
    flat: Any = data
    for _ in range(depth - 1):
        flat = itertools.chain.from_iterable(flat)
    return flat


def _holds_booleans(data: Any, depth: int) -> bool:
    """Whether nested lists ``depth`` deep hold a bool anywhere: a scan in C, no Python loop
    per value (a few percent of what parsing the JSON cost)."""
    return bool in set(map(type, _leaves(data, depth)))


def _check_range(array: np.ndarray, dtype: DType, where: str) -> None:
    """Values the datatype cannot hold are refused: numpy's cast would quietly wrap integers
    (300 as INT8 is 44) and turn large floats into infinity (1e39 as FP32), so the model would
    compute on numbers nobody sent."""
    if not array.size or dtype.numpy.kind == "b" or array.dtype == dtype.numpy:
        return
    if dtype.numpy.kind in "iu":
        info = np.iinfo(dtype.numpy)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            raise errors.InvalidInput(
                f"{where}: values from {low} to {high} do not fit {dtype.name} ({info.min} to {info.max})"
            )
        return
    limit = float(np.finfo(dtype.numpy).max)
    biggest = float(np.abs(array).max())
    if biggest > limit and math.isfinite(biggest):
        raise errors.InvalidInput(f"{where}: value {biggest:g} does not fit {dtype.name} (at most {limit:g})")


def decode_json(data: Any, dtype: DType, shape: Any, where: str) -> np.ndarray:
    """OIP v2 JSON tensor: ``data`` flat (row-major) or nested, reshaped to ``shape``."""
    dims = _shape(shape, where, dtype.numpy.itemsize)
    array = _as_array(data, dtype, where)
    if array.size != math.prod(dims):
        raise errors.InvalidInput(
            f"{where}: shape {dims} needs {math.prod(dims)} values, data has {array.size}"
        )
    return array.reshape(dims)


def decode_binary(raw: bytes, dtype: DType, shape: Any, where: str) -> np.ndarray:
    """Binary tensor extension: little-endian, row-major, no padding."""
    dims = _shape(shape, where, dtype.numpy.itemsize)
    need = math.prod(dims) * dtype.numpy.itemsize
    if len(raw) != need:
        raise errors.InvalidInput(f"{where}: binary data has {len(raw)} bytes, shape {dims} needs {need}")
    # copy: frombuffer is read-only (torch warns) and may need a byte swap on big-endian hosts
    return np.frombuffer(raw, dtype=dtype.numpy.newbyteorder("<")).astype(dtype.numpy).reshape(dims)


MAX_RANK = 64
"""numpy's own limit on an array's dimensions."""


def _shape(shape: Any, where: str, itemsize: int) -> list[int]:
    """A request's shape, checked before numpy sees it: numpy refuses more than 64 dimensions,
    and a shape whose dimensions (a zero one aside) multiply past what an array can address,
    even when a zero dimension makes it empty (``[0, 2**62]`` with no data: a 500 otherwise)."""
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise errors.InvalidInput(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) > MAX_RANK:
        raise errors.InvalidInput(f"{where}: shape has {len(shape)} dimensions, at most {MAX_RANK}")
    if math.prod(d for d in shape if d) * itemsize >= 2**63:
        raise errors.InvalidInput(f"{where}: shape {shape} is too large for any array, even an empty one")
    return shape


def decode_rows(instances: Any, spec: TensorSpec, where: str) -> np.ndarray:
    """KServe v1 ``instances``: one row per instance, checked against the input spec."""
    if not isinstance(instances, list) or not instances:
        raise errors.InvalidInput(f"{where}: instances must be a non-empty list")
    array = _as_array(instances, BY_NAME[spec.datatype], where)
    spec.check(array, where)
    return array


def little_endian_bytes(array: np.ndarray) -> bytes:
    """Raw tensor bytes as the binary extension and gRPC's raw contents carry them."""
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


WIDENED = (torch.float16, torch.bfloat16)
"""Output dtypes clients get as float32."""


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Output tensor → contiguous numpy on CPU; half/bfloat16 widen to float32 for clients."""
    tensor = tensor.detach()
    if tensor.dtype in WIDENED:
        tensor = tensor.float()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    return np.ascontiguousarray(tensor.numpy())
