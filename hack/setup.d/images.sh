#!/usr/bin/env bash
# Setup hook of the images area (run by `make setup`): what the image tests need
# before any engine runs. Idempotent and cached:
#   - the debootstrapped base rootfs tarball (~/.cache/modelship/base/, keyed by version)
#   - wheelhouse/server and wheelhouse/operator (stamped by the pinned requirements)
# docker.io and debootstrap come from hack/setup.sh's apt list. dockerd itself is
# started and stopped by the image tests (tests/images/conftest.py).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bash hack/docker/base-image.sh tarball
bash hack/docker/wheelhouse.sh operator
bash hack/docker/wheelhouse.sh server
