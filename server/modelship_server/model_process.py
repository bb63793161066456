"""One model-owning process serving several front ends (``model_process=shared``).

Why: on a GPU, each front end owning a copy of the model wastes device memory and splits the
batches; one event loop cannot decode requests fast enough to keep the device busy. So front
ends decode requests and hand tensors to one process that owns the model and its batcher:
batches span every front end, the model is loaded once.

How tensors travel: each front end creates one shared-memory arena (``ipc_arena_bytes``),
which the model process maps too. A request writes its input arrays into the arena and
reserves room for the outputs; only a small header (dtypes, shapes, offsets) crosses the Unix
socket. The model process builds numpy views on the arena (no copy, no pickling), lets its
batcher concatenate them with other front ends' rows, and writes each caller's output rows
into the caller's reserved room. When the arena is full, or an output's size cannot be known
in advance, the bytes go inline on the socket instead (raw bytes, still no pickling).

Frames on the socket: 4-byte header length, 4-byte payload length, header (JSON), payload.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import struct
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from . import errors, loading, tensors
from .dataplane import DataPlane
from .tensors import json_dumps, json_loads

log = logging.getLogger("modelship.model_process")

_FRAME = struct.Struct("<II")


async def _read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    header_len, payload_len = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    header = json_loads(await reader.readexactly(header_len))
    payload = await reader.readexactly(payload_len) if payload_len else b""
    return header, payload


def _write_frame(writer: asyncio.StreamWriter, header: dict[str, Any], payload: list[bytes] = ()) -> None:
    raw = json_dumps(header)
    size = sum(len(part) for part in payload)
    writer.writelines([_FRAME.pack(len(raw), size), raw, *payload])


class Arena:
    """First-fit allocator over one shared-memory block (offsets 64-byte aligned)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free: list[list[int]] = [[0, size]]  # sorted [offset, length] ranges

    def alloc(self, size: int) -> int | None:
        size = max(64, -(-size // 64) * 64)
        for index, (offset, length) in enumerate(self.free):
            if length >= size:
                if length == size:
                    del self.free[index]
                else:
                    self.free[index] = [offset + size, length - size]
                return offset
        return None

    def release(self, offset: int, size: int) -> None:
        size = max(64, -(-size // 64) * 64)
        index = next((i for i, (start, _) in enumerate(self.free) if start > offset), len(self.free))
        self.free.insert(index, [offset, size])
        if index + 1 < len(self.free) and offset + size == self.free[index + 1][0]:  # merge right
            self.free[index][1] += self.free.pop(index + 1)[1]
        if index > 0 and self.free[index - 1][0] + self.free[index - 1][1] == offset:  # merge left
            self.free[index - 1][1] += self.free.pop(index)[1]


# -- the model process ---------------------------------------------------------------------------


class ModelServer:
    """Runs in the model process: one connection per front end, every request into the batcher."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def metadata(self) -> dict[str, Any]:
        model = self.dataplane.model
        if model is None:  # the socket only opens once the model is loaded
            raise errors.ModelNotReady("model is not loaded")
        health = self.dataplane.health()
        return {
            "name": model.name,
            "platform": model.platform,
            "dynamic_batch": model.dynamic_batch,
            "inputs": [{**spec.as_metadata(), "ranges": spec.ranges} for spec in model.inputs],
            "outputs": [spec.as_metadata() for spec in model.outputs],
            "load_seconds": model.load_seconds,
            "device": health["device"],
        }

    async def serve(self, path: Path) -> asyncio.AbstractServer:
        return await asyncio.start_unix_server(self._connection, path=str(path))

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello, _ = await _read_frame(reader)
        # The front end owns (and unlinks) the block. Attaching registers it with the resource
        # tracker too, but spawned processes share their parent's tracker: one entry, removed
        # by the front end's unlink.
        shm = shared_memory.SharedMemory(name=hello["arena"])
        _write_frame(writer, {"model": self.metadata()})
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                header, payload = await _read_frame(reader)
                task = asyncio.create_task(self._infer(header, payload, shm, writer))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if tasks:
                await asyncio.wait(tasks)
            writer.close()
            shm.close()

    async def _infer(
        self, header: dict[str, Any], payload: bytes, shm: shared_memory.SharedMemory, writer: Any
    ) -> None:
        try:
            arrays, inline = [], 0
            for dtype, shape, offset in header["inputs"]:
                count = math.prod(shape)
                if offset >= 0:
                    arrays.append(np.ndarray(shape, dtype=dtype, buffer=shm.buf, offset=offset))
                else:
                    size = count * np.dtype(dtype).itemsize
                    arrays.append(np.frombuffer(payload, dtype=dtype, count=count, offset=inline).reshape(shape))
                    inline += size
            outputs = await self.dataplane.infer(header["model"], arrays)
            del arrays
        except Exception as exc:
            detail = exc.detail if isinstance(exc, errors.ModelshipError) else f"{type(exc).__name__}: {exc}"
            kind = type(exc).__name__ if isinstance(exc, errors.ModelshipError) else "InferenceFailed"
            _write_frame(writer, {"id": header["id"], "error": [kind, detail]})
            return
        reply, blobs = [], []
        rooms = header.get("outputs") or []
        for index, out in enumerate(outputs):
            room = rooms[index] if index < len(rooms) else None
            if room is not None and room[1] == out.nbytes:
                np.copyto(np.ndarray(out.shape, dtype=out.dtype, buffer=shm.buf, offset=room[0]), out)
                reply.append([out.dtype.str, list(out.shape), room[0]])
            else:
                blobs.append(np.ascontiguousarray(out).tobytes())
                reply.append([out.dtype.str, list(out.shape), -1])
        _write_frame(writer, {"id": header["id"], "outputs": reply}, blobs)


# -- the front end's side ------------------------------------------------------------------------


class ModelClient:
    """A front end's connection to the model process."""

    def __init__(self, path: Path, arena_bytes: int) -> None:
        self.path = path
        self.shm = shared_memory.SharedMemory(create=True, size=arena_bytes)
        self.arena = Arena(arena_bytes)
        self.metadata: dict[str, Any] = {}
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], bytes]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def connect(self) -> dict[str, Any]:
        """Connect (retrying while the model process loads) and return the model's metadata."""
        while True:
            try:
                reader, self._writer = await asyncio.open_unix_connection(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                await asyncio.sleep(0.2)
        _write_frame(self._writer, {"arena": self.shm.name})
        hello, _ = await _read_frame(reader)
        self.metadata = hello["model"]
        self._reader_task = asyncio.create_task(self._read_replies(reader), name="modelship-model-client")
        return self.metadata

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header, payload = await _read_frame(reader)
                future = self._pending.pop(header["id"], None)
                if future is not None and not future.done():
                    future.set_result((header, payload))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(errors.ModelNotReady(f"the model process went away ({exc})"))
            self._pending.clear()

    async def infer(self, model: str, arrays: list[np.ndarray], output_rows: list[int | None]) -> list[np.ndarray]:
        """``output_rows[i]``: bytes output i will take (None: unknown, comes inline)."""
        if self._writer is None:
            raise errors.ModelNotReady("not connected to the model process yet")
        taken: list[tuple[int, int]] = []
        inputs, inline = [], []
        try:
            for array in arrays:
                array = np.ascontiguousarray(array)
                offset = self.arena.alloc(array.nbytes)
                if offset is None:
                    inline.append(array.tobytes())
                    inputs.append([array.dtype.str, list(array.shape), -1])
                    continue
                taken.append((offset, array.nbytes))
                np.copyto(np.ndarray(array.shape, dtype=array.dtype, buffer=self.shm.buf, offset=offset), array)
                inputs.append([array.dtype.str, list(array.shape), offset])
            rooms: list[list[int] | None] = []
            for size in output_rows:
                offset = self.arena.alloc(size) if size else None
                rooms.append(None if offset is None else [offset, size])
                if offset is not None:
                    taken.append((offset, size))  # type: ignore[arg-type]
            request_id = next(self._ids)
            future: asyncio.Future[tuple[dict[str, Any], bytes]] = asyncio.get_running_loop().create_future()
            self._pending[request_id] = future
            _write_frame(self._writer, {"id": request_id, "model": model, "inputs": inputs, "outputs": rooms}, inline)
            header, payload = await future
            if "error" in header:
                kind, detail = header["error"]
                raise getattr(errors, kind, errors.InferenceFailed)(detail)
            outputs, at = [], 0
            for dtype, shape, offset in header["outputs"]:
                if offset >= 0:  # copied out before the room is released
                    outputs.append(np.ndarray(shape, dtype=dtype, buffer=self.shm.buf, offset=offset).copy())
                else:
                    count = math.prod(shape)
                    outputs.append(np.frombuffer(payload, dtype=dtype, count=count, offset=at).reshape(shape))
                    at += count * np.dtype(dtype).itemsize
            return outputs
        finally:
            for offset, size in taken:
                self.arena.release(offset, size)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
        self.shm.close()
        self.shm.unlink()


class SharedModelDataPlane(DataPlane):
    """A front end's data plane when the model lives in the model process: same readiness,
    metrics and errors, but inference is a request to that process (whose batcher spans
    every front end)."""

    def __init__(self, *args: Any, socket_path: Path, arena_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = ModelClient(socket_path, arena_bytes)
        self.device_facts: dict[str, Any] = {}

    async def start(self) -> None:
        self.reason = "waiting for the model process"
        self._publish()
        self._load_task = asyncio.get_running_loop().create_task(self._connect(), name="modelship-connect")

    async def _connect(self) -> None:
        meta = await self.client.connect()
        specs = [
            tensors.TensorSpec(i["name"], i["datatype"], tuple(i["shape"]), tuple(map(tuple, i["ranges"])))
            for i in meta["inputs"]
        ]
        model = loading.ServedModel(meta["name"], meta["platform"], self.plan, specs, dynamic_batch=meta["dynamic_batch"])
        model.outputs = [tensors.TensorSpec(o["name"], o["datatype"], tuple(o["shape"])) for o in meta["outputs"]]
        model.load_seconds = meta["load_seconds"]
        self.device_facts = meta["device"]
        self.model = model
        self._set("ready", None)

    async def stop(self) -> None:
        self.begin_drain()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        await self.client.close()
        self._set("stopped", "stopped")

    def health(self) -> dict[str, Any]:
        body = super().health()
        if self.device_facts:
            body["device"] = self.device_facts
        return body

    async def infer(self, name: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
        model = self.model_named(name)
        rows = int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 1
        sizes: list[int | None] = []
        for spec in model.outputs:
            dims = [rows if i == 0 and d == -1 else d for i, d in enumerate(spec.shape)]
            known = all(d >= 0 for d in dims)
            sizes.append(math.prod(dims) * tensors.BY_NAME[spec.datatype].numpy.itemsize if known else None)
        return await self.client.infer(name, arrays, sizes)
