"""checkov (Kubernetes policies) on the rendered chart and on the objects the operator builds.

The findings must be exactly those accepted in hack/security/checkov-accepted.yaml, each with
its reason there: a new finding fails, and so does an acceptance nothing triggers any more.
checkov runs from its own venv (hack/setup.d/security.sh, `make setup`), offline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "helm"))
sys.path.insert(0, str(ROOT / "tests"))
from helm_support import helm_binary, render  # noqa: E402

from modelship_operator.core import builders  # noqa: E402
from unit.samples import md  # noqa: E402

SETUP = ROOT / "hack" / "setup.d" / "security.sh"
ACCEPTED = ROOT / "hack" / "security" / "checkov-accepted.yaml"
GPU = {"count": 2, "product": "NVIDIA-H100-80GB-HBM3"}
#: Specs that between them make every kind of child and every optional part of the pod.
SPECS: dict[str, dict[str, Any]] = {
    "plain": {},
    "gpu-budget": {"gpu": GPU, "replicas": 3, "disruptionBudget": {"minAvailable": 1},
                   "resources": {"requests": {"cpu": "2", "memory": "8Gi"}}},
    "workers-grpc": {"serving": {"workers": 2, "grpc": {"port": 9000}}, "replicas": 2,
                     "env": [{"name": "LOG_LEVEL", "value": "debug"}]},
}


def checkov_binary() -> Path:
    version = re.search(r"^CHECKOV_VERSION=\$\{CHECKOV_VERSION:-([0-9.]+)\}", SETUP.read_text(), re.M)
    assert version, f"no CHECKOV_VERSION default in {SETUP}"
    cache = Path(os.environ.get("MODELSHIP_CACHE", Path.home() / ".cache" / "modelship"))
    path = cache / "tools" / f"checkov-{version.group(1)}"
    if not (path / ".complete").exists():
        pytest.fail(f"checkov {version.group(1)} missing at {path}: run `bash {SETUP.relative_to(ROOT)}` "
                    "(or `make setup`)", pytrace=False)
    return path / "bin" / "checkov"


def findings(directory: Path) -> dict[str, set[str]]:
    """{check id: resources failing it}: checkov offline (no guideline download, no upload)."""
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_NO_GUIDELINES": "1"}
    proc = subprocess.run([str(checkov_binary()), "-d", str(directory), "--framework", "kubernetes", "--quiet",
                           "--compact", "--skip-download", "-o", "json"],
                          capture_output=True, text=True, check=False, timeout=600, env=env)
    assert proc.stdout.strip(), f"checkov printed nothing (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    report = report if isinstance(report, dict) else report[0]
    assert report["summary"]["parsing_errors"] == 0 and report["summary"]["resource_count"] > 0, report["summary"]
    out: dict[str, set[str]] = {}
    for check in report["results"]["failed_checks"]:
        out.setdefault(check["check_id"], set()).add(check["resource"])
    return out


def accepted(target: str) -> set[str]:
    table = yaml.safe_load(ACCEPTED.read_text())
    for check, entry in table.items():
        assert len(entry.get("why", "")) > 40, f"{check}: an acceptance needs its reason"
    return {check for check, entry in table.items() if target in entry["targets"]}


def _compare(target: str, found: dict[str, set[str]]) -> None:
    new = {c: sorted(r) for c, r in found.items() if c not in accepted(target)}
    stale = accepted(target) - set(found)
    assert not new, f"checkov findings on the {target} (fix, or accept with a reason in {ACCEPTED.name}): {new}"
    assert not stale, f"accepted in {ACCEPTED.name} for the {target} but no longer found (remove them): {stale}"


def test_chart_has_only_accepted_findings(tmp_path: Path) -> None:
    helm_binary()  # a missing helm fails with the command that builds it
    (tmp_path / "chart.yaml").write_text(yaml.safe_dump_all(render(include_crds=False)))
    _compare("chart", findings(tmp_path))


def test_operator_built_objects_have_only_accepted_findings(tmp_path: Path) -> None:
    for name, spec in SPECS.items():
        m = md(name=name, **spec)
        objects = [builders.desired_deployment(m), builders.desired_service(m), builders.desired_pdb(m)]
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all([o for o in objects if o]))
    _compare("objects", findings(tmp_path))


def test_checkov_fails_an_object_that_breaks_a_policy(tmp_path: Path) -> None:
    """The control case: a privileged container running as root is found."""
    m = md(name="bad")
    dep = builders.desired_deployment(m)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True, "runAsUser": 0, "allowPrivilegeEscalation": True}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(dep))
    assert {"CKV_K8S_16", "CKV_K8S_20"} <= set(findings(tmp_path))
