#!/usr/bin/env bash
# `make setup` hook: build and cache the local control plane's binaries
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok,
# kwokctl) under ~/.cache/modelship/bin/<tool>-<version>/. Idempotent: a warm
# machine returns at once; a cold one builds from Go modules (minutes).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec bash "$root/hack/cluster.sh" build
