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
import random
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import yaml
from e2e_support import CRD_FILE
from hypothesis import HealthCheck, Phase, given, seed, settings
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
    return _from_node(_jsonschema(_property(path)))


def _from_node(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for one plain-JSON-Schema node: objects and arrays built here, field by field,
    scalars by hypothesis-jsonschema. (Its own object strategy drives private hypothesis
    internals that 6.170.17 no longer has: ``'many' object has no attribute 'more'``.)"""
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties") or {}
        if props:
            required = set(node.get("required") or ())
            return st.fixed_dictionaries(
                {k: _from_node(v) for k, v in props.items() if k in required},
                optional={k: _from_node(v) for k, v in props.items() if k not in required})
        values = node.get("additionalProperties")
        return st.dictionaries(st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?", fullmatch=True),
                               _from_node(values) if isinstance(values, dict) else st.text(max_size=20),
                               max_size=3)
    if kind == "array":
        items = node.get("items") or {}
        return st.lists(_from_node(items), min_size=node.get("minItems", 0),
                        max_size=min(node.get("maxItems", 3), 3))
    return from_schema(node)


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
        """Field names a refusal of this object may use: each mutated path's own name and its
        parent's (a CEL rule on an object is reported at the object), and ``spec.<field>`` of
        every field the spec has (the schema-drawn fields break CEL rules of their own, which
        the plain JSON schema they come from cannot express)."""
        out = set()
        for path in self.mutated:
            out.update(path[-2:] if len(path) > 1 else path)
            out.add(".".join(path))
        if isinstance(self.spec, dict):
            out.update(f"spec.{key}" for key in self.spec)
            out.update(f"{key}." for key in self.spec)  # a spec-level CEL rule: "serving.device cuda needs ..."
        return out or {"spec"}


def _set(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = spec
    for name in path[:-1]:
        child = node.get(name)
        if not isinstance(child, dict):
            child = node[name] = {}
        node = child
    node[path[-1]] = value


def _dice(draw: st.DrawFn) -> random.Random:
    """Proportions (which fields, how many mutations, of which kind) from a Random that
    hypothesis seeds (so the campaign's seed still replays it): hypothesis's own small choices
    lean hard on their bounds in a generate-only run, which made most specs all-fields or
    no-fields and sent most mutations to the first field. The values themselves are hypothesis's."""
    return draw(st.randoms(use_true_random=True))


#: Images the operator accepts (a tag or a digest: a CEL rule the plain schema above cannot
#: express), on registries KWOK runs as healthy pods; a schema-only image is almost never one.
IMAGES = st.builds("{}/{}:{}".format, st.sampled_from(["registry.example.com/ml", "r.example.org:5000/a/b"]),
                   st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,20}[a-z0-9])?", fullmatch=True),
                   st.from_regex(r"[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}(-[a-z0-9]{1,8})?", fullmatch=True))
#: Models the operator accepts: name and uri from the schema, a format that needs nothing else.
MODELS = st.fixed_dictionaries(
    {"name": st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,20}[a-z0-9])?", fullmatch=True),
     "uri": st.sampled_from(["file:///models/m.pt", "https://models.example.com/resnet.pt", "s3://b/k.pt"]),
     "format": st.sampled_from(["torchscript", "torch-export"])},
    optional={"sha256": st.from_regex(r"[a-f0-9]{64}", fullmatch=True)})


@st.composite
def base_spec(draw: st.DrawFn) -> dict[str, Any]:
    """A spec whose fields each satisfy their own schema: an image and a model the operator
    accepts always, every other top-level field drawn from its schema with probability ~0.3."""
    spec = {"image": draw(IMAGES), "model": draw(MODELS)}
    dice = _dice(draw)
    for name in spec_schema()["properties"]:
        if name not in spec and dice.random() < 0.3:
            spec[name] = draw(valid_value((name,)))
    return spec


@st.composite
def fuzzed_spec(draw: st.DrawFn) -> Fuzzed:
    spec = draw(base_spec())
    fuzzed = Fuzzed(spec)
    dice = _dice(draw)
    for _ in range(dice.choices(range(4), weights=(4, 3, 2, 1))[0]):
        kind = dice.choice(["hostile", "hostile", "unknown-field", "reserved-env", "valid"])
        if kind == "unknown-field":
            parents = [p for p in field_paths() if _property(p).get("properties")]
            parent = dice.choice([(), *parents])
            path = (*parent, draw(UNKNOWN_KEY))
            _set(spec, path, draw(st.one_of(HOSTILE, st.just("x"))))
        elif kind == "reserved-env":
            path = ("env",)
            entries = list(spec.get("env") or []) if isinstance(spec.get("env"), list) else []
            entries.append({"name": draw(RESERVED_ENV), "value": draw(st.one_of(st.just("1"), UNICODE))})
            spec["env"] = entries
        else:
            path = dice.choice(field_paths())
            _set(spec, path, draw(HOSTILE if kind == "hostile" else valid_value(path)))
        fuzzed.mutated.append(path)
        fuzzed.kinds.append(kind)
    # Once in a while (1 %): the whole spec is of the wrong type.
    if dice.random() < 0.01:
        fuzzed.spec = draw(WRONG_TYPES.filter(lambda v: not isinstance(v, dict)))
        fuzzed.mutated, fuzzed.kinds = [("spec",)], ["spec-type"]
    return fuzzed


def generate(count: int, campaign_seed: int) -> list[Fuzzed]:
    """``count`` specs, each from a fresh hypothesis run seeded ``(campaign_seed, i)``: one run
    of many examples mostly mutates its earlier examples (half of 300 specs came out alike), and
    the first example of a run is always the simplest one, so the second of each run is kept."""
    return [_one(campaign_seed * 1_000_003 + i) for i in range(count)]


def _one(run_seed: int) -> Fuzzed:
    drawn: list[Fuzzed] = []

    @seed(run_seed)
    @settings(max_examples=2, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzzed_spec())
    def draw(fuzzed: Fuzzed) -> None:
        drawn.append(fuzzed)

    draw()
    return drawn[-1]


def manifest(name: str, namespace: str, fuzzed: Fuzzed) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": namespace},
            "spec": copy.deepcopy(fuzzed.spec)}
