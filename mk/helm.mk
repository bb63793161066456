# Helm chart (deploy/helm/modelship): build helm from Go modules, lint, render, test.
HELM_VERSION ?= v3.19.5
MODELSHIP_CACHE ?= $(HOME)/.cache/modelship
HELM := $(MODELSHIP_CACHE)/bin/helm-$(HELM_VERSION)/helm
CHART := $(ROOT)/deploy/helm/modelship

.PHONY: helm helm-lint helm-template test-helm test-e2e-helm
helm: ## build helm from Go modules into ~/.cache/modelship/bin (cached)
	@HELM_VERSION=$(HELM_VERSION) bash hack/setup.d/helm.sh

helm-lint: helm ## helm lint --strict the chart with every ci/*-values.yaml
	@for f in $(CHART)/ci/*-values.yaml; do echo "== $$f"; $(HELM) lint --strict $(CHART) -f $$f || exit 1; done

helm-template: helm ## render the chart with its defaults (pass VALUES=path to add a values file)
	@$(HELM) template modelship $(CHART) --namespace modelship-system --include-crds $(if $(VALUES),-f $(VALUES))

test-helm: helm venv ## chart tests without a cluster (lint, template, schema, RBAC)
	$(PY) -m pytest tests/helm

test-e2e-helm: helm venv ## chart e2e: install/upgrade/uninstall, can-i, HA hand-over, operator scenarios under the chart SA
	$(PY) -m pytest tests/e2e/test_helm.py tests/e2e/test_helm_scenarios.py
