#!/usr/bin/env bash
# make demo: a local control plane with a REAL node (kubelet + containerd on this host) and
# fake GPU nodes; the CRD; the operator; a CPU ModelDeployment of the real server image that
# becomes Ready and answers a prediction; a broken tag rolled back on real pods; and the GPU
# example on a fake GPU node. Everything keeps running afterwards.
#
#   1. hack/cluster.sh up --real-node   (builds the binaries on the first run; cluster "modelship")
#   2. the server image and modelship-models:v1 (the server image + a tiny MLP), imported
#      into the real node's containerd (once per image ID)
#   3. CRD, then the operator in the background (pid: _out/demo/operator.pid)
#   4. examples/mlp-real-node.yaml and examples/resnet-gpu.yaml into namespace modelship-demo
#      (Pod Security "restricted" enforced); wait for Ready; a prediction through
#      `kubectl port-forward`; the time from apply to that first prediction
#   5. a tag that no image store has: the real ErrImagePull, rolled back, history shown
#
# The tests never use this cluster (they run their own), so `make demo` then `make test` in
# one checkout is fine. Stop it with `make cluster-down`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NS=${DEMO_NAMESPACE:-modelship-demo}
export MODELSHIP_CLUSTER_NAME=${MODELSHIP_CLUSTER_NAME:-modelship}
DEMO=$(bash hack/cluster.sh demo-dir)
PIDFILE=$DEMO/operator.pid
LOG=$DEMO/operator.log
PY=${PY:-$ROOT/.venv/bin/python}
PLUGIN=$ROOT/.venv/bin/kubectl-modelship
mkdir -p "$DEMO"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }
now() { date +%s.%N; }

step "local control plane with a real node"
bash hack/cluster.sh up --real-node
KCFG=$(bash hack/cluster.sh kubeconfig)
KUBECTL=$(bash -c "source hack/cluster/versions.sh && tool_path kubectl")
k() { "$KUBECTL" --kubeconfig "$KCFG" "$@"; }
k get nodes -o wide

step "images: the server image + a baked model, imported into the real node"
bash hack/docker/dockerd.sh start
bash hack/docker/build.sh server >"$DEMO/build-server.log" 2>&1 \
  || { tail -30 "$DEMO/build-server.log"; echo "demo: the server image did not build" >&2; exit 1; }
tail -1 "$DEMO/build-server.log"
bash hack/docker/model-images.sh v1
bash hack/cluster.sh load modelship-models:v1

step "CRD"
k apply --server-side --force-conflicts -f deploy/crds/modelship.io_modeldeployments.yaml
k wait --for=condition=Established crd/modeldeployments.modelship.io --timeout=60s

step "operator"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "restarting the demo operator (pid $(cat "$PIDFILE")) to pick up the current code"
  kill "$(cat "$PIDFILE")"
  for _ in $(seq 50); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.2; done
fi
# Free loopback ports: other operators (tests, other checkouts) may hold the defaults.
read -r HEALTH_PORT METRICS_PORT < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
KUBECONFIG=$KCFG nohup setsid "$PY" -m modelship_operator --all-namespaces --kubeconfig "$KCFG" \
  --health-port "$HEALTH_PORT" --metrics-port "$METRICS_PORT" >"$LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"
sleep 1
kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { cat "$LOG"; echo "demo: the operator exited at start" >&2; exit 1; }
echo "operator pid $(cat "$PIDFILE"), log $LOG, metrics http://127.0.0.1:$METRICS_PORT/metrics"

step "ModelDeployments (namespace $NS)"
k create namespace "$NS" --dry-run=client -o yaml | k apply -f - >/dev/null
k label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
# A re-run starts from scratch, so the time below is a real apply-to-prediction.
k -n "$NS" delete md --all --wait=true >/dev/null 2>&1 || true
k -n "$NS" wait --for=delete pod -l app.kubernetes.io/managed-by=modelship --timeout=90s >/dev/null 2>&1 || true
show "kubectl apply -n $NS -f examples/mlp-real-node.yaml -f examples/resnet-gpu.yaml"
applied=$(now)
k apply -n "$NS" -f examples/mlp-real-node.yaml -f examples/resnet-gpu.yaml
show "kubectl wait -n $NS --for=condition=Ready md --all --timeout=180s"
if ! k wait -n "$NS" --for=condition=Ready md --all --timeout=180s; then
  k get -n "$NS" md,deploy,pods -o wide || true
  echo "--- operator log (tail)"; tail -n 40 "$LOG"
  exit 1
fi
show "kubectl get md,pods -n $NS -o wide"
k get md -n "$NS"
k get pods -n "$NS" -o wide

step "a prediction from the real pod (kubectl port-forward)"
PF_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
k -n "$NS" port-forward svc/mlp "$PF_PORT:http" >"$DEMO/port-forward.log" 2>&1 &
PF=$!
trap 'kill $PF 2>/dev/null || true' EXIT
BODY='{"instances": [[0.5, -1.0, 0.25, 2.0]]}'
show "kubectl -n $NS port-forward svc/mlp $PF_PORT:http &"
show "curl -s localhost:$PF_PORT/v1/models/mlp:predict -d '$BODY'"
answer=""
for _ in $(seq 1 100); do
  answer=$(curl -sf "http://127.0.0.1:$PF_PORT/v1/models/mlp:predict" -d "$BODY" 2>/dev/null) && break
  sleep 0.1
done
[ -n "$answer" ] || { cat "$DEMO/port-forward.log"; echo "demo: no prediction through the port-forward" >&2; exit 1; }
answered=$(now)
echo "$answer"
awk -v a="$applied" -v b="$answered" 'BEGIN { printf "apply -> first prediction from the real pod: %.1f s\n", b - a }'
kill $PF 2>/dev/null || true

step "a broken tag, rolled back on real pods"
show "kubectl -n $NS patch md/mlp --type=merge -p '{\"spec\":{\"image\":\"modelship-models:missing\"}}'"
k -n "$NS" patch md/mlp --type=merge -p '{"spec":{"image":"modelship-models:missing"}}'
show "kubectl modelship watch md/mlp -n $NS --timeout 2m"
KUBECONFIG=$KCFG "$PLUGIN" watch md/mlp -n "$NS" --timeout 2m || true
show "kubectl modelship history md/mlp -n $NS"
KUBECONFIG=$KCFG "$PLUGIN" history md/mlp -n "$NS"
show "kubectl get md mlp -n $NS"
k get md mlp -n "$NS"

cat <<EOF

The demo keeps running (cluster "$MODELSHIP_CLUSTER_NAME": a real node and two fake GPU nodes). Try:
  export KUBECONFIG=$KCFG
  alias kubectl=$KUBECTL
  kubectl -n $NS get pods -o wide                      # mlp on real-node, resnet-gpu on kwok-gpu-*
  kubectl -n $NS logs deploy/mlp                       # the real server's log
  kubectl -n $NS patch md/mlp --type=merge -p '{"spec":{"image":"modelship-models:v1"}}'   # fix forward
  tail -f $LOG
Stop everything (operator, real node, cluster):  make cluster-down
EOF
