#!/usr/bin/env bash
# Build (once) and cache the local control plane's binaries from Go modules:
#   hack/cluster/build.sh [TOOL...]     (default: all of them)
# Each binary lands in ~/.cache/modelship/bin/<tool>-<version>/<tool>; one that
# is there already is not rebuilt, so a warm machine returns at once. Builds run
# one at a time under `nice` with -p 2: the machine has two cores shared with
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

build_one() {
  local tool=$1 out tmp
  out=$(tool_path "$tool")
  [ -x "$out" ] && return 0
  mkdir -p "$(dirname "$out")"
  tmp="$out.tmp.$$"
  local start=$SECONDS
  echo "cluster: building $tool -> $out" >&2
  case "$tool" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl)
      (cd "$here/k8s" && nice -n 10 go build -p "$jobs" -trimpath -ldflags "$(k8s_ldflags)" \
        -o "$tmp" "k8s.io/kubernetes/cmd/$tool") ;;
    etcd)
      (cd "$here/etcd" && nice -n 10 go build -p "$jobs" -trimpath -ldflags "-s -w" \
        -o "$tmp" go.etcd.io/etcd/server/v3) ;;
    kwok|kwokctl)
      # No replace directives in sigs.k8s.io/kwok, so plain `go install` works.
      local gobin="$out.gobin.$$"
      GOBIN=$gobin nice -n 10 go install -p "$jobs" -trimpath \
        -ldflags "-s -w" \
        "sigs.k8s.io/kwok/cmd/$tool@$KWOK_VERSION"
      mv "$gobin/$tool" "$tmp"; rmdir "$gobin" ;;
  esac
  mv "$tmp" "$out"
  echo "cluster: built $tool in $((SECONDS - start))s" >&2
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=("${ALL_TOOLS[@]}")
for t in "${tools[@]}"; do build_one "$t"; done
