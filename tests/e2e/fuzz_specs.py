"""Hypothesis strategies for fuzzed ModelDeployment specs (tests/e2e/test_fuzz_specs.py).

Derived from the two schema sources: the generated CRD (``deploy/crds/``, read here; each
property's valid values come from its own schema through hypothesis-jsonschema) and the pydantic
models (the names the operator reserves in ``spec.env``, and the oracle: ``api.parse`` says
whether the operator itself accepts what the API server let through). On top of a spec that is
valid for the schema, up to three fields are replaced by hostile values: wrong types, extreme
numbers, unicode, empty and oversized strings, unknown fields, reserved env names.

Two limits keep the campaign cheap on a 2-core machine, and say so: valid ``replicas`` are at
most 3 (every pod is API load; ``replicas`` beyond the schema's range is still generated, and
refused), and oversized strings are at most 300,000 characters (a few per hundred objects).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import yaml
from e2e_support import CRD_FILE
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from modelship_operator.core import api

#: Valid replicas are capped (each pod is real API load); out-of-range ones still come from HOSTILE.
MAX_REPLICAS = 3
#: Longest string a mutation sends: large enough to hit every maxLength, well under the API
#: server's 3 MB request limit (which is tried once, in OVERSIZED_BODY).
OVERSIZED = 300_000


@cache
def spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """A CRD schema node as plain JSON Schema: the ``x-kubernetes-*`` keys dropped (an
    int-or-string node becomes "integer or string"), descriptions gone."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "description":
            continue
        if key == "properties":
            out[key] = {k: _jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _jsonschema(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
        out = {"type": "object"}
    return out


def _leaf_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every field path of the spec schema (objects' properties, recursively)."""
    paths = []
    for name, child in (node.get("properties") or {}).items():
        path = (*prefix, name)
        paths.append(path)
        if child.get("type") == "object" and child.get("properties"):
            paths.extend(_leaf_paths(child, path))
    return paths


@cache
def field_paths() -> tuple[tuple[str, ...], ...]:
    return tuple(_leaf_paths(spec_schema()))


def _property(path: tuple[str, ...]) -> dict[str, Any]:
    node = spec_schema()
    for name in path:
        node = node["properties"][name]
    return node


@cache
def valid_value(path: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Values the schema of ``spec.<path>`` accepts (CEL rules aside: combinations of valid
    fields may still break one, which is part of the campaign)."""
    if path == ("replicas",):
        return st.integers(0, MAX_REPLICAS)
    return from_schema(_jsonschema(_property(path)))


# ---------------------------------------------------------------- hostile values

UNICODE = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
EXTREME_NUMBERS = st.sampled_from([
    -1, 0, -(2**31), 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64, 10**30,
    0.5, -0.0, 1e308, -1e308, 1e-300,
])
WRONG_TYPES = st.one_of(st.none(), st.booleans(), st.just([]), st.just({}), st.lists(st.integers(), max_size=3),
                        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), st.just("1"))
STRINGS = st.one_of(st.just(""), st.just(" "), UNICODE, st.text(alphabet="aé\u0000\ud7ff\U0001f600", max_size=20),
                    st.integers(1, 4).map(lambda k: "x" * (OVERSIZED // 4 * k)))
HOSTILE = st.one_of(WRONG_TYPES, EXTREME_NUMBERS, STRINGS)
RESERVED_ENV = st.sampled_from(api.RESERVED_ENV)
UNKNOWN_KEY = st.one_of(st.sampled_from(["foo", "Replicas", "image ", "spec", "$ref", "metadata", "x-kubernetes"]),
                        st.text(st.characters(codec="utf-8"), min_size=1, max_size=12))


@dataclass
class Fuzzed:
    """One generated spec and what was done to it (the fields a refusal must name)."""

    spec: Any
    mutated: list[tuple[str, ...]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def names(self) -> set[str]:
        """Field names a message about this object may use: each mutated path's own name and
        its parent's (a CEL rule on an object is reported at the object)."""
        out = set()
        for path in self.mutated:
            out.update(path[-2:] if len(path) > 1 else path)
            out.add(".".join(path))
        return out or {"spec"}


def _set(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = spec
    for name in path[:-1]:
        child = node.get(name)
        if not isinstance(child, dict):
            child = node[name] = {}
        node = child
    node[path[-1]] = value


@st.composite
def base_spec(draw: st.DrawFn) -> dict[str, Any]:
    """A spec whose fields each satisfy their own schema: image and model always, every other
    top-level field with probability ~0.3."""
    spec = {"image": draw(valid_value(("image",))), "model": draw(valid_value(("model",)))}
    for name in spec_schema()["properties"]:
        if name not in spec and draw(st.integers(0, 9)) < 3:
            spec[name] = draw(valid_value((name,)))
    return spec


@st.composite
def fuzzed_spec(draw: st.DrawFn) -> Fuzzed:
    spec = draw(base_spec())
    fuzzed = Fuzzed(spec)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["hostile", "hostile", "unknown-field", "reserved-env", "valid"]))
        if kind == "unknown-field":
            parents = [p for p in field_paths() if _property(p).get("properties")]
            parent = draw(st.sampled_from([(), *parents]))
            path = (*parent, draw(UNKNOWN_KEY))
            _set(spec, path, draw(st.one_of(HOSTILE, st.just("x"))))
        elif kind == "reserved-env":
            path = ("env",)
            entries = list(spec.get("env") or []) if isinstance(spec.get("env"), list) else []
            entries.append({"name": draw(RESERVED_ENV), "value": draw(st.one_of(st.just("1"), UNICODE))})
            spec["env"] = entries
        else:
            path = draw(st.sampled_from(field_paths()))
            _set(spec, path, draw(HOSTILE if kind == "hostile" else valid_value(path)))
        fuzzed.mutated.append(path)
        fuzzed.kinds.append(kind)
    if draw(st.integers(0, 99)) == 0:  # once in a while: the whole spec is of the wrong type
        fuzzed.spec = draw(WRONG_TYPES.filter(lambda v: not isinstance(v, dict)))
        fuzzed.mutated, fuzzed.kinds = [("spec",)], ["spec-type"]
    return fuzzed


def manifest(name: str, namespace: str, fuzzed: Fuzzed) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": namespace},
            "spec": copy.deepcopy(fuzzed.spec)}
