"""Size report for the modelship images: what each image weighs against its floor.

    python hack/docker/size_report.py modelship-operator:dev modelship-server:dev

floor    = base image + the installed site-packages (what any image running this code
           must carry: an interpreter and the dependencies)
overhead = total - floor (venv scaffolding, our code, the user, layer duplication)
ratio    = total / floor (1.00 is a perfect image; a copy of the venv left in a
           second layer, or build tools in the runtime stage, shows up here)

The base image is read from the image's org.opencontainers.image.base.name label.
Sizes are Docker's (uncompressed, decimal MB). Also writes _out/images/size-report.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DOCKER = os.environ.get("MODELSHIP_DOCKER", "/usr/bin/docker")
ROOT = Path(__file__).resolve().parents[2]
# Apparent bytes of every file under site-packages, measured inside the image with
# the image's own Python (no du/find assumptions about the base).
_SITE_BYTES = (
    "import os, site\n"
    "total = 0\n"
    "for top in site.getsitepackages():\n"
    "    for folder, _, files in os.walk(top):\n"
    "        total += sum(os.lstat(os.path.join(folder, f)).st_size for f in files)\n"
    "print(total)\n"
)


def docker(*args: str) -> str:
    env = {**os.environ, "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///tmp/ms-docker.sock")}
    return subprocess.run([DOCKER, *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def measure(image: str) -> dict[str, object]:
    info = json.loads(docker("image", "inspect", image))[0]
    labels = info["Config"].get("Labels") or {}
    base = labels.get("org.opencontainers.image.base.name", "")
    if not base:
        raise SystemExit(f"size_report: {image} has no org.opencontainers.image.base.name label")
    base_bytes = int(docker("image", "inspect", "--format", "{{.Size}}", base))
    site_bytes = int(docker("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", _SITE_BYTES))
    total = int(info["Size"])
    floor = base_bytes + site_bytes
    return {
        "image": image,
        "base": base,
        "total_mb": round(total / 1e6, 1),
        "base_mb": round(base_bytes / 1e6, 1),
        "site_packages_mb": round(site_bytes / 1e6, 1),
        "floor_mb": round(floor / 1e6, 1),
        "overhead_mb": round((total - floor) / 1e6, 1),
        "ratio": round(total / floor, 3),
        "layers": len(info["RootFS"]["Layers"]),
    }


def main(images: list[str]) -> int:
    if not images:
        print(__doc__, file=sys.stderr)
        return 2
    rows = [measure(image) for image in images]
    header = f"{'image':<28} {'total MB':>9} {'base MB':>8} {'site-pkgs MB':>12} {'floor MB':>9} {'overhead MB':>11} {'ratio':>6}"
    print(header)
    for r in rows:
        print(f"{r['image']:<28} {r['total_mb']:>9} {r['base_mb']:>8} {r['site_packages_mb']:>12} "
              f"{r['floor_mb']:>9} {r['overhead_mb']:>11} {r['ratio']:>6.3f}")
    out = ROOT / "_out" / "images" / "size-report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
