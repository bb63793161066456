"""The committed CRD is generated from the models, is structural, and carries the rules."""

from typing import Any

import yaml

from modelship_operator import crdgen
from modelship_operator.core import api


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def _schema() -> dict[str, Any]:
    return crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_is_up_to_date():
    stale = crdgen.stale()
    assert not stale, f"out of date: {[str(p) for p in stale]} - run `make crd` and commit"


def test_generation_is_deterministic():
    assert crdgen.render() == crdgen.render()


def test_committed_yaml_parses_to_the_generated_object():
    text = (crdgen.ROOT / crdgen.CRD_TARGETS[0]).read_text()
    assert yaml.safe_load(text) == crdgen.crd()


def test_schema_is_structural():
    for path, node in _walk(_schema()):
        assert "$ref" not in node, path
        assert "anyOf" not in node and "oneOf" not in node, path
        assert "title" not in node and "default" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert node.get("type") != "null", path
    # every property schema names a type, unless it is int-or-string or preserve-unknown
    for path, node in _walk(_schema()):
        for name, prop in (node.get("properties") or {}).items():
            if isinstance(prop, dict):
                assert "type" in prop or prop.get("x-kubernetes-int-or-string"), f"{path}.{name}"


def test_names_scope_and_subresources():
    obj = crdgen.crd()
    assert obj["metadata"]["name"] == "modeldeployments.modelship.io"
    names = obj["spec"]["names"]
    assert names["kind"] == "ModelDeployment" and names["plural"] == "modeldeployments"
    assert names["shortNames"] == ["md", "mdeploy"]
    version = obj["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Image", "Ready", "Status", "Age"]


def _rules(node: dict[str, Any]) -> dict[str, str]:
    return {r["message"]: r["rule"] for r in node.get("x-kubernetes-validations", [])}


def test_cel_rules_are_where_they_belong():
    spec = _schema()["properties"]["spec"]
    props = spec["properties"]
    assert any("tag or a digest" in m for m in _rules(props["image"]))
    assert any("gpu.count" in m for m in _rules(props["gpu"]["properties"]["count"]))
    assert any("minAvailable must be less than replicas" in m for m in _rules(spec))
    assert any("exactly one" in m for m in _rules(props["disruptionBudget"]))
    assert any("model.handler" in m for m in _rules(props["model"]))
    assert any("serving.port" in m for m in _rules(props["serving"]["properties"]["port"]))
    assert any("MODELSHIP_" in m for m in _rules(props["env"]))
    for path, node in _walk(_schema()):
        for message, rule in _rules(node).items():
            assert len(message) > 20 and rule, path  # a sentence for a user, not a bare rule


def test_optional_fields_are_not_required_and_unions_are_int_or_string():
    spec = _schema()["properties"]["spec"]
    assert spec["required"] == ["image", "model"]
    budget = spec["properties"]["disruptionBudget"]["properties"]
    assert budget["minAvailable"]["x-kubernetes-int-or-string"] is True
    assert spec["properties"]["affinity"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["properties"]["env"]["x-kubernetes-list-type"] == "map"


def test_status_has_the_fields_rollouts_build_on():
    status = _schema()["properties"]["status"]["properties"]
    for field in ("observedGeneration", "image", "stableImage", "replicas", "readyReplicas",
                  "selector", "conditions", "history"):
        assert field in status, field
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_image_regex_in_cel_matches_the_python_rule():
    rule = _rules(_schema()["properties"]["spec"]["properties"]["image"])
    assert any(api.IMAGE_PATTERN in r for r in rule.values())


def test_chart_copy_is_written_only_when_the_chart_exists(tmp_path):
    assert crdgen.targets(tmp_path) == [tmp_path / crdgen.CRD_TARGETS[0]]
    (tmp_path / crdgen.CHART_DIR).mkdir(parents=True)
    assert len(crdgen.targets(tmp_path)) == 2


def test_every_spec_level_rule_names_the_field_it_checks() -> None:
    """A CEL rule on spec itself is refused as ``spec: Invalid value: "object"`` unless it carries a
    fieldPath; with one, the user reads ``spec.volumeMounts: ...`` (the fuzzed ModelDeployments
    found two without)."""
    spec = _schema()["properties"]["spec"]
    rules = spec["x-kubernetes-validations"]
    assert len(rules) >= 4
    for rule in rules:
        path = rule.get("fieldPath", "")
        assert path.startswith(".") and path[1:].split(".")[0] in spec["properties"], rule
