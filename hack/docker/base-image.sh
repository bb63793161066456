#!/usr/bin/env bash
# A local stand-in for python:3.11-slim-bookworm, for machines that cannot pull
# images: Debian bookworm minbase + python3 (3.11) + python3-venv + CA certs,
# made with debootstrap and imported into the engine as modelship-base:bookworm.
# The Dockerfiles keep `ARG BASE_IMAGE=python:3.11-slim-bookworm` for real users;
# tests and `make images` pass this one.
#
#   hack/docker/base-image.sh tarball   # debootstrap once, cached under ~/.cache/modelship/base/
#   hack/docker/base-image.sh import    # tarball + `docker import` if the image is missing
#
# The tarball is keyed by BASE_VERSION: bump it when the package list changes,
# and a warm run skips debootstrap (about 40 s and 280 MB) entirely.
set -euo pipefail
BASE_VERSION=2
suite=bookworm
packages=python3,python3-venv,ca-certificates
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
image=${MODELSHIP_BASE_IMAGE:-modelship-base:bookworm}
cache="$HOME/.cache/modelship/base"
tarball="$cache/$suite-minbase-v$BASE_VERSION.tar"
docker=${MODELSHIP_DOCKER:-/usr/bin/docker}

make_tarball() {
  if [ -s "$tarball" ]; then echo "base-image: cached $tarball"; return; fi
  command -v debootstrap >/dev/null || { echo "base-image: debootstrap missing (make setup installs it)" >&2; exit 1; }
  mkdir -p "$cache"
  local rootfs; rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  echo "base-image: debootstrap $suite ($packages) ..."
  local start; start=$(date +%s)
  nice -n 10 debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
    > "$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log" >&2; rm -rf "$rootfs"; exit 1; }
  # What an image needs no copy of: apt lists and caches, docs, man pages and
  # message catalogs (33 MB; C.UTF-8 is built into glibc). The official slim
  # images make the same cuts.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
         "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
  echo "base-image: $tarball ($(du -sh "$tarball" | cut -f1)) in $(( $(date +%s) - start ))s"
}

import_image() {
  local want="$suite-minbase-v$BASE_VERSION"
  if [ "$("$docker" image inspect --format '{{index .Config.Labels "io.modelship.base"}}' "$image" 2>/dev/null)" = "$want" ]; then
    echo "base-image: $image present ($want)"; return
  fi
  make_tarball
  "$docker" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL io.modelship.base=$want" \
    "$tarball" "$image" >/dev/null
  echo "base-image: imported $image"
}

case "${1:-import}" in
  tarball) make_tarball ;;
  import) import_image ;;
  *) echo "usage: $0 tarball|import" >&2; exit 2 ;;
esac
