#!/usr/bin/env bash
# A real node for the local control plane: a kubelet (built from Go modules like the
# other binaries) on this host, as root, with a private containerd (Debian's package,
# CRI plugin) and a bridge network (Debian's containernetworking-plugins). It runs the
# project's real images; KWOK keeps managing only its fake nodes.
#
#   hack/cluster/node.sh up               start the node for the cluster named by
#                                         MODELSHIP_CLUSTER_NAME (the cluster must be up);
#                                         returns at once when it already runs
#   hack/cluster/node.sh down             stop it and leave nothing behind: no containers,
#                                         mounts, network namespaces, bridge, iptables
#                                         rules or cgroups of ours (images stay cached)
#   hack/cluster/node.sh status           kubelet, containerd, node condition, images
#   hack/cluster/node.sh load IMAGE...    import docker images (from the private dockerd,
#                                         hack/docker/dockerd.sh) into the node's
#                                         containerd, each only when its image ID changed
#   hack/cluster/node.sh ctr ARGS...      ctr against the node's containerd (namespace k8s.io)
#
# Host resources come in numbered SLOTS (up to $MAX_SLOTS nodes at once on one machine, one
# per cluster): slot N owns the bridge msbrN, pod CIDR 10.244.(200+N).0/24, cgroup root
# /modelship-node-N, iptables rules commented "modelship-node-N" and the containerd image
# store ~/.cache/modelship/node/slot-N/containerd, which survives `down` so an image is
# imported once per digest. A slot is held by a lock for the node's lifetime; a slot whose
# holder died (killed session) is cleaned up by the next `up` that takes it.
#
# Network rule: the node, kubelet and pods are reached only over loopback and the node's
# own bridge. The API server talks to the kubelet at the bridge address (the node's
# InternalIP; loopback node IPs are refused by the kubelet). Pods reach the API server
# through one DNAT rule: the `kubernetes` Service's ClusterIP 10.96.0.1:443 -> 127.0.0.1
# (route_localnet on the bridge), what kube-proxy would do for that one Service. Pod
# traffic to anything outside the bridge is dropped; pods get no DNS server; image pulls
# go to a loopback endpoint that refuses (no pull ever leaves the machine).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
here="$ROOT/hack/cluster"
# shellcheck source=versions.sh
source "$here/versions.sh"

CLUSTER_NAME=${MODELSHIP_CLUSTER_NAME:-modelship}
if [ "$CLUSTER_NAME" = modelship ]; then OUT=$ROOT/_out/cluster; else OUT=$ROOT/_out/cluster-$CLUSTER_NAME; fi
KUBECONFIG_PATH=$OUT/kubeconfig
PKI=$OUT/kwok/clusters/$CLUSTER_NAME/pki
NODE_OUT=$OUT/node
NODE_NAME=${MODELSHIP_NODE_NAME:-real-node}
SLOTS=$MODELSHIP_CACHE/node
MAX_SLOTS=${MODELSHIP_NODE_SLOTS:-4}
PAUSE_IMAGE=docker.io/library/modelship-pause:1
#: The first IP of the Service range (hack/cluster/kwok.yaml): the `kubernetes` Service.
API_SERVICE_IP=10.96.0.1
#: Image pulls go here and are refused (nothing listens on port 1 of loopback).
REFUSING_REGISTRY=http://127.0.0.1:1
CGROUP_FS=/sys/fs/cgroup
DOCKER=/usr/bin/docker

log() { echo "node: $*" >&2; }
die() { echo "node: ERROR: $*" >&2; exit 1; }

kubectl_() { "$(tool_path kubectl)" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
api_up() { [ -s "$KUBECONFIG_PATH" ] && kubectl_ get --raw /readyz --request-timeout=3s >/dev/null 2>&1; }

# Per-slot names. SLOT must be set.
slot_vars() {
  SLOT_DIR=$SLOTS/slot-$SLOT
  RUN=/run/modelship/node-$SLOT
  BRIDGE=msbr$SLOT
  SUBNET=10.244.$((200 + SLOT)).0/24
  GATEWAY=10.244.$((200 + SLOT)).1
  CGROUP=modelship-node-$SLOT
  TAG=modelship-node-$SLOT
  SOCK=$RUN/containerd.sock
}

ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

wait_for() {  # wait_for DESCRIPTION SECONDS CMD...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

preflight() {
  local missing=() b
  for b in containerd containerd-shim-runc-v2 runc ctr iptables ip gcc; do command -v "$b" >/dev/null || missing+=("$b"); done
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] || missing+=("containernetworking-plugins")
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run \`make setup\` (apt-get install containerd runc iptables containernetworking-plugins)"
  [ "$(id -u)" = 0 ] || die "the real node runs as root (kubelet, containerd, bridge, iptables)"
  [ -x "$(tool_path kubelet)" ] || bash "$here/build.sh" kubelet
  api_up || die "the cluster '$CLUSTER_NAME' is not running (hack/cluster.sh up first)"
}

# --- slot ownership -------------------------------------------------------------------

# Hold slot N's lock with a process that lives as long as the node: a `sleep` that
# inherited the locked file descriptor (it writes its pid only once it holds the lock).
# Returns 1 when the slot is taken. Nothing of a slot held by someone else is touched.
take_slot() {
  local n=$1 dir=$SLOTS/slot-$1 pid
  mkdir -p "$dir"
  slot_free "$n" || return 1
  nohup bash -c 'exec 9>"$1/lock"; flock -n 9 || exit 75; echo $$ > "$1/holder.pid.$$"; exec sleep infinity' _ "$dir" \
    </dev/null >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do
    if [ -s "$dir/holder.pid.$pid" ]; then
      mv "$dir/holder.pid.$pid" "$dir/holder.pid"
      echo "$OUT" > "$dir/owner"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  return 1
}

# The slot's lock is free (no live holder).
slot_free() { flock -n "$SLOTS/slot-$1/lock" true 2>/dev/null; }

acquire_slot() {
  local n
  for n in $(seq 0 $((MAX_SLOTS - 1))); do
    if take_slot "$n"; then SLOT=$n; return 0; fi
  done
  die "all $MAX_SLOTS node slots are in use (other clusters run real nodes: $(cat "$SLOTS"/slot-*/owner 2>/dev/null | tr '\n' ' '))"
}

release_slot() {
  local pid
  pid=$(cat "$SLOT_DIR/holder.pid" 2>/dev/null || true)
  [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
  rm -f "$SLOT_DIR/holder.pid" "$SLOT_DIR/owner"
}

# --- cleanup (used by down, and by up on a slot a dead node left behind) -----------------

stop_pid() {  # stop_pid PID SECONDS: TERM, wait, KILL
  local pid=$1 secs=$2
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + secs))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

# Every process started for this slot names $RUN on its command line (configs, socket).
slot_pids() { pgrep -f -- "$RUN/" || true; }

unmount_under() {  # unmount_under DIR...: deepest first, lazily
  local d m
  for d in "$@"; do
    [ -e "$d" ] || continue
    d=$(readlink -f "$d")
    findmnt -rn -o TARGET | awk -v d="$d" 'index($0, d) == 1' | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
  done
}

remove_iptables_rules() {
  local table rule
  for table in filter nat; do
    { iptables -t "$table" -S 2>/dev/null || true; } | { grep -F -- "--comment $TAG" || true; } | sed 's/^-A /-D /' \
      | while read -r rule; do eval "iptables -t $table $rule" 2>/dev/null || true; done
  done
}

remove_cgroups() {
  local h
  for h in "$CGROUP_FS"/*/; do
    [ -d "$h$CGROUP" ] || continue
    find "$h$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

clean_slot() {
  local pid
  # Containers first, through containerd while it still answers (kills the pods' processes).
  if [ -S "$SOCK" ] && ctr_ version >/dev/null 2>&1; then
    for pid in $(kubelet_pid); do stop_pid "$pid" 10; done
    ctr_ tasks ls -q 2>/dev/null | while read -r id; do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 0.5
    ctr_ tasks ls -q 2>/dev/null | while read -r id; do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
    ctr_ containers ls -q 2>/dev/null | while read -r id; do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  for pid in $(slot_pids); do stop_pid "$pid" 10; done
  # Shims and anything else that outlived containerd.
  for pid in $(slot_pids); do kill -9 "$pid" 2>/dev/null || true; done
  unmount_under "$RUN" "$SLOT_DIR/containerd"
  rm -rf "$RUN"
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
  # Host ends of pod veths whose namespace is gone vanish with it; any that a crashed run
  # left attached to nothing are removed by name pattern (CNI names them veth*; only ours
  # have our bridge as master, and that bridge is gone now).
  remove_iptables_rules
  remove_cgroups
}

# --- up ---------------------------------------------------------------------------------

write_containerd_config() {
  mkdir -p "$RUN/cni" "$RUN/certs.d/_default" "$SLOT_DIR/containerd"
  cat >"$RUN/certs.d/_default/hosts.toml" <<EOF
# Every registry resolves to a loopback port that refuses: an image that is not in the
# local store fails with a real ErrImagePull, and no pull leaves the machine.
server = "$REFUSING_REGISTRY"
[host."$REFUSING_REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$RUN/containerd.toml" <<EOF
version = 2
root = "$SLOT_DIR/containerd"
state = "$RUN/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This VM's root lacks CAP_SYS_RESOURCE: the negative oom_score_adj the kubelet asks for
  # the sandbox would fail inside runc ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$RUN/certs.d"
EOF
  cat >"$RUN/cni/10-modelship.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$TAG",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$SUBNET", "gateway": "$GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$RUN/ipam"
      }
    }
  ]
}
EOF
}

setup_network() {
  local api_port=$1
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$GATEWAY/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Let the DNAT below deliver pod traffic to the API server on 127.0.0.1.
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
  remove_iptables_rules
  iptables -t nat -I PREROUTING -i "$BRIDGE" -d "$API_SERVICE_IP/32" -p tcp --dport 443 \
    -m comment --comment "$TAG" -j DNAT --to-destination "127.0.0.1:$api_port"
  # Pods talk to each other and to this host's bridge address, nothing else (another
  # engine on this host may have turned ip_forward on).
  iptables -t filter -I FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment "$TAG" -j DROP
  iptables -t filter -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$TAG" -j ACCEPT
}

make_cgroups() {
  local h
  for h in "$CGROUP_FS"/*/; do
    case "$h" in */unified/) continue ;; esac
    mkdir -p "$h$CGROUP"
    if [ -e "$h$CGROUP/cpuset.cpus" ]; then
      cat "$h/cpuset.cpus" >"$h$CGROUP/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$CGROUP/cpuset.mems"
    fi
  done
}

start_containerd() {
  log "containerd $(containerd --version | awk '{print $3}') (slot $SLOT, store $SLOT_DIR/containerd)"
  setsid env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    containerd --config "$RUN/containerd.toml" </dev/null >>"$NODE_OUT/containerd.log" 2>&1 &
  wait_for "containerd" 30 ctr_ version || { tail -20 "$NODE_OUT/containerd.log" >&2; die "containerd did not answer on $SOCK"; }
}

pause_image() {
  local bin key tar
  # (contents only: sha256sum's output names the file, which differs between clones)
  key=$( (cat "$here/node/pause.c" "$here/node/pause_image.py"; echo "$PAUSE_IMAGE") | sha256sum | cut -c1-16)
  tar=$SLOTS/pause-$key.tar
  if [ ! -s "$tar" ]; then
    bin=$(mktemp)
    gcc -static -O2 -o "$bin" "$here/node/pause.c"
    python3 "$here/node/pause_image.py" "$bin" "$PAUSE_IMAGE" "$tar.tmp"
    mv "$tar.tmp" "$tar"
    rm -f "$bin"
  fi
  if ! ctr_ images ls -q "name==$PAUSE_IMAGE" | grep -q .; then
    ctr_ images import --base-name "${PAUSE_IMAGE%:*}" "$tar" >/dev/null
  fi
}

write_kubelet_config() {
  local port=$1 healthz=$2
  mkdir -p "$RUN/kubelet" "$NODE_OUT/pods"
  cp "$KUBECONFIG_PATH" "$RUN/kubelet/kubeconfig"
  : >"$RUN/kubelet/resolv.conf"
  cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Serves the API server (logs, exec, port-forward) on the node's bridge address only.
address: $GATEWAY
port: $port
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
readOnlyPort: 0
# Requests from the API server carry its kubelet client certificate (kwok's CA); it
# authorizes them with a SubjectAccessReview. No anonymous access.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$SOCK
imageServiceEndpoint: unix://$SOCK
# This machine mounts cgroup v1 (plus an empty cgroup2 "unified" mount): say so, or the
# kubelet refuses to start; cgroupfs because no systemd manages this host.
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: /$CGROUP
cgroupsPerQOS: true
enforceNodeAllocatable: []
failSwapOn: false
# Pods get no DNS server: every name a test uses resolves in /etc/hosts or not at all.
resolvConf: $RUN/kubelet/resolv.conf
podLogsDir: $NODE_OUT/pods
# The images are imported, not pulled: never garbage-collect them, and evict (which also
# deletes unused images: the test images, which nothing could pull again) only when the disk
# is really full. Absolute thresholds: on a disk shared with other work (CI clones, builds) a
# percentage of a large filesystem is many GB, and the default 10 % / 15 % tainted the node
# with disk-pressure while 20 GB were free, leaving every new pod Pending ("untolerated
# taint"). Once space is back the taint goes within the transition period (default 5 min).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 512Mi, imagefs.available: 512Mi, nodefs.inodesFree: "1%", imagefs.inodesFree: "1%"}
evictionPressureTransitionPeriod: 15s
serializeImagePulls: false
maxPods: 40
shutdownGracePeriod: 0s
EOF
}

start_kubelet() {
  local port healthz
  port=$(free_port); healthz=$(free_port)
  write_kubelet_config "$port" "$healthz"
  log "kubelet $K8S_VERSION as node $NODE_NAME ($GATEWAY:$port, pods on $SUBNET)"
  setsid "$(tool_path kubelet)" --config "$RUN/kubelet.yaml" --kubeconfig "$RUN/kubelet/kubeconfig" \
    --hostname-override "$NODE_NAME" --node-ip "$GATEWAY" \
    --root-dir "$RUN/kubelet/root" --cert-dir "$RUN/kubelet/pki" -v 2 \
    </dev/null >>"$NODE_OUT/kubelet.log" 2>&1 &
  echo "$healthz" >"$NODE_OUT/healthz-port"
  wait_for "kubelet healthz" 60 curl -fsS "http://127.0.0.1:$healthz/healthz" \
    || { tail -30 "$NODE_OUT/kubelet.log" >&2; die "the kubelet did not become healthy (log: $NODE_OUT/kubelet.log)"; }
}

node_ready() {
  [ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

kubelet_pid() { pgrep -f -- "--config $RUN/kubelet.yaml" | head -1; }
containerd_pid() { pgrep -f -- "containerd --config $RUN/containerd.toml" | head -1; }

# This cluster's node runs: its slot is held for this cluster, kubelet and containerd live.
node_running() {
  [ -s "$NODE_OUT/slot" ] || return 1
  SLOT=$(cat "$NODE_OUT/slot"); slot_vars
  [ "$(cat "$SLOT_DIR/owner" 2>/dev/null)" = "$OUT" ] && ! slot_free "$SLOT" \
    && [ -n "$(kubelet_pid)" ] && [ -n "$(containerd_pid)" ]
}

cmd_up() {
  local start=$SECONDS
  preflight
  if node_running && node_ready; then
    log "already running (node $NODE_NAME, slot $SLOT)"
    return 0
  fi
  # Parts of an earlier node of this cluster (a process died): take it down first.
  [ ! -s "$NODE_OUT/slot" ] || cmd_down >/dev/null 2>&1 || true
  mkdir -p "$NODE_OUT" "$SLOTS"
  acquire_slot
  slot_vars
  echo "$SLOT" >"$NODE_OUT/slot"
  clean_slot
  local api_port
  api_port=$(kubectl_ config view --minify -o jsonpath='{.clusters[0].cluster.server}' | sed 's/.*://')
  write_containerd_config
  setup_network "$api_port"
  make_cgroups
  start_containerd
  pause_image
  start_kubelet
  if ! wait_for "node $NODE_NAME Ready" 90 node_ready; then
    tail -30 "$NODE_OUT/kubelet.log" >&2
    die "node $NODE_NAME did not become Ready (log: $NODE_OUT/kubelet.log)"
  fi
  log "node $NODE_NAME Ready in $((SECONDS - start))s (slot $SLOT; logs in $NODE_OUT)"
}

cmd_down() {
  if [ ! -s "$NODE_OUT/slot" ]; then
    log "no real node for cluster $CLUSTER_NAME"
    return 0
  fi
  SLOT=$(cat "$NODE_OUT/slot"); slot_vars
  if [ "$(cat "$SLOT_DIR/owner" 2>/dev/null)" != "$OUT" ] && ! slot_free "$SLOT"; then
    log "slot $SLOT now belongs to $(cat "$SLOT_DIR/owner"); leaving it alone"
    rm -f "$NODE_OUT/slot"
    return 0
  fi
  # Give the kubelet a chance to stop the pods itself (graceful, with CNI teardown).
  if api_up && [ -n "$(kubelet_pid)" ]; then
    kubectl_ delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
      --grace-period=1 --wait=false >/dev/null 2>&1 || true
    wait_for "pods gone" 20 bash -c "[ -z \"\$(ctr --address '$SOCK' --namespace k8s.io tasks ls -q)\" ]" || true
  fi
  clean_slot
  if api_up; then kubectl_ delete node "$NODE_NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true; fi
  release_slot
  rm -f "$NODE_OUT/slot"
  log "down (slot $SLOT released; images stay in $SLOT_DIR/containerd)"
}

cmd_status() {
  if ! node_running; then
    echo "real node: not running (hack/cluster.sh up --real-node)"
    return 1
  fi
  echo "real node $NODE_NAME: slot $SLOT, bridge $BRIDGE $SUBNET, containerd $SOCK"
  kubectl_ get node "$NODE_NAME" -o wide 2>/dev/null || true
  echo "images:"; ctr_ images ls -q 2>/dev/null | grep -v '^sha256:' | sed 's/^/  /'
}

# load IMAGE...: docker save | ctr import, skipping images whose docker image ID the node
# already has (recorded as a label on the containerd image). One `docker save` carries all
# the images that need it, so layers they share are streamed once.
cmd_load() {
  [ $# -gt 0 ] || die "usage: node.sh load IMAGE..."
  node_running || die "the real node is not running (hack/cluster.sh up --real-node)"
  # The sandbox image too: containerd 1.6 does not pin it, so a kubelet reclaiming disk under
  # pressure deletes it, and every later pod fails to start ("failed to get sandbox image").
  pause_image
  eval "$(bash "$ROOT/hack/docker/dockerd.sh" env)"
  export DOCKER_HOST
  local todo=() image id ref have start=$SECONDS
  for image in "$@"; do
    id=$("$DOCKER" image inspect --format '{{.Id}}' "$image") || die "docker has no image $image"
    ref=$(ref_of "$image")
    have=$(ctr_ images ls "name==$ref" 2>/dev/null | awk 'NR>1 {print $NF}' | tr ',' '\n' | sed -n 's/^modelship.io\/docker-id=//p')
    if [ "$have" = "$id" ]; then continue; fi
    todo+=("$image")
  done
  if [ ${#todo[@]} -eq 0 ]; then
    log "images already on the node: $*"
    return 0
  fi
  log "importing ${todo[*]} (docker save | ctr import)"
  # ctr unpacks each image into the CRI's snapshotter as it imports it, so the first pod
  # start does not pay for it inside its startup budget.
  "$DOCKER" save "${todo[@]}" | ctr_ images import - >/dev/null
  local refs=()
  for image in "${todo[@]}"; do
    id=$("$DOCKER" image inspect --format '{{.Id}}' "$image")
    ref=$(ref_of "$image")
    ctr_ images label "$ref" "modelship.io/docker-id=$id" >/dev/null
    refs+=("$ref")
  done
  discard_layer_blobs "${refs[@]}"
  log "imported ${#todo[@]} image(s) in $((SECONDS - start))s"
}

# The unpacked snapshots are what containers run from; the layer blobs beside them are a
# second copy (~6 GB for the server image). Unhook them from the images' manifests (the GC
# labels) and delete them, as containerd's own discard_unpacked_layers does for pulls.
discard_layer_blobs() {
  local ref manifest labels layers=()
  for ref in "$@"; do
    manifest=$(ctr_ images ls "name==$ref" | awk 'NR==2 {print $3}')
    labels=$(ctr_ content ls | awk -v m="$manifest" '$1 == m {print $NF}' | tr ',' '\n' \
      | grep '^containerd.io/gc.ref.content.l\.' || true)
    [ -n "$labels" ] || continue
    # shellcheck disable=SC2046 # one argument per label
    ctr_ content label "$manifest" $(echo "$labels" | cut -d= -f1 | sed 's/$/=/') >/dev/null
    layers+=($(echo "$labels" | cut -d= -f2))
  done
  [ ${#layers[@]} -eq 0 ] || ctr_ content rm $(printf '%s\n' "${layers[@]}" | sort -u) >/dev/null 2>&1 || true
}

# ref_of IMAGE: the name containerd gives a docker image (docker.io/library/ for bare names).
ref_of() {
  local image=$1 first=${1%%/*}
  if [ "$first" = "$image" ]; then echo "docker.io/library/$image"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then echo "docker.io/$image"
  else echo "$image"; fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  load) shift; cmd_load "$@" ;;
  ctr) shift; node_running || die "the real node is not running"; ctr_ "$@" ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
