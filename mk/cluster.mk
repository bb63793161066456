# Local control plane (hack/cluster.sh), the demo and the scale benchmark.
.PHONY: cluster-build cluster-up cluster-down cluster-status node-up node-down demo test-e2e test-node bench-scale bench-node soak-operator

cluster-build: ## build/cache the control plane binaries from Go modules (~/.cache/modelship/bin)
	@bash hack/cluster.sh build

cluster-up: ## start the local control plane (etcd, apiserver, controllers, scheduler, KWOK nodes)
	@bash hack/cluster.sh up

node-up: ## add the real node (kubelet + containerd on this host) to the local cluster
	@bash hack/cluster.sh node-up

node-down: ## stop the real node; leaves no containers, mounts, bridge, iptables rules or cgroups
	@bash hack/cluster.sh node-down

cluster-down: ## stop the demo operator and delete the local cluster
	@bash hack/cluster.sh down

cluster-status: ## show the local cluster's state
	@bash hack/cluster.sh status

demo: setup ## local cluster with a real node + CRD + operator; a real pod serves a prediction, a bad tag rolls back
	@bash hack/demo.sh

test-node: setup ## node tier only: the real server image on a real kubelet (own cluster "<name>-node")
	$(PY) -m pytest tests/node

test-e2e: venv ## e2e tier only (starts the local cluster unless KUBECONFIG points at one)
	$(PY) -m pytest tests/e2e

bench-scale: venv ## N=1,100,1000 ModelDeployments applied at once vs a bulk-apply floor
	$(PY) bench/scale.py

soak-operator: venv ## 1,000 ModelDeployments through 10 minutes of resync cycles: memory, threads, queue (bench/results, docs/operator-soak.svg)
	$(PY) bench/soak_operator.py

bench-node: setup ## real node: apply->prediction, rollout under load, time to rollback per real failure
	$(PY) bench/node.py
