#!/usr/bin/env bash
# `make setup` hook: build and cache MinIO (the S3-compatible server the server and node
# tiers start for s3:// model sources) from Go modules, under ~/.cache/modelship/bin/.
# Idempotent: a warm machine returns at once.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec bash "$root/hack/cluster/build.sh" minio
