"""Faults for the chaos tests: restart a control-plane process of the local cluster in place.

kwokctl (v0.8, binary runtime) starts each component as a plain process and writes its pid to
``<cluster>/pids/<name>.pid``; it has no per-component stop/start. So a restart here reads the
process's command line, working directory and log from /proc, stops it (SIGTERM, or SIGKILL for
a crash), starts the same command again with the same log, and writes the new pid back, where
``hack/cluster.sh down`` (kwokctl delete cluster) finds it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from e2e_support import CLUSTER_NAME, cluster_out, wait_until

#: Restarted processes this test session started (waited for when they are stopped again, so
#: they leave no zombie behind).
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


#: The processes of the local control plane, as kwokctl names their pid files.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller")


class Component:
    """One process of the local control plane: etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler or kwok-controller."""

    def __init__(self, name: str, cluster_name: str = CLUSTER_NAME) -> None:
        self.name = name
        self.home = cluster_out(cluster_name) / "kwok" / "clusters" / cluster_name
        self.pidfile = self.home / "pids" / f"{name}.pid"

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def command(self) -> tuple[list[str], str, str]:
        """How it runs now: argv, working directory, log file (from /proc)."""
        pid = self.pid
        argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        return argv, os.readlink(f"/proc/{pid}/cwd"), os.readlink(f"/proc/{pid}/fd/1")

    def alive(self) -> bool:
        return _alive(self.pid)

    def start(self, command: tuple[list[str], str, str]) -> None:
        argv, cwd, log = command
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        _STARTED[proc.pid] = proc
        self.pidfile.write_text(f"{proc.pid}\n")

    def restart(self, *, kill: bool = False, down_s: float = 0.0, grace_s: float = 15.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``grace_s`` as a kubelet would; SIGKILL
        at once when ``kill``), leave it down ``down_s`` seconds, start it again exactly as
        kwokctl did. It is started again whatever happens in between: a control plane left
        down would fail every later test on this cluster."""
        pid, command = self.pid, self.command()
        try:
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
            # The API server drains its watches on SIGTERM and may take a minute to exit.
            deadline = time.monotonic() + grace_s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            if pid in _STARTED:
                _STARTED.pop(pid).wait(timeout=60)
            wait_until(lambda: not _alive(pid), timeout=60, what=f"{self.name} (pid {pid}) to exit", interval=0.1)
            time.sleep(down_s)
        finally:
            self.start(command)


class Supervisor:
    """What systemd or the kubelet does for a real control plane, and kwokctl's binary runtime
    does not: start again a component that exited. kube-controller-manager and kube-scheduler
    exit by design when they cannot renew their leader Lease (an API server or etcd down for
    ~10 s), and without them no Deployment progresses and no namespace terminates."""

    def __init__(self, cluster_name: str = CLUSTER_NAME) -> None:
        self.components = [Component(name, cluster_name) for name in COMPONENTS]
        self.commands = {c.name: c.command() for c in self.components}
        self.revived: list[str] = []

    def revive(self) -> None:
        for component in self.components:
            if not component.alive():
                gone = component.pid
                if gone in _STARTED:  # one this session started: reap it
                    _STARTED.pop(gone).wait(timeout=10)
                component.start(self.commands[component.name])
                self.revived.append(component.name)
