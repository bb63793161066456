"""What several server processes share so that any one of them answers for all: readiness
(a slot per process in shared memory) and metrics (each process serves its snapshot on a Unix
socket; the one asked for ``/metrics`` gathers and adds them up).

Why a board and not a question to the supervisor: a probe must be answered by whichever front
end the kernel hands the connection to, at once, even while another process is busy loading or
stuck. Reading a few hundred bytes of shared memory cannot block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .metrics import Metrics, Snapshot
from .tensors import json_dumps, json_loads

log = logging.getLogger("modelship.board")

SLOT_BYTES = 256
STATES = ("starting", "loading", "ready", "failed", "unavailable", "stopped")
_REASON_BYTES = SLOT_BYTES - 4


class Board:
    """Slot ``index`` is this process's; every slot can be read. Layout of a slot: state (1
    byte, index into STATES), draining (1 byte), reason length (2 bytes), reason (UTF-8)."""

    def __init__(self, buffer: Any, names: Sequence[str], index: int) -> None:
        self.buffer = buffer  # a multiprocessing RawArray of len(names) * SLOT_BYTES bytes
        self.names = list(names)
        self.index = index

    def publish(self, state: str, reason: str | None, draining: bool) -> None:
        raw = (reason or "").encode()[:_REASON_BYTES]
        start = self.index * SLOT_BYTES
        view = memoryview(self.buffer).cast("B")
        view[start + 4 : start + 4 + len(raw)] = raw
        view[start + 2 : start + 4] = len(raw).to_bytes(2, "little")
        view[start + 1] = int(draining)
        view[start] = STATES.index(state) if state in STATES else 0

    def read(self, index: int) -> tuple[str, str, bool]:
        start = index * SLOT_BYTES
        view = memoryview(self.buffer).cast("B")
        length = int.from_bytes(view[start + 2 : start + 4], "little")
        reason = bytes(view[start + 4 : start + 4 + length]).decode(errors="replace")
        return STATES[view[start]], reason, bool(view[start + 1])

    @property
    def draining(self) -> bool:
        """SIGTERM reached any process: the pod is going away, every answer says so."""
        return any(self.read(i)[2] for i in range(len(self.names)))

    def first_not_ready(self) -> str | None:
        """Why another process is not serving (None when all others are ready)."""
        for index, name in enumerate(self.names):
            if index == self.index:
                continue
            state, reason, _ = self.read(index)
            if state != "ready":
                return f"{name}: {reason or state}"
        return None


# -- metrics across processes ---------------------------------------------------------------------


async def serve_snapshots(path: Path, metrics: Metrics) -> asyncio.AbstractServer:
    """Answer every connection on ``path`` with this process's snapshot, then close it."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json_dumps(metrics.snapshot()))
            await writer.drain()
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return await asyncio.start_unix_server(answer, path=str(path))


async def gather_snapshots(paths: Sequence[Path], timeout_s: float = 2.0) -> list[Snapshot]:
    """The other processes' snapshots; one that does not answer in time is left out (the
    ``modelship_processes`` gauge then shows fewer than expected)."""

    async def one(path: Path) -> Snapshot | None:
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_unix_connection(str(path))
                data = await reader.read()
                writer.close()
                return json_loads(data) if data else None
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("no metrics from %s: %s", path.name, exc)
            return None

    results = await asyncio.gather(*(one(path) for path in paths))
    return [snap for snap in results if snap is not None]
