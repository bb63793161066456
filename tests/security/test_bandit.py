"""bandit on the shipped Python sources: no finding left, and every suppression justified.

An accepted finding is suppressed where it is, with ``# nosec B<id>`` on the line and a comment
``# bandit B<id>: <why>`` right above it (one fact, one place: the reason sits by the code).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("operator", "server")
BANDIT = Path(sys.executable).with_name("bandit")


def _bandit(*paths: str) -> dict:
    proc = subprocess.run([str(BANDIT), "-r", *paths, "-f", "json", "-q"], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=300)
    assert proc.stdout, f"bandit printed no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report: dict = json.loads(proc.stdout)
    assert not report["errors"], report["errors"]
    return report


def test_bandit_finds_nothing_in_the_sources() -> None:
    report = _bandit(*SOURCES)
    assert report["metrics"]["_totals"]["loc"] > 5000, "bandit read almost nothing: wrong paths?"
    findings = [f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}" for r in report["results"]]
    assert not findings, "bandit findings (fix them, or justify a # nosec beside each):\n" + "\n".join(findings)


def test_bandit_would_report_an_unjustified_finding(tmp_path: Path) -> None:
    """The control case: the same run does report what it is there for."""
    (tmp_path / "bad.py").write_text("import subprocess\nsubprocess.call('ls ' + input(), shell=True)\n")
    report = _bandit(str(tmp_path))
    assert {r["test_id"] for r in report["results"]} >= {"B602"}


NOSEC = re.compile(r"#\s*nosec\b(.*)$")


def test_every_nosec_names_its_check_and_says_why() -> None:
    bare, unexplained = [], []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                match = NOSEC.search(line)
                if not match:
                    continue
                where = f"{path.relative_to(ROOT)}:{i + 1}"
                ids = re.findall(r"B\d{3}", match.group(1))
                if not ids:
                    bare.append(where)
                    continue
                above = "\n".join(lines[max(0, i - 3):i])
                if not all(re.search(rf"#\s*bandit {b}: \S", above) for b in ids):
                    unexplained.append(where)
    assert not bare, f"# nosec without a check id (suppresses everything on the line): {bare}"
    assert not unexplained, f"# nosec without a '# bandit B<id>: <why>' comment just above: {unexplained}"
