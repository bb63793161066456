#!/usr/bin/env bash
# The project virtualenv, .venv: every extra's pinned dependencies plus this checkout,
# installed editable. Idempotent.
#
# The dependencies (torch's CUDA build alone is ~5 GB) are installed ONCE per machine, in a
# shared venv ~/.cache/modelship/venv/py<ver>-<key> (key: the pinned requirement lists of
# pyproject.toml). A checkout's .venv is a thin venv (a few MB): a .pth file adds the shared
# site-packages, and only the editable install of this checkout lives in it. So CI clones
# that pile up on one disk do not each carry a torch install. The three most recently used
# shared venvs are kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
py=${PYTHON:-python3}
cache=${MODELSHIP_CACHE:-$HOME/.cache/modelship}

pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# What the shared venv holds: the pins of every extra and the build backend (the editable
# install below builds with it, without isolation).
reqs=$("$py" - "$root/pyproject.toml" <<'EOF'
import sys, tomllib
doc = tomllib.load(open(sys.argv[1], "rb"))
pins = {r for extra in doc["project"]["optional-dependencies"].values() for r in extra}
pins |= set(doc["build-system"]["requires"]) | set(doc["project"].get("dependencies", []))
print("\n".join(sorted(pins)))
EOF
)
key=$( (echo "$reqs"; echo "pip==25.3") | sha256sum | cut -c1-16)
shared="$cache/venv/py$pyver-$key"
site="lib/python$pyver/site-packages"
stamp="$venv/.modelship-stamp"
want="$key $(sha256sum "$root/pyproject.toml" | cut -c1-16)"

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && [ -f "$shared/.complete" ]; then
  touch "$shared/.complete"
  exit 0
fi

mkdir -p "$cache/venv"
# One installer at a time per machine (two CI clones may start together).
exec 8>"$cache/venv/.lock"
flock 8
if [ ! -f "$shared/.complete" ]; then
  echo "python-env: installing the pinned dependencies into $shared (once per machine)"
  start=$(date +%s)
  rm -rf "$shared"
  "$py" -m venv "$shared"
  "$shared/bin/python" -m pip install --quiet --upgrade pip==25.3
  reqfile=$(mktemp); echo "$reqs" >"$reqfile"
  "$shared/bin/python" -m pip install --quiet -r "$reqfile"
  rm -f "$reqfile"
  touch "$shared/.complete"
  echo "python-env: dependencies installed in $(( $(date +%s) - start ))s ($(du -sh "$shared" | cut -f1))"
fi
touch "$shared/.complete"
# Keep the three most recently used shared venvs.
ls -dt "$cache"/venv/py*-*/ 2>/dev/null | tail -n +4 | while read -r old; do
  [ "${old%/}" = "$shared" ] || rm -rf "$old"
done
flock -u 8

# The thin venv: no pip of its own (it uses the shared one through the .pth file).
if [ ! -x "$venv/bin/python" ] || [ -d "$venv/$site/torch" ]; then
  # (a .venv made by the old full install is replaced)
  rm -rf "$venv"
  "$py" -m venv --without-pip "$venv"
fi
rm -f "$venv/$site"/_modelship_shared*.pth
echo "import site; site.addsitedir('$shared/$site')" >"$venv/$site/_modelship_shared.pth"
# The dependencies' commands (pytest, hadolint, ruff, ...): Python scripts get this venv's
# interpreter (so they see the checkout), anything else is linked.
for f in "$shared"/bin/*; do
  name=$(basename "$f")
  case "$name" in python*|pip*|activate*|Activate*) continue ;; esac
  if head -c 64 "$f" | grep -q "^#!$shared/bin/python"; then
    { echo "#!$venv/bin/python"; tail -n +2 "$f"; } >"$venv/bin/$name"
    chmod +x "$venv/bin/$name"
  else
    ln -sf "$f" "$venv/bin/$name"
  fi
done
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root"
echo "$want" >"$stamp"
