# Versions of the local control plane (sourced by hack/cluster/*.sh).
# K8S_VERSION must match the require/replace lines in hack/cluster/k8s/go.mod,
# ETCD_VERSION the require in hack/cluster/etcd/go.mod.
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
# Add-ons of the node tier (hack/cluster/addons.sh), built by `make setup` like the rest:
# an S3-compatible server for s3:// model sources (minio tags no Go module releases: this
# pseudo-version is `go list -m github.com/minio/minio@latest` on the day it was pinned) and
# metrics-server, which the HorizontalPodAutoscaler controller reads pod CPU from.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
METRICS_SERVER_VERSION=v0.8.0
MODELSHIP_CACHE=${MODELSHIP_CACHE:-$HOME/.cache/modelship}
MODELSHIP_BIN=$MODELSHIP_CACHE/bin
# Go caches live beside the binaries so a CI run on the same machine is warm.
export GOMODCACHE=$MODELSHIP_CACHE/go/mod
export GOCACHE=$MODELSHIP_CACHE/go/build
export GOFLAGS=-modcacherw
export GOTOOLCHAIN=local
export CGO_ENABLED=0

# tool_path TOOL -> the cached binary's path (it may not exist yet).
tool_path() {
  case "$1" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet) echo "$MODELSHIP_BIN/$1-$K8S_VERSION/$1" ;;
    etcd) echo "$MODELSHIP_BIN/etcd-$ETCD_VERSION/etcd" ;;
    kwok|kwokctl) echo "$MODELSHIP_BIN/$1-$KWOK_VERSION/$1" ;;
    minio) echo "$MODELSHIP_BIN/minio-$MINIO_VERSION/minio" ;;
    metrics-server) echo "$MODELSHIP_BIN/metrics-server-$METRICS_SERVER_VERSION/metrics-server" ;;
    *) echo "unknown tool $1" >&2; return 1 ;;
  esac
}
# kubelet runs the real node (hack/cluster/node.sh); the rest make the control plane.
K8S_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
ALL_TOOLS=(etcd "${K8S_TOOLS[@]}" kwok kwokctl)
# Not needed to start a cluster: the node tier's add-ons (hack/cluster/addons.sh).
ADDON_TOOLS=(minio metrics-server)
