# Rollouts and the kubectl plugin (issue 6).
.PHONY: test-rollouts-unit test-rollouts

test-rollouts-unit: venv ## rollout decisions, status merge and the kubectl plugin (no cluster)
	$(PY) -m pytest tests/unit/test_rollout.py tests/unit/test_rollout_landing.py tests/unit/test_rollout_reconcile.py tests/unit/test_kubectl_plugin.py

test-rollouts: venv ## e2e rollouts on the local control plane; prints the measured time-to-rollback (-s)
	$(PY) -m pytest -s tests/e2e/test_rollouts.py
