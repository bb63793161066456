"""Helpers for the e2e tier: the cluster handle, the operator process, polling.

Everything here talks to a real API server (the local KWOK cluster from
hack/cluster.sh, or the user's own cluster via $KUBECONFIG). Waiting is always
polling with a deadline; a timeout raises AssertionError naming what was awaited
and the last value seen, so a failing test says what never happened.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client import ApiClient

ROOT = Path(__file__).resolve().parents[2]
#: The demo's cluster (`make demo`, hack/cluster.sh's default): the tests never use it, or its
#: operator would reconcile their objects too (two operators, doubled Events).
DEMO_CLUSTER = "modelship"
#: The tests' own local cluster; MODELSHIP_CLUSTER_NAME picks another (one per worktree).
#: The node tier adds a real node to a second cluster, "<this>-node".
CLUSTER_NAME = os.environ.get("MODELSHIP_CLUSTER_NAME", "modelship-test")


def cluster_out(name: str) -> Path:
    """hack/cluster.sh's state folder of the local cluster ``name``."""
    return ROOT / "_out" / ("cluster" if name == DEMO_CLUSTER else f"cluster-{name}")


LOCAL_OUT = cluster_out(CLUSTER_NAME)
LOCAL_KUBECONFIG = LOCAL_OUT / "kubeconfig"
CRD_FILE = ROOT / "deploy" / "crds" / "modelship.io_modeldeployments.yaml"
CRD_NAME = "modeldeployments.modelship.io"
GROUP, VERSION, PLURAL = "modelship.io", "v1alpha1", "modeldeployments"
API_VERSION = f"{GROUP}/{VERSION}"

GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
CPU_NODES = ("kwok-cpu-0", "kwok-cpu-1")
GPU_NODES = ("kwok-gpu-0", "kwok-gpu-1")
IMAGE_OK = "registry.example.com/ml/modelship-server:1.0.0"
IMAGE_IMAGEPULL = "fail.modelship.test/server:imagepull"
IMAGE_CRASHLOOP = "fail.modelship.test/server:crashloop"
IMAGE_NEVERREADY = "fail.modelship.test/server:neverready"

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> T:
    """Call ``probe`` until it returns something truthy; return that value.

    Exceptions from the probe count as "not yet" (an object that does not exist
    yet is the usual case) and the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - reported below on timeout
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def free_port() -> int:
    """A free TCP port on loopback (for the operator's health/metrics endpoints)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_sh(name: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """hack/cluster.sh ARGS for the local cluster ``name`` (subprocess.run keyword args pass on)."""
    env = {**os.environ, "MODELSHIP_CLUSTER_NAME": name}
    kwargs.setdefault("capture_output", "stdout" not in kwargs)
    return subprocess.run(["bash", str(ROOT / "hack" / "cluster.sh"), *args], env=env, text=True, check=False, **kwargs)


#: A cold machine builds the control plane from Go modules first (tens of minutes on 2 cores).
CLUSTER_UP_TIMEOUT_S = 60 * 60


@contextlib.contextmanager
def local_cluster(name: str, log: Path, *, real_node: bool = False) -> Iterator[Cluster]:
    """The local cluster ``name`` (hack/cluster.sh up [--real-node]), started when it is not
    running and taken down afterwards when this session started it (unless
    MODELSHIP_KEEP_CLUSTER=1). One that cannot start FAILS the tests with its log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    status = ("node-status",) if real_node else ("status",)
    was_running = cluster_sh(name, *status).returncode == 0
    with log.open("w") as fh:
        proc = cluster_sh(name, "up", *(["--real-node"] if real_node else []),
                          stdout=fh, stderr=subprocess.STDOUT, timeout=CLUSTER_UP_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(
            f"the local control plane {name!r} did not start (`hack/cluster.sh up"
            f"{' --real-node' if real_node else ''}` exited {proc.returncode}).\n"
            f"--- {log}\n{log.read_text(errors='replace')[-6000:]}\n"
            f"Component logs: {cluster_out(name)}/kwok/clusters/{name}/logs/"
            + (f", node logs: {cluster_out(name)}/node/" if real_node else ""),
            pytrace=False,
        )
    try:
        yield Cluster(kubeconfig=cluster_out(name) / "kubeconfig", local=True)
    finally:
        # Leave a cluster that was already running (a developer's); take down the one this
        # session started unless asked to keep it warm.
        if not was_running and os.environ.get("MODELSHIP_KEEP_CLUSTER") != "1":
            cluster_sh(name, "down", timeout=300)


def install_crd(cluster: Cluster) -> str:
    """The committed CRD, server-side applied (so re-runs update it), once Established.

    Polled rather than `kubectl wait`: on a CRD created a moment ago `status.conditions` is
    still null and `kubectl wait` fails at once instead of waiting."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))

    def established() -> bool:
        out = cluster.kubectl("get", f"crd/{CRD_NAME}", "-o",
                              "jsonpath={.status.conditions[?(@.type=='Established')].status}", check=False)
        return out.stdout.strip() == "True"

    wait_until(established, timeout=60, what=f"crd/{CRD_NAME} Established")
    return CRD_NAME


def find_kubectl() -> str:
    """The cached kubectl built by hack/cluster.sh, else one on PATH."""
    out = subprocess.run(
        ["bash", "-c", f'source "{ROOT}/hack/cluster/versions.sh" && tool_path kubectl'],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if out and os.access(out, os.X_OK):
        return out
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("no kubectl: run `make cluster-build` (or put kubectl on PATH)")
    return found


@dataclass
class Cluster:
    """A reachable cluster: kubeconfig, kubectl and API clients bound to it."""

    kubeconfig: Path
    #: True for the local KWOK cluster, whose fake nodes and failure images the
    #: scheduling and rollout tests rely on.
    local: bool
    kubectl_path: str = field(default_factory=find_kubectl)

    @cached_property
    def api(self) -> ApiClient:
        """A kubernetes client bound to this kubeconfig (polling through it is cheaper than kubectl)."""
        return k8s_config.new_client_from_config(config_file=str(self.kubeconfig))

    @cached_property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @cached_property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api)

    @cached_property
    def policy(self) -> k8s.PolicyV1Api:
        return k8s.PolicyV1Api(self.api)

    @cached_property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    def md(self, namespace: str, name: str) -> dict[str, Any]:
        """The ModelDeployment as a plain dict (raises ApiException 404 when absent)."""
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return self.api.sanitize_for_serialization(self.apps.read_namespaced_deployment(name, namespace))

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return [self.api.sanitize_for_serialization(p) for p in pods]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; on failure (check=True) raise with its stderr."""
        proc = subprocess.run(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Server-side apply as the user would (field manager kubectl, not the operator's)."""
        items = obj if isinstance(obj, list) else [obj]
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        return self.kubectl("apply", "--server-side", "--field-manager=e2e-user", "-f", "-", input=doc, check=check)

    def get_json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the test process dies (Linux prctl).

    A test run killed by a timeout never reaches fixture teardown; an orphaned
    operator would go on reconciling the shared cluster and fight the next run.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class OperatorProcess:
    """The operator as a real subprocess (`python -m modelship_operator`).

    Restartable: tests stop or kill it, change things, and start it again. Output
    of every run goes to one log file, shown when a test fails.
    """

    def __init__(self, cluster: Cluster, log_path: Path, *, entry: tuple[str, ...] = ("-m", "modelship_operator")):
        self.cluster = cluster
        self.log_path = log_path
        #: How Python starts the operator (the bench swaps in a launcher that tunes kopf).
        self.entry = entry
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")

    @property
    def python(self) -> str:
        venv = ROOT / ".venv" / "bin" / "python"
        return str(venv) if venv.exists() else sys.executable

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "operator already running"
        self.starts += 1
        cmd = [
            self.python, *self.entry, "--all-namespaces",
            "--kubeconfig", str(self.cluster.kubeconfig),
            "--health-port", str(free_port()), "--metrics-port", str(free_port()),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.cluster.env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )
        # A crash at import or flag parsing shows at once; later crashes are
        # caught by the running() check the fixtures make after each test.
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return
        raise AssertionError(f"operator exited at start with code {code}:\n{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, kill: bool = False, timeout: float = 20) -> None:
        """SIGTERM (graceful) or SIGKILL (crash); waits until the process is gone."""
        if not self.running():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 150) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no operator log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def model_deployment(
    name: str,
    *,
    image: str = IMAGE_OK,
    replicas: int | None = None,
    gpu: int | None = None,
    product: str | None = None,
    namespace: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A ModelDeployment manifest with a valid minimal spec; keyword args add spec fields."""
    body: dict[str, Any] = {
        "image": image,
        "model": {"name": name, "uri": f"file:///models/{name}.pt2", "format": "torch-export"},
    }
    if replicas is not None:
        body["replicas"] = replicas
    if gpu is not None:
        body["gpu"] = {"count": gpu, **({"product": product} if product else {})}
    body.update(spec)
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": API_VERSION, "kind": "ModelDeployment", "metadata": metadata, "spec": body}


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None
