#!/usr/bin/env bash
# Setup hook of the security checks (run by `make setup`): checkov, the Kubernetes manifest
# policy checker, in a venv of its own (~/.cache/modelship/tools/checkov-<version>/), keyed by
# version. Its own venv because its ~100 dependencies (boto3, networkx, ...) have nothing to do
# with the project's and must not pin anything in it. ~1 min cold, 0 s warm.
# (kube-linter was the other candidate: it is a Go module, but the Go module proxy does not
# serve golang.stackrox.io/kube-linter, so it cannot be built here.)
set -euo pipefail
CHECKOV_VERSION=${CHECKOV_VERSION:-3.3.30}
cache=${MODELSHIP_CACHE:-$HOME/.cache/modelship}
dest="$cache/tools/checkov-$CHECKOV_VERSION"
py=${PYTHON:-python3}
if [ -x "$dest/bin/checkov" ] && [ -f "$dest/.complete" ]; then
  exit 0
fi
mkdir -p "$cache/tools"
exec 8>"$cache/tools/.lock"
flock 8
if [ ! -f "$dest/.complete" ]; then
  echo "security: installing checkov $CHECKOV_VERSION into $dest"
  start=$(date +%s)
  rm -rf "$dest"
  "$py" -m venv "$dest"
  nice -n 10 "$dest/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  "$dest/bin/checkov" --version >/dev/null
  touch "$dest/.complete"
  echo "security: checkov installed in $(( $(date +%s) - start ))s ($(du -sh "$dest" | cut -f1))"
fi
