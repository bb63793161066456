#!/usr/bin/env bash
# Build Helm from Go modules and cache it (no release downloads on this machine).
#
#   ~/.cache/modelship/bin/helm-<version>/helm     the binary (cache key = version)
#   ~/.cache/modelship/go/{mod,build}              GOMODCACHE / GOCACHE, shared with the other Go tools
#
# Idempotent: when the binary exists, reports the wanted version and was built with
# the flags below (stamp file), nothing runs.
# helm.sh/helm/v3's go.mod has no replace directives, so `go install ...@version`
# works directly (no wrapper module). v3.19.x is built against the Kubernetes
# v0.34 client libraries, matching the local control plane (Kubernetes v1.34).
# The build runs under `nice` because the machine is shared with the Kubernetes build.
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v3.19.5}
cache=${MODELSHIP_CACHE:-$HOME/.cache/modelship}
dest="$cache/bin/helm-$HELM_VERSION"
bin="$dest/helm"

# Same flags as Helm's own Makefile: the version, and the Kubernetes version that
# `helm template`/`helm lint` assume without a cluster (Capabilities.KubeVersion;
# unset it stays at v1.20.0, and charts with kubeVersion >= 1.25 refuse to render).
# Helm's Makefile derives it from its client-go module: v0.34.x -> 1.34.
K8S_MAJOR=1 K8S_MINOR=34
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in chartutil lint/rules; do
  ldflags+=" -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMajor=$K8S_MAJOR -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMinor=$K8S_MINOR"
done
stamp="$dest/.build-flags"

if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$ldflags" ] \
   && "$bin" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  exit 0
fi

# Go's official tarball installs to /usr/local/go, often not on a root shell's PATH.
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "helm.sh: Go toolchain not found (need go on PATH or in /usr/local/go)" >&2; exit 1; }
mkdir -p "$dest" "$cache/go/mod" "$cache/go/build"
start=$(date +%s)
echo "helm.sh: building helm $HELM_VERSION from Go modules (first run on a machine takes minutes)"
rm -rf "$dest.tmp"
GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOBIN="$dest.tmp" CGO_ENABLED=0 \
  nice -n 10 go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv "$dest.tmp/helm" "$bin"
rmdir "$dest.tmp"
echo "$ldflags" > "$stamp"
"$bin" version --short
echo "helm.sh: built in $(( $(date +%s) - start ))s -> $bin"
