#!/usr/bin/env python3
"""Pack a static pause binary into an OCI image archive for `ctr images import`.

    pause_image.py PAUSE_BINARY IMAGE_NAME OUT.tar

The real node's containerd needs a sandbox ("pause") image and no registry serves one here.
The archive is reproducible: fixed mtimes, owners and JSON key order, so the same binary always
gives the same digests and `hack/cluster/node.sh` imports it once per digest. Standard library
only (it runs before any virtualenv exists).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile

LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
#: The upstream pause image's user: nobody needs to own anything inside a sandbox.
USER = "65535:65535"


def _tar(files: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, blob: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob), **extra}


def pack(binary: bytes, name: str) -> bytes:
    layer = _tar([("pause", binary, 0o755)])
    layer_desc = _descriptor(LAYER, layer)
    config = _json({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": USER},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    })
    manifest = _json({"schemaVersion": 2, "mediaType": MANIFEST,
                      "config": _descriptor(CONFIG, config), "layers": [layer_desc]})
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = _json({"schemaVersion": 2, "manifests": [_descriptor(MANIFEST, manifest, annotations={
        "io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag})]})
    blobs = [(f"blobs/sha256/{hashlib.sha256(b).hexdigest()}", b, 0o644) for b in (layer, config, manifest)]
    return _tar([("oci-layout", _json({"imageLayoutVersion": "1.0.0"}), 0o644), ("index.json", index, 0o644), *blobs])


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    with open(argv[1], "rb") as fh:
        archive = pack(fh.read(), argv[2])
    with open(argv[3], "wb") as fh:
        fh.write(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
