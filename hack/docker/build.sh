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
#   REVISION       the org.opencontainers.image.revision label (default: git HEAD)
# When wheelhouse/<image>/ holds wheels the build runs with --network none: proof
# that nothing is downloaded inside it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
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
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
revision=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
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
"$docker" builder prune --force --keep-storage "${MODELSHIP_BUILD_CACHE_KEEP:-18GB}" >/dev/null
echo "build.sh: $tag built in $(( $(date +%s) - start ))s, $("$docker" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
