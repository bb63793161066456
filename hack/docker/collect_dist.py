"""Copy every file one installed distribution owns into an overlay folder, same paths.

    python collect_dist.py modelship /overlay

The Dockerfiles install dependencies and the project in separate builder stages;
the runtime stage copies the dependency venv (GBs for torch, unchanged between
commits) and then this overlay (the project's package, its console script and
dist-info: kilobytes). A code change thus rebuilds a tiny layer instead of
re-copying the whole venv. Standard library only; paths come from the
distribution's RECORD, which pip fills in (compiled .pyc included).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import sysconfig
from importlib.metadata import Distribution, distributions
from pathlib import Path


def installed(dist_name: str) -> Distribution:
    """The copy in site-packages, not a build's egg-info next to the sources in CWD."""
    site = sysconfig.get_paths()["purelib"]
    found = list(distributions(name=dist_name, path=[site]))
    if not found:
        raise SystemExit(f"collect_dist.py: {dist_name!r} is not installed in {site}")
    return found[0]


def dangling_scripts(dist: Distribution) -> set[str]:
    """Console scripts whose package this image does not carry (one pyproject serves
    both images: the operator image has no modelship_server, and vice versa)."""
    return {
        ep.name for ep in dist.entry_points.select(group="console_scripts")
        if importlib.util.find_spec(ep.module.split(".")[0]) is None
    }


def collect(dist_name: str, overlay: Path) -> list[Path]:
    dist = installed(dist_name)
    skip = dangling_scripts(dist)
    copied = []
    for entry in dist.files or []:
        source = Path(entry.locate()).resolve()
        if not source.is_file():
            continue  # RECORD may name files pip did not write (e.g. an absent .pyc)
        if source.parent.name == "bin" and source.name in skip:
            continue
        target = overlay / source.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(source)
    if not copied:
        raise SystemExit(f"collect_dist.py: distribution {dist_name!r} has no installed files")
    return copied


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    files = collect(argv[1], Path(argv[2]))
    print(f"collect_dist.py: {len(files)} files of {argv[1]} -> {argv[2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
