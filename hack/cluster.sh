#!/usr/bin/env bash
# The local control plane: real etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler (built from Go modules, see hack/cluster/build.sh) plus KWOK fake
# nodes, started by `kwokctl --runtime binary`. Loopback only.
#
#   hack/cluster.sh up          build/cache the binaries if needed, start the cluster,
#                               create the fake nodes; returns at once when it runs
#   hack/cluster.sh up --real-node
#                               the same plus a real node (kubelet + containerd on this
#                               host, hack/cluster/node.sh); the fake CPU nodes are left
#                               out so CPU pods land on the real node (fake GPU nodes stay)
#   hack/cluster.sh down        stop the demo operator (if any), the real node, the cluster
#   hack/cluster.sh status      components, nodes
#   hack/cluster.sh node-up|node-down|node-status   the real node alone
#   hack/cluster.sh load IMAGE...   import docker images into the real node (per digest)
#   hack/cluster.sh metrics-up|metrics-down   metrics-server for the real node (the HPA's
#                               CPU metrics; hack/cluster/metrics-server.sh)
#   hack/cluster.sh kubeconfig  print the kubeconfig path ($ROOT/_out/cluster/kubeconfig)
#   hack/cluster.sh kubectl ... the cached kubectl against this cluster
#   hack/cluster.sh build       build/cache the binaries only
#
# State (etcd data, certificates, component logs) lives under _out/cluster/kwok
# (MODELSHIP_CLUSTER_NAME=x: a separate cluster under _out/cluster-x/);
# nothing is written to ~/.kube. KUBEBUILDER_ASSETS, when set, may supply
# kube-apiserver/etcd/kubectl binaries; the rest come from ~/.cache/modelship/bin.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=cluster/versions.sh
source "$ROOT/hack/cluster/versions.sh"

# MODELSHIP_CLUSTER_NAME runs a second, private cluster beside the shared one
# (its own ports, state and kubeconfig under _out/cluster-NAME/).
CLUSTER_NAME=${MODELSHIP_CLUSTER_NAME:-modelship}
if [ "$CLUSTER_NAME" = modelship ]; then OUT=$ROOT/_out/cluster; else OUT=$ROOT/_out/cluster-$CLUSTER_NAME; fi
KUBECONFIG_PATH=$OUT/kubeconfig
if [ "$CLUSTER_NAME" = modelship ]; then DEMO_DIR=$ROOT/_out/demo; else DEMO_DIR=$ROOT/_out/demo-$CLUSTER_NAME; fi
DEMO_PIDFILE=$DEMO_DIR/operator.pid
export KWOK_WORKDIR=$OUT/kwok

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: ERROR: $*" >&2; exit 1; }

# resolve TOOL -> path of the binary to use (KUBEBUILDER_ASSETS first, then the cache).
resolve() {
  local t=$1
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$t" ]; then
    echo "$KUBEBUILDER_ASSETS/$t"
  else
    tool_path "$t"
  fi
}

ensure_tools() {
  local missing=() t
  for t in "${ALL_TOOLS[@]}"; do
    [ -x "$(resolve "$t")" ] || missing+=("$t")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "building ${missing[*]} (first run on this machine: several minutes)"
    bash "$ROOT/hack/cluster/build.sh" "${missing[@]}"
  fi
}

kubectl_() { "$(resolve kubectl)" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
kwokctl_() { "$(resolve kwokctl)" --name "$CLUSTER_NAME" "$@"; }

healthy() {
  [ -s "$KUBECONFIG_PATH" ] && kubectl_ get --raw /readyz --request-timeout=3s >/dev/null 2>&1
}

# wait_for DESCRIPTION SECONDS CMD...: poll CMD until it succeeds or the deadline passes.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

nodes_ready() {  # nodes_ready N: at least N fake nodes are Ready
  local ready
  ready=$(kubectl_ get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)
  [ "$ready" -ge "$1" ]
}

# ensure_nodes REAL: the fake nodes of hack/cluster/nodes.yaml; with a real node (REAL=1)
# only the fake GPU nodes, so that a CPU pod can only land on the real one.
ensure_nodes() {
  local want=4
  if [ "$1" = 1 ]; then
    want=2
    kubectl_ apply -f "$ROOT/hack/cluster/nodes.yaml" -l nvidia.com/gpu.present=true >/dev/null
    kubectl_ delete nodes -l 'type=kwok,!nvidia.com/gpu.present' --ignore-not-found >/dev/null
  else
    kubectl_ apply -f "$ROOT/hack/cluster/nodes.yaml" >/dev/null
  fi
  wait_for "$want fake nodes to be Ready" 60 nodes_ready "$want"
  # Pods are admitted only once the namespace's default ServiceAccount exists.
  wait_for "the default ServiceAccount" 60 kubectl_ -n default get serviceaccount default
}

cmd_up() {
  local start=$SECONDS real=0
  case "${1:-}" in --real-node) real=1 ;; "") ;; *) die "unknown option $1 (up [--real-node])" ;; esac
  ensure_tools
  mkdir -p "$OUT"
  if healthy; then
    ensure_nodes "$real"
    [ "$real" = 0 ] || bash "$ROOT/hack/cluster/node.sh" up
    log "already running (kubeconfig: $KUBECONFIG_PATH)"
    return 0
  fi
  # Leftovers of a cluster whose processes are gone (machine restart, killed
  # session): the state is disposable, start afresh.
  if [ -d "$KWOK_WORKDIR/clusters/$CLUSTER_NAME" ]; then
    log "removing stale cluster state"
    kwokctl_ delete cluster >/dev/null 2>&1 || true
    rm -rf "${KWOK_WORKDIR:?}/clusters/$CLUSTER_NAME"
  fi
  rm -f "$KUBECONFIG_PATH"
  local kube_version=$K8S_VERSION
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
    kube_version=$("$KUBEBUILDER_ASSETS/kube-apiserver" --version | awk '{print $2}')
  fi
  log "starting kube $kube_version, etcd $ETCD_VERSION, kwok $KWOK_VERSION"
  sed "s|@PKI@|$KWOK_WORKDIR/clusters/$CLUSTER_NAME/pki|g" "$ROOT/hack/cluster/kwok.yaml" >"$OUT/kwok.yaml"
  # kwokctl needs kubectl on PATH as well as by option. Versions go by env
  # (KWOK_KUBE_VERSION, KWOK_ETCD_VERSION): kwokctl picks component flags by them.
  PATH="$(dirname "$(resolve kubectl)"):$PATH" \
  KWOK_KUBE_VERSION=$kube_version \
  KWOK_ETCD_VERSION=${ETCD_VERSION#v} \
  KWOK_KUBECTL_BINARY=$(resolve kubectl) \
    kwokctl_ create cluster \
      --kube-apiserver-binary "$(resolve kube-apiserver)" \
      --kube-controller-manager-binary "$(resolve kube-controller-manager)" \
      --kube-scheduler-binary "$(resolve kube-scheduler)" \
      --etcd-binary "$(resolve etcd)" \
      --kwok-controller-binary "$(resolve kwok)" \
      --config "$OUT/kwok.yaml" \
      --kubeconfig "$KUBECONFIG_PATH" \
      --wait 120s \
      >"$OUT/create.log" 2>&1 \
    || { cat "$OUT/create.log" >&2; die "kwokctl create cluster failed (component logs: $KWOK_WORKDIR/clusters/$CLUSTER_NAME/logs)"; }
  wait_for "the API server" 60 healthy
  ensure_nodes "$real"
  [ "$real" = 0 ] || bash "$ROOT/hack/cluster/node.sh" up
  log "up in $((SECONDS - start))s (kubeconfig: $KUBECONFIG_PATH)"
}

stop_demo_operator() {
  [ -f "$DEMO_PIDFILE" ] || return 0
  local pid
  pid=$(cat "$DEMO_PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping the demo operator (pid $pid)"
    kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$DEMO_PIDFILE"
}

cmd_down() {
  stop_demo_operator
  bash "$ROOT/hack/cluster/metrics-server.sh" down
  bash "$ROOT/hack/cluster/node.sh" down
  if [ -d "$KWOK_WORKDIR/clusters/$CLUSTER_NAME" ]; then
    kwokctl_ delete cluster --kubeconfig "$KUBECONFIG_PATH" >/dev/null 2>&1 || true
    # Anything still running from this cluster's own binaries (kwokctl stops the pids it
    # recorded; a component restarted by someone else, e.g. the chaos tests, was left running).
    local bin="$KWOK_WORKDIR/clusters/$CLUSTER_NAME/bin/" pid
    for pid in $(pgrep -f "^$bin" || true); do
      log "stopping a leftover process of this cluster: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-120)"
      kill "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do pgrep -f "^$bin" >/dev/null || break; sleep 0.2; done
    pkill -9 -f "^$bin" 2>/dev/null || true
    rm -rf "${KWOK_WORKDIR:?}/clusters/$CLUSTER_NAME"
  fi
  rm -f "$KUBECONFIG_PATH"
  log "down"
}

cmd_status() {
  if ! healthy; then
    echo "cluster $CLUSTER_NAME: not running (start it with: make cluster-up)"
    return 1
  fi
  echo "cluster $CLUSTER_NAME: running; KUBECONFIG=$KUBECONFIG_PATH"
  kubectl_ version 2>/dev/null | sed 's/^/  /' || true
  kubectl_ get nodes -L nvidia.com/gpu.product
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  node-up) bash "$ROOT/hack/cluster/node.sh" up ;;
  node-down) bash "$ROOT/hack/cluster/node.sh" down ;;
  node-status) bash "$ROOT/hack/cluster/node.sh" status ;;
  load) shift; bash "$ROOT/hack/cluster/node.sh" load "$@" ;;
  metrics-up) bash "$ROOT/hack/cluster/metrics-server.sh" up ;;
  metrics-down) bash "$ROOT/hack/cluster/metrics-server.sh" down ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kubeconfig) echo "$KUBECONFIG_PATH" ;;
  demo-dir) echo "$DEMO_DIR" ;;
  kubectl) shift; kubectl_ "$@" ;;
  build) ensure_tools ;;
  *) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
