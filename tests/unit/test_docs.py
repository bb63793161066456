"""The README is a front door and docs/ holds the reference: their snippets, links, flags, make
targets, values and variables are checked against the code, and so is the layering that
docs/architecture.md describes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from modelship_operator import __main__ as cli
from modelship_server import settings as server_settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
PACKAGE = ROOT / "operator" / "modelship_operator"


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), re.M | re.S)


def test_the_readme_is_a_front_door() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 100
    commands = _blocks(ROOT / "README.md", "bash")[0].splitlines()
    assert [c.split()[:2] for c in commands] == [["make", "demo"], ["make", "test"]]
    for page in ("api", "rollouts", "server", "helm", "images", "development", "architecture"):
        assert f"(docs/{page}.md)" in text, page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_yaml_snippets_parse(page: Path) -> None:
    for block in _blocks(page, "yaml"):
        assert yaml.safe_load(block) is not None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_make_targets_named_exist(page: Path) -> None:
    makefiles = [ROOT / "Makefile", *(ROOT / "mk").glob("*.mk")]
    targets = {m for f in makefiles for m in re.findall(r"^([A-Za-z0-9_.-]+):", f.read_text(), re.M)}
    text = page.read_text()
    named = re.findall(r"`make ([a-z][a-z0-9-]*)", text) + re.findall(r"^\s*(?:\$ )?make ([a-z][a-z0-9-]*)", text, re.M)
    for target in named:
        assert target in targets, f"{page.name}: make {target} does not exist"


def test_every_operator_flag_is_documented_and_every_documented_flag_exists() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    flags = {s for action in cli.build_parser()._actions for s in action.option_strings if s.startswith("--")}
    flags -= {"--help", "--log-level"}  # argparse's own; the log level is the usual one
    for flag in flags:
        assert flag in text, f"docs/api.md does not mention {flag}"
    (run,) = [b for b in _blocks(ROOT / "docs" / "api.md", "bash") if "python -m modelship_operator " in b]
    for flag in re.findall(r"(--[a-z][a-z-]+)", run):
        assert flag in flags, f"docs/api.md documents {flag}, which the operator does not have"


def test_server_variables_in_the_docs_are_the_servers() -> None:
    fields = server_settings.Settings.model_fields
    for page in (ROOT / "docs" / "server.md", ROOT / "docs" / "api.md"):
        for name in set(re.findall(r"\bMODELSHIP_([A-Z0-9_]+[A-Z0-9])\b", page.read_text())):
            assert name.lower() in fields, f"{page.name}: MODELSHIP_{name} is no server setting"


def test_helm_values_in_the_docs_exist() -> None:
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "modelship" / "values.yaml").read_text())
    for key in re.findall(r"`([a-zA-Z]+(?:\.[a-zA-Z]+)+)(?:[:=][^`]*)?`", (ROOT / "docs" / "helm.md").read_text()):
        head, *rest = key.split(".")
        if head not in values:
            continue  # a file name or a kind, not a value
        node = values[head]
        for part in rest:
            assert isinstance(node, dict) and part in node, f"docs/helm.md: {key} is not a chart value"
            node = node[part]


def test_the_architecture_page_is_one_page_and_names_real_modules() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert len(text.splitlines()) <= 60
    for module in set(re.findall(r"\b((?:core|runtime)/[a-z_/]+\.py|[a-z_]+\.py)\b", text)):
        if module in ("api.py", "values.py"):
            continue
        candidates = [PACKAGE / module, PACKAGE / "core" / module, ROOT / "tests" / "unit" / module]
        assert any(c.exists() for c in candidates), f"docs/architecture.md names {module}, which does not exist"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("core", ("modelship_operator.reconcile", "modelship_operator.runtime", "modelship_operator.kube", "kopf",
                  "kubernetes")),
        ("reconcile.py", ("modelship_operator.runtime", "kopf")),
    ],
)
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    paths = sorted((PACKAGE / layer).rglob("*.py")) if (PACKAGE / layer).is_dir() else [PACKAGE / layer]
    for path in paths:
        bad = {name for name in _imports(path) if name.startswith(forbidden)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"
