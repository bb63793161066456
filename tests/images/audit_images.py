"""pip-audit of what is installed in both images, against the vulnerability data PyPI serves.

The requirements list is exported from the built image itself (every distribution its Python
sees, modelship's own excepted: it is not on PyPI), kept under _out/images/ for a reader, and
audited with ``pip-audit --no-deps --disable-pip`` (nothing installed, nothing resolved). A
package pip-audit could not look up fails the test as surely as a vulnerability does: an audit
that skipped it proves nothing about it. A vulnerability accepted on purpose goes in
hack/security/pip-audit-accepted.yaml with its reason.

Not collected by `make test` (its name does not start with test_): `make audit-images` runs it.
**Blocked on this machine**: the PyPI served here answers 404 for the per-release JSON endpoint
that pip-audit reads vulnerabilities from (`curl -i https://pypi.org/pypi/requests/2.32.3/json`
-> `HTTP/2 404`, empty body; the project endpoint answers 200 without a `vulnerabilities` key),
so pip-audit skips every package ("Dependency not found on PyPI and could not be audited") and
this check fails, naming PyPI's answer. It runs as written wherever PyPI serves that data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from images_support import ROOT, Docker

OUT = ROOT / "_out" / "images"
ACCEPTED = ROOT / "hack" / "security" / "pip-audit-accepted.yaml"
EXPORT = ("import importlib.metadata as m; "
          "print('\\n'.join(sorted({f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions()})))")


def installed(docker: Docker, image: str) -> list[str]:
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", EXPORT).stdout
    pins = [line for line in out.splitlines() if line and not line.lower().startswith("modelship==")]
    assert len(pins) > 10, f"{image}: implausibly few distributions: {pins}"
    return pins


def audit(requirements: Path, report: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps", "--disable-pip",
                           "--progress-spinner", "off", "-f", "json", "-o", str(report)],
                          capture_output=True, text=True, check=False, timeout=600)
    if not report.exists():
        pytest.fail(f"pip-audit wrote no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}", pytrace=False)
    return json.loads(report.read_text())


@pytest.mark.parametrize("which", ["operator", "server"])
def test_installed_packages_have_no_known_vulnerabilities(request: pytest.FixtureRequest, docker: Docker,
                                                          which: str) -> None:
    image = request.getfixturevalue(f"{which}_image")
    OUT.mkdir(parents=True, exist_ok=True)
    requirements = OUT / f"{which}-installed.txt"
    requirements.write_text("\n".join(installed(docker, image)) + "\n")
    report = audit(requirements, OUT / f"{which}-pip-audit.json")
    accepted = set(yaml.safe_load(ACCEPTED.read_text()) or {}) if ACCEPTED.exists() else set()
    deps = report["dependencies"]
    skipped = {d["name"]: d["skip_reason"] for d in deps if d.get("skip_reason")}
    vulns = [f"{d['name']} {d['version']}: {v['id']} (fixed in {v.get('fix_versions')})"
             for d in deps for v in d.get("vulns", []) if v["id"] not in accepted]
    assert not skipped, (
        f"{len(skipped)} of {len(deps)} packages of {image} were not audited (see {report_path(which)}); "
        f"PyPI's answer for the first: {pypi_answer(requirements.read_text().split()[0])}; "
        + "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())[:5]))
    assert not vulns, f"known vulnerabilities in {image}:\n" + "\n".join(vulns)


def pypi_answer(pin: str) -> str:
    """What PyPI's per-release JSON endpoint (the one pip-audit reads vulnerabilities from)
    answers for one ``name==version``: the reason an audit skipped everything is told, not guessed."""
    name, version = pin.split("==")
    url = f"https://pypi.org/pypi/{name}/{version}/json"
    try:
        with urllib.request.urlopen(url, timeout=20) as rsp:  # noqa: S310 - a fixed https URL
            return f"GET {url} -> HTTP {rsp.status}"
    except urllib.error.HTTPError as exc:
        return f"GET {url} -> HTTP {exc.code} {exc.reason}"
    except OSError as exc:
        return f"GET {url} -> {exc}"


def report_path(which: str) -> Path:
    return OUT / f"{which}-pip-audit.json"
