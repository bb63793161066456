#!/usr/bin/env bash
# The server image with a model baked in, one tag per model (tests/node/node_models.py):
#   modelship-models:v1, :v2      the tiny MLP, two seeds (so a rollout changes the answers)
#   modelship-models:broken       a model file that does not load (the server exits)
#   modelship-models:slow         a model whose load outlives any startup budget
# Built FROM the server image (SERVER_IMAGE, default modelship-server:dev) on the private
# engine, with --network none. The model files are reproducible (PYTHONHASHSEED=0), so an
# unchanged server image gives unchanged image IDs and the real node imports nothing new.
#
#   hack/docker/model-images.sh [TAG...]     (default: all)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
eval "$(bash "$root/hack/docker/dockerd.sh" env)"
export DOCKER_HOST DOCKER_BUILDKIT
server=${SERVER_IMAGE:-modelship-server:${IMAGE_TAG:-dev}}
py=${PYTHON:-$root/.venv/bin/python}
models=$(mktemp -d)
trap 'rm -rf "$models"' EXIT
PYTHONHASHSEED=0 "$py" "$root/tests/node/node_models.py" "$models"
tags=("$@")
[ ${#tags[@]} -gt 0 ] || mapfile -t tags < <(ls "$models")
for tag in "${tags[@]}"; do
  [ -d "$models/$tag" ] || { echo "model-images: no model $tag (have: $(ls "$models" | tr '\n' ' '))" >&2; exit 2; }
  "$MODELSHIP_DOCKER" build --quiet --network none -t "modelship-models:$tag" \
    --build-arg "SERVER_IMAGE=$server" "$models/$tag" >/dev/null
  echo "model-images: modelship-models:$tag $("$MODELSHIP_DOCKER" image inspect --format '{{.Id}}' "modelship-models:$tag" | cut -c1-19)"
done
