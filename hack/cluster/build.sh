#!/usr/bin/env bash
# Build (once) and cache the local control plane's binaries from Go modules:
#   hack/cluster/build.sh [TOOL...]     (default: all of them)
# Each binary lands in ~/.cache/modelship/bin/<tool>-<version>/<tool>; one that
# is there already is not rebuilt, so a warm machine returns at once. Builds run
# under `nice` with -p 2: the machine has two cores shared with
# other work, and a full cold build takes minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
source "$here/versions.sh"
# A non-login shell (CI) may lack the Go toolchain's usual location on PATH.
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || export PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "cluster: 'go' is not on PATH; the control plane is built from Go modules" >&2; exit 1; }
jobs=${MODELSHIP_GO_JOBS:-2}

k8s_ldflags() {
  local v=${K8S_VERSION#v} major minor
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  local flags="-s -w" pkg
  # Without these the binaries say v0.0.0 and kwokctl picks flags for the wrong version.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

# install_built TOOL TMPFILE: move a fresh binary into its cache slot.
install_built() {
  local out
  out=$(tool_path "$1")
  mkdir -p "$(dirname "$out")"
  mv "$2" "$out"
}

# The Kubernetes binaries are built by ONE `go build` (one package graph: the shared
# dependencies compile once and the links run side by side), from the wrapper module.
build_k8s() {
  [ $# -gt 0 ] || return 0
  local start=$SECONDS tmp pkgs=() t
  tmp=$(mktemp -d "$MODELSHIP_BIN/.k8s-build.XXXXXX")
  for t in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$t"); done
  echo "cluster: building $* (Kubernetes $K8S_VERSION, one go build)" >&2
  (cd "$here/k8s" && nice -n 10 go build -p "$jobs" -trimpath -ldflags "$(k8s_ldflags)" -o "$tmp/" "${pkgs[@]}")
  for t in "$@"; do install_built "$t" "$tmp/$t"; done
  rmdir "$tmp"
  echo "cluster: built $* in $((SECONDS - start))s" >&2
}

build_etcd() {
  local start=$SECONDS tmp
  tmp=$(mktemp "$MODELSHIP_BIN/.etcd.XXXXXX")
  echo "cluster: building etcd $ETCD_VERSION" >&2
  (cd "$here/etcd" && nice -n 10 go build -p "$jobs" -trimpath -ldflags "-s -w" -o "$tmp" go.etcd.io/etcd/server/v3)
  install_built etcd "$tmp"
  echo "cluster: built etcd in $((SECONDS - start))s" >&2
}

# No replace directives in sigs.k8s.io/kwok, so plain `go install` works (both commands at once).
build_kwok() {
  [ $# -gt 0 ] || return 0
  local start=$SECONDS gobin pkgs=() t
  gobin=$(mktemp -d "$MODELSHIP_BIN/.kwok-build.XXXXXX")
  for t in "$@"; do pkgs+=("sigs.k8s.io/kwok/cmd/$t@$KWOK_VERSION"); done
  echo "cluster: building $* (kwok $KWOK_VERSION)" >&2
  GOBIN=$gobin nice -n 10 go install -p "$jobs" -trimpath -ldflags "-s -w" "${pkgs[@]}"
  for t in "$@"; do install_built "$t" "$gobin/$t"; done
  rmdir "$gobin"
  echo "cluster: built $* in $((SECONDS - start))s" >&2
}

# Add-ons: single `go install`s of published modules (no replace directives). Static
# (CGO_ENABLED=0, from versions.sh): they run FROM scratch images on the real node.
build_addon() {
  local t=$1 start=$SECONDS gobin pkg
  case "$t" in
    minio) pkg=github.com/minio/minio@$MINIO_VERSION ;;
    metrics-server) pkg=sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION ;;
  esac
  gobin=$(mktemp -d "$MODELSHIP_BIN/.$t-build.XXXXXX")
  echo "cluster: building $t (${pkg#*@})" >&2
  GOBIN=$gobin nice -n 10 go install -p "$jobs" -trimpath -ldflags "-s -w" "$pkg"
  install_built "$t" "$gobin/$t"
  rmdir "$gobin"
  echo "cluster: built $t in $((SECONDS - start))s" >&2
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=("${ALL_TOOLS[@]}")
mkdir -p "$MODELSHIP_BIN"
k8s=() kwok=() addons=() etcd=0
for t in "${tools[@]}"; do
  [ -x "$(tool_path "$t")" ] && continue
  case "$t" in
    etcd) etcd=1 ;;
    minio|metrics-server) addons+=("$t") ;;
    kwok|kwokctl) kwok+=("$t") ;;
    *) tool_path "$t" >/dev/null && k8s+=("$t") ;;
  esac
done
[ $etcd = 0 ] || build_etcd
build_k8s ${k8s[@]+"${k8s[@]}"}
build_kwok ${kwok[@]+"${kwok[@]}"}
for t in ${addons[@]+"${addons[@]}"}; do build_addon "$t"; done
