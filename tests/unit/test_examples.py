"""Every example ModelDeployment is valid for the operator and builds children."""

from pathlib import Path

import pytest
import yaml

from modelship_operator.core import api, builders

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def _model_deployments():
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == api.KIND:
                yield pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}")


def test_examples_exist():
    assert EXAMPLES


@pytest.mark.parametrize("doc", list(_model_deployments()))
def test_example_is_valid_and_builds(doc):
    doc = {**doc, "metadata": {**doc["metadata"], "namespace": "ml", "uid": "u"}}
    md = api.parse(doc)
    assert builders.desired_deployment(md)["spec"]["template"]["spec"]["containers"][0]["image"] == md.spec.image
    builders.desired_service(md)
    builders.desired_pdb(md)
