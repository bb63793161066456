#!/usr/bin/env bash
# make demo: local control plane + CRD + operator + two example ModelDeployments
# (CPU and GPU) that become Ready; then leaves everything running.
#
#   1. hack/cluster.sh up            (builds the control plane on the first run)
#   2. CRD from deploy/crds/          (server-side apply, wait Established)
#   3. the operator in the background (pid: _out/demo/operator.pid, log: _out/demo/operator.log)
#   4. examples/*.yaml into namespace modelship-demo (Pod Security "restricted" enforced)
#   5. kubectl wait --for=condition=Ready md --all, then `kubectl get md` and the pods
#
# Stop with `make cluster-down` (stops the operator too).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NS=${DEMO_NAMESPACE:-modelship-demo}
DEMO=$(bash hack/cluster.sh demo-dir)
PIDFILE=$DEMO/operator.pid
LOG=$DEMO/operator.log
PY=${PY:-$ROOT/.venv/bin/python}
mkdir -p "$DEMO"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }

step "local control plane"
bash hack/cluster.sh up
KCFG=$(bash hack/cluster.sh kubeconfig)
KUBECTL=$(bash -c "source hack/cluster/versions.sh && tool_path kubectl")
k() { "$KUBECTL" --kubeconfig "$KCFG" "$@"; }

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
show "kubectl apply -n $NS -f examples/resnet-cpu.yaml -f examples/resnet-gpu.yaml"
k apply -n "$NS" -f examples/resnet-cpu.yaml -f examples/resnet-gpu.yaml
show "kubectl wait -n $NS --for=condition=Ready md --all --timeout=120s"
if ! k wait -n "$NS" --for=condition=Ready md --all --timeout=120s; then
  k get -n "$NS" md,deploy,pods -o wide || true
  echo "--- operator log (tail)"; tail -n 40 "$LOG"
  exit 1
fi
show "kubectl get md -n $NS"
k get md -n "$NS"
show "kubectl get md -n $NS -o wide"
k get md -n "$NS" -o wide
show "kubectl get pods -n $NS -o wide"
k get pods -n "$NS" -o wide

cat <<EOF

The demo keeps running. Try:
  export KUBECONFIG=$KCFG
  alias kubectl=$KUBECTL
  kubectl -n $NS scale md/resnet-cpu --replicas=3
  kubectl -n $NS patch md/resnet-cpu --type=merge -p '{"spec":{"image":"fail.modelship.test/server:crashloop"}}'
  kubectl -n $NS get md -w
  tail -f $LOG
Stop everything (operator + cluster):  ${MODELSHIP_CLUSTER_NAME:+MODELSHIP_CLUSTER_NAME=$MODELSHIP_CLUSTER_NAME }make cluster-down
EOF
