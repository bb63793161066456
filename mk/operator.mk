# Operator targets (owner: operator area). ROOT, VENV, PY come from the top Makefile.
.PHONY: crd verify-crd test-operator run-operator

crd: venv ## regenerate the ModelDeployment CRD (deploy/crds/ and the chart's copy) from the pydantic models
	$(PY) -m modelship_operator.crdgen

verify-crd: venv ## fail if a committed CRD is out of date with the models
	$(PY) -m modelship_operator.crdgen --check

test-operator: venv ## operator unit tests (builders, status, CRD, validation)
	$(PY) -m pytest tests/unit -q

run-operator: venv ## run the operator against $$KUBECONFIG (default: the local cluster's)
	KUBECONFIG=$${KUBECONFIG:-$(ROOT)/_out/cluster/kubeconfig} $(PY) -m modelship_operator --all-namespaces
