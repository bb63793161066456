#!/usr/bin/env bash
# Build one modelship image with the flags every caller (make, the image tests)
# should agree on. Needs a running engine (hack/docker/dockerd.sh start).
#
#   hack/docker/build.sh server|operator [extra docker build args...]
#
# Environment:
#   BASE_IMAGE     default modelship-base:bookworm (the local debootstrapped base,
#                  made on demand); python:3.11-slim-bookworm for the official one
#   IMAGE_TAG      default dev  → modelship-server:dev / modelship-operator:dev
#   TORCH_VARIANT  passed to Dockerfile.server (only used without a wheelhouse)
#   REVISION       the org.opencontainers.image.revision label (default: the last commit
#                  that changed the image's inputs, "-dirty" when they have uncommitted
#                  changes: a commit that leaves the image's sources alone gives the same
#                  image ID, so the real node does not import it again)
# When wheelhouse/<image>/ holds wheels the build runs with --network none: proof
# that nothing is downloaded inside it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# input_revision server|operator: the last commit that changed what goes into the image (its
# Dockerfile and .dockerignore, the package metadata, its code, the helpers the Dockerfile
# copies), "-dirty" when any of that has uncommitted changes.
input_revision() {
  local inputs=("Dockerfile.$1" "Dockerfile.$1.dockerignore" pyproject.toml README.md "$1/"
                hack/docker/requirements.py hack/docker/collect_dist.py hack/docker/healthcheck.py)
  local rev
  rev=$(git log -1 --format=%H -- "${inputs[@]}" 2>/dev/null) || { echo unknown; return; }
  [ -z "$(git status --porcelain -- "${inputs[@]}")" ] || rev="$rev-dirty"
  echo "${rev:-unknown}"
}
if [ "${1:-}" = --revision ]; then  # build.sh --revision IMAGE: the label a build now carries
  input_revision "${2:?usage: build.sh --revision server|operator}"
  exit 0
fi
what=${1:?usage: build.sh server|operator [docker build args]}; shift
case "$what" in server|operator) ;; *) echo "build.sh: unknown image $what" >&2; exit 2 ;; esac
eval "$(bash hack/docker/dockerd.sh env)"
export DOCKER_HOST DOCKER_BUILDKIT
docker=$MODELSHIP_DOCKER
base=${BASE_IMAGE:-modelship-base:bookworm}
tag="modelship-$what:${IMAGE_TAG:-dev}"
if [ "$base" = "modelship-base:bookworm" ]; then
  bash hack/docker/base-image.sh import
fi
# The wheels this image installs, for the current pins (a no-op when its stamp matches).
bash hack/docker/wheelhouse.sh "$what"
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
revision=${REVISION:-$(input_revision "$what")}
network=()
if ls "wheelhouse/$what/"*.whl >/dev/null 2>&1; then
  network=(--network none)
fi
cmd=("$docker" build --progress=plain -f "Dockerfile.$what" -t "$tag"
  --build-arg "BASE_IMAGE=$base"
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision"
  ${TORCH_VARIANT:+--build-arg "TORCH_VARIANT=$TORCH_VARIANT"}
  ${network[@]+"${network[@]}"} "$@" .)
echo "build.sh: ${cmd[*]}"
start=$(date +%s)
nice -n 10 "${cmd[@]}"
# Bound the engine's disk use: every torch change leaves a multi-GB venv behind.
# Dangling images go; the build cache keeps its most recently used layers (the
# current deps, venv and context: about 15 GB for both images).
"$docker" image prune --force >/dev/null
"$docker" builder prune --force --keep-storage "${MODELSHIP_BUILD_CACHE_KEEP:-10GB}" >/dev/null
echo "build.sh: $tag built in $(( $(date +%s) - start ))s, $("$docker" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
