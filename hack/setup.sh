#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian machine, as root. Idempotent
# and cached: each step checks before it installs, expensive builds are cached
# under ~/.cache/modelship/ keyed by version.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Debian packages. Listed once here; each area appends what it needs.
# containerd, runc, iptables and the CNI plugins run the real node (hack/cluster/node.sh).
apt_packages=(docker.io debootstrap wrk containerd runc iptables containernetworking-plugins)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bash hack/python-env.sh

# Area setup hooks (control plane binaries, images' base, helm, ...): each
# hack/setup.d/*.sh is idempotent and cached.
for hook in hack/setup.d/*.sh; do
  [ -e "$hook" ] || continue
  echo "setup: $hook"
  bash "$hook"
done
