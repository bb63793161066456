# Operator targets (owner: operator area). ROOT, VENV, PY come from the top Makefile.
.PHONY: crd verify-crd test-operator run-operator fuzz-operator chaos-operator security audit-images

crd: venv ## regenerate the ModelDeployment CRD (deploy/crds/ and the chart's copy) from the pydantic models
	$(PY) -m modelship_operator.crdgen

verify-crd: venv ## fail if a committed CRD is out of date with the models
	$(PY) -m modelship_operator.crdgen --check

test-operator: venv ## operator unit tests (builders, status, CRD, validation)
	$(PY) -m pytest tests/unit -q

run-operator: venv ## run the operator against $$KUBECONFIG (default: the local cluster's)
	KUBECONFIG=$${KUBECONFIG:-$(ROOT)/_out/cluster/kubeconfig} $(PY) -m modelship_operator --all-namespaces

fuzz-operator: venv ## long fuzz campaign: 1,000 fuzzed ModelDeployments (MODELSHIP_FUZZ_SEED replays) -> bench/campaigns/fuzz-specs.json
	MODELSHIP_CAMPAIGN=long $(PY) -m pytest -q -s tests/e2e/test_fuzz_specs.py -k refused_or_reported

chaos-operator: venv ## long chaos campaign: more objects, kills and rounds (MODELSHIP_CHAOS_SEED replays) -> bench/campaigns/chaos.json
	MODELSHIP_CAMPAIGN=long $(PY) -m pytest -q -s tests/e2e/test_chaos.py

security: venv ## bandit and checkov (tests/security; both also run in make test)
	$(PY) -m pytest -q tests/security

audit-images: setup ## pip-audit of both images' installed packages (blocked here: PyPI's per-release JSON answers 404)
	$(PY) -m pytest -q tests/images/audit_images.py
