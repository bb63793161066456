# Local control plane (hack/cluster.sh), the demo and the scale benchmark.
.PHONY: cluster-build cluster-up cluster-down cluster-status demo test-e2e bench-scale

cluster-build: ## build/cache the control plane binaries from Go modules (~/.cache/modelship/bin)
	@bash hack/cluster.sh build

cluster-up: ## start the local control plane (etcd, apiserver, controllers, scheduler, KWOK nodes)
	@bash hack/cluster.sh up

cluster-down: ## stop the demo operator and delete the local cluster
	@bash hack/cluster.sh down

cluster-status: ## show the local cluster's state
	@bash hack/cluster.sh status

demo: venv ## local cluster + CRD + operator + example ModelDeployments becoming Ready
	@bash hack/demo.sh

test-e2e: venv ## e2e tier only (starts the local cluster unless KUBECONFIG points at one)
	$(PY) -m pytest tests/e2e

bench-scale: venv ## N=1,100,1000 ModelDeployments applied at once vs a bulk-apply floor
	$(PY) bench/scale.py
