# Inference server (server/modelship_server): tests, a local run, the benchmark, the GPU check.
SERVER_OUT := $(ROOT)/_out/server

.PHONY: test-server serve-example bench-server gpu-check fuzz-server soak-server

test-server: venv ## server tier: the real app with real torch models (~1 min)
	$(PY) -m pytest tests/server

serve-example: venv ## serve a tiny TorchScript MLP on 127.0.0.1:8000 (Ctrl-C stops)
	@$(PY) bench/server/run.py --export-models $(SERVER_OUT) >/dev/null
	$(PY) -m modelship_server --host 127.0.0.1 --model-name tiny --model-uri $(SERVER_OUT)/tiny.pt

bench-server: venv ## wrk: modelship vs the raw floor and peers (own venvs), CNN batching, workers, profile
	@command -v wrk >/dev/null || { echo "wrk missing: make setup (apt-get install wrk)"; exit 1; }
	$(PY) bench/server/run.py $(BENCH_ARGS)

fuzz-server: venv ## long protocol campaign: schemathesis + hostile HTTP/gRPC, >= 10,000 requests (SEED=n replays one)
	$(PY) bench/server/fuzz.py $(if $(SEED),--seed $(SEED)) $(FUZZ_ARGS)

soak-server: venv ## server soak: 10 min at saturation, mixed good/bad stream; curves to bench/server/results/
	$(PY) bench/server/soak.py $(if $(SEED),--seed $(SEED)) $(SOAK_ARGS)

gpu-check: venv ## CUDA path check (needs an NVIDIA GPU; DEVICE=cpu for a dry run)
	$(PY) hack/gpu-check.py --device $(or $(DEVICE),cuda)
