#!/usr/bin/env bash
# metrics-server for the local control plane with a real node (hack/cluster.sh up --real-node):
# the resource metrics API (metrics.k8s.io) that `kubectl top` and the HorizontalPodAutoscaler
# read pod CPU and memory from, scraped from the real kubelet.
#
#   hack/cluster/metrics-server.sh up     build it if needed (Go modules, hack/cluster/build.sh),
#                                         start it, register it, wait until it serves the node
#   hack/cluster/metrics-server.sh down   unregister and stop it
#
# Why a host process behind an APIService, not a pod: the binary is static and runs as is (no
# image to build and import into the node), it reaches the kubelet and the API server on this
# host directly, and it takes no slot of the real node's pod network. The API server reaches it
# through the aggregation layer: an APIService -> a selector-less Service -> an Endpoints entry
# with the node's bridge address (an endpoint may not be loopback), dialled directly because
# the API server runs with --enable-aggregator-routing (hack/cluster/kwok.yaml; there is no
# kube-proxy). Local only: the APIService skips TLS verification of metrics-server's
# self-signed serving certificate, and metrics-server, which authenticates the aggregator's
# proxy client certificate against the cluster CA, serves the API server's admin identity.
#
# Network rule: metrics-server listens on the node's bridge address and dials only the real
# kubelet there (--node-selector: fake KWOK nodes, whose addresses lead nowhere, are skipped).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=versions.sh
source "$ROOT/hack/cluster/versions.sh"

CLUSTER_NAME=${MODELSHIP_CLUSTER_NAME:-modelship}
if [ "$CLUSTER_NAME" = modelship ]; then OUT=$ROOT/_out/cluster; else OUT=$ROOT/_out/cluster-$CLUSTER_NAME; fi
KUBECONFIG_PATH=$OUT/kubeconfig
PKI=$OUT/kwok/clusters/$CLUSTER_NAME/pki
NODE_NAME=${MODELSHIP_NODE_NAME:-real-node}
MS_OUT=$OUT/metrics-server
PIDFILE=$MS_OUT/pid
#: How often metrics-server scrapes the kubelet (its minimum is 10 s; the default, 60 s, would
#: make the HPA react a minute late).
RESOLUTION=${MODELSHIP_METRICS_RESOLUTION:-10s}

log() { echo "metrics-server: $*" >&2; }
die() { echo "metrics-server: ERROR: $*" >&2; exit 1; }
kubectl_() { "$(tool_path kubectl)" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

running() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

free_port() { python3 -c 'import socket, sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"; }

wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 1
  done
}

serves_the_node() { kubectl_ get --raw "/apis/metrics.k8s.io/v1beta1/nodes/$NODE_NAME" --request-timeout=5s; }
# Serving, or exited (then waiting longer is pointless: the loop ends and the log is shown).
serves_or_died() { serves_the_node || ! running; }

cmd_up() {
  [ -s "$KUBECONFIG_PATH" ] || die "cluster $CLUSTER_NAME is not running (hack/cluster.sh up --real-node)"
  local ip start=$SECONDS port bin
  ip=$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}' 2>/dev/null) \
    || die "no real node $NODE_NAME (hack/cluster.sh up --real-node)"
  [ -n "$ip" ] || die "node $NODE_NAME has no InternalIP"
  if running && serves_the_node >/dev/null 2>&1; then
    log "already running (pid $(cat "$PIDFILE"))"
    return 0
  fi
  bin=$(tool_path metrics-server)
  [ -x "$bin" ] || bash "$ROOT/hack/cluster/build.sh" metrics-server
  mkdir -p "$MS_OUT"
  if running; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; fi
  port=$(free_port "$ip")
  log "metrics-server $METRICS_SERVER_VERSION on $ip:$port, scraping node $NODE_NAME every $RESOLUTION"
  setsid "$bin" \
    --kubeconfig "$KUBECONFIG_PATH" \
    --authentication-kubeconfig "$KUBECONFIG_PATH" \
    --authorization-kubeconfig "$KUBECONFIG_PATH" \
    --client-ca-file "$PKI/ca.crt" \
    --bind-address "$ip" --secure-port "$port" --cert-dir "$MS_OUT/certs" \
    --kubelet-preferred-address-types InternalIP \
    --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
    --kubelet-insecure-tls --kubelet-use-node-status-port \
    --node-selector "kubernetes.io/hostname=$NODE_NAME" \
    --metric-resolution "$RESOLUTION" --kubelet-request-timeout 5s \
    </dev/null >>"$MS_OUT/metrics-server.log" 2>&1 &
  echo $! >"$PIDFILE"
  kubectl_ apply --server-side --field-manager=modelship-cluster -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system, labels: {app.kubernetes.io/name: metrics-server}}
spec:
  ports: [{name: https, port: 443, targetPort: $port, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {app.kubernetes.io/name: metrics-server, kubernetes.io/service-name: metrics-server}
addressType: IPv4
endpoints: [{addresses: ["$ip"], conditions: {ready: true}}]
ports: [{name: https, port: $port, protocol: TCP}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io, labels: {app.kubernetes.io/name: metrics-server}}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {name: metrics-server, namespace: kube-system, port: 443}
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
YAML
  if ! wait_for "metrics of node $NODE_NAME" 120 serves_or_died || ! running; then
    tail -20 "$MS_OUT/metrics-server.log" >&2
    kubectl_ get apiservice v1beta1.metrics.k8s.io -o jsonpath='{.status.conditions}' >&2 || true
    die "metrics-server does not serve node $NODE_NAME (log: $MS_OUT/metrics-server.log)"
  fi
  log "serving in $((SECONDS - start))s (log: $MS_OUT/metrics-server.log)"
}

cmd_down() {
  if [ -s "$KUBECONFIG_PATH" ] && kubectl_ get --raw /readyz --request-timeout=3s >/dev/null 2>&1; then
    kubectl_ delete apiservice v1beta1.metrics.k8s.io --ignore-not-found >/dev/null 2>&1 || true
    kubectl_ -n kube-system delete service,endpointslice metrics-server --ignore-not-found >/dev/null 2>&1 || true
  fi
  if running; then
    local pid
    pid=$(cat "$PIDFILE")
    kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
