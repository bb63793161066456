"""Helm for the tests: the cached binary built by hack/setup.d/helm.sh, and rendering.

Shared by tests/helm (lint, template, schema: no cluster) and tests/e2e/test_helm*.py
(install/upgrade/uninstall against the local control plane). A missing binary FAILS
with the command that builds it; nothing here downloads anything.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "modelship"
SETUP_SCRIPT = ROOT / "hack" / "setup.d" / "helm.sh"
CI_VALUES = sorted(CHART.glob("ci/*-values.yaml"))
CRD_FILE = ROOT / "deploy" / "crds" / "modelship.io_modeldeployments.yaml"


def helm_version() -> str:
    """The version hack/setup.d/helm.sh builds (its HELM_VERSION default), or $HELM_VERSION."""
    if os.environ.get("HELM_VERSION"):
        return os.environ["HELM_VERSION"]
    match = re.search(r"^HELM_VERSION=\$\{HELM_VERSION:-(v[0-9.]+)\}", SETUP_SCRIPT.read_text(), re.M)
    if not match:
        raise RuntimeError(f"no HELM_VERSION default found in {SETUP_SCRIPT}")
    return match.group(1)


def helm_binary() -> Path:
    """The cached helm binary; raises with the fix when it has not been built."""
    cache = Path(os.environ.get("MODELSHIP_CACHE", Path.home() / ".cache" / "modelship"))
    path = cache / "bin" / f"helm-{helm_version()}" / "helm"
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"helm {helm_version()} not found at {path}: build it with `bash hack/setup.d/helm.sh` (or `make setup`)"
        )
    return path


def run_helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run helm; on failure (check=True) raise AssertionError with its output.

    HELM_*_HOME point into _out/ so the tests never read or write the user's helm config.
    """
    home = ROOT / "_out" / "helm-home"
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    proc = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def value_args(values_files: Iterable[Path] = (), set_values: Sequence[str] = ()) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["-f", str(path)]
    for item in set_values:
        args += ["--set", item]
    return args


def render(
    values_files: Iterable[Path] = (),
    set_values: Sequence[str] = (),
    *,
    release: str = "modelship",
    namespace: str = "modelship-system",
    include_crds: bool = True,
) -> list[dict[str, Any]]:
    """`helm template` the chart and return the manifests as dicts (empty documents dropped)."""
    args = ["template", release, str(CHART), "--namespace", namespace, *value_args(values_files, set_values)]
    if include_crds:
        args.append("--include-crds")
    text = run_helm(*args).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]
