#!/usr/bin/env bash
# Create (or reuse) the project virtualenv at .venv and install modelship with
# every extra. Idempotent: a stamp keyed by pyproject.toml's hash skips pip
# when nothing changed. pip's own cache (~/.cache/pip) keeps the large torch
# download from being paid twice on one machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
py=${PYTHON:-python3}
stamp="$venv/.modelship-stamp"
want=$(sha256sum "$root/pyproject.toml" | cut -c1-16)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip==25.3
"$venv/bin/python" -m pip install --quiet -e "$root[operator,server,kubectl,test]"
echo "$want" > "$stamp"
