#!/usr/bin/env bash
# Prepare wheelhouse/<extra>/ on the host: every wheel one image needs, so that
# `docker build` installs with `pip install --no-index --find-links` and needs no
# network at all (air-gapped builds; here, the build container also cannot trust
# the host's HTTPS proxy). Idempotent: a stamp keyed by the extra's pinned
# requirements, the build backend and the torch variant skips pip when nothing
# changed; pip's cache (~/.cache/pip) keeps a re-download cheap after a change.
#
#   hack/docker/wheelhouse.sh server|operator
#   TORCH_VARIANT=cpu hack/docker/wheelhouse.sh server   # wheels from download.pytorch.org/whl/cpu
#
# The wheels must match the image's interpreter (CPython 3.11, glibc x86_64), so
# pip runs under a Python 3.11 (the project venv by default).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
extra=${1:?usage: wheelhouse.sh server|operator}
variant=${TORCH_VARIANT:-pypi}
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3
out="$root/wheelhouse/$extra"

pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$pyver" != "3.11" ]; then
  echo "wheelhouse: $py is Python $pyver; the images run 3.11 — set PYTHON to a 3.11 interpreter" >&2
  exit 1
fi

reqs=$(mktemp); trap 'rm -f "$reqs"' EXIT
"$py" "$root/hack/docker/requirements.py" "$root/pyproject.toml" "$extra" > "$reqs"
# The build backend too: the Dockerfiles `pip install .` the project itself with
# build isolation, which needs setuptools and wheel from the same wheelhouse.
"$py" -c 'import tomllib,sys; print("\n".join(tomllib.load(open(sys.argv[1],"rb"))["build-system"]["requires"]))' \
  "$root/pyproject.toml" >> "$reqs"

index_args=()
if [ "$variant" != "pypi" ]; then
  index_args=(--extra-index-url "https://download.pytorch.org/whl/$variant")
fi
want=$( (cat "$reqs"; echo "variant=$variant"; echo "py=$pyver") | sha256sum | cut -c1-16)
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$want" ]; then
  echo "wheelhouse: $out up to date ($(du -sh "$out" | cut -f1))"
  exit 0
fi

# The wheels live once per machine under ~/.cache/modelship/wheelhouse/<extra>-<key>; the
# checkout's wheelhouse/<extra> (the docker build context needs the files inside it) is a
# tree of hard links to them, so a clone costs no disk for ~3 GB of wheels.
cache=${MODELSHIP_CACHE:-$HOME/.cache/modelship}/wheelhouse
shared="$cache/$extra-$want"
mkdir -p "$cache"
exec 8>"$cache/.lock"
flock 8
if [ ! -f "$shared/.stamp" ]; then
  echo "wheelhouse: pip wheel $extra (torch variant: $variant) -> $shared"
  start=$(date +%s)
  # `pip wheel` (not `pip download`) so that any sdist-only dependency is built into a
  # wheel here, where a compiler and the network are available. Wheels of the previous
  # set of this extra are found locally (no re-download of GBs of torch after a one-line
  # pyproject change).
  previous=$(ls -dt "$cache/$extra"-*/ 2>/dev/null | head -1 || true)
  new="$shared.new"
  rm -rf "$new"
  mkdir -p "$new"
  nice -n 10 "$py" -m pip wheel --quiet --wheel-dir "$new" ${previous:+--find-links "$previous"} \
    ${index_args[@]+"${index_args[@]}"} -r "$reqs"
  echo "$variant" > "$new/TORCH_VARIANT"
  echo "$want" > "$new/.stamp"
  mv "$new" "$shared"
  echo "wheelhouse: $extra done in $(( $(date +%s) - start ))s, $(ls "$shared"/*.whl | wc -l) wheels, $(du -sh "$shared" | cut -f1)"
fi
# Keep the two most recently made sets per extra.
touch "$shared"
ls -dt "$cache/$extra"-*/ 2>/dev/null | tail -n +3 | while read -r old; do rm -rf "$old"; done
flock -u 8
rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -al "$shared" "$out"
echo "wheelhouse: $out -> $shared (hard links)"
