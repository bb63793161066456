"""Print the pinned requirements of one pyproject extra, one per line.

Used twice with the same answer: on the host by hack/docker/wheelhouse.sh (what to
download) and inside the Dockerfiles' builder stage (what to install before the
code is copied, so the dependency layer is cached until pyproject.toml changes).
Standard library only: it runs on the bare base image's Python.

    python3 hack/docker/requirements.py pyproject.toml server > requirements.txt
"""

from __future__ import annotations

import sys
import tomllib


def extra_requirements(pyproject_path: str, extra: str) -> list[str]:
    with open(pyproject_path, "rb") as f:
        project = tomllib.load(f)["project"]
    extras = project.get("optional-dependencies", {})
    if extra not in extras:
        raise SystemExit(f"requirements.py: no extra {extra!r} in {pyproject_path} (have: {', '.join(sorted(extras))})")
    return list(project.get("dependencies", [])) + list(extras[extra])


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    for requirement in extra_requirements(argv[1], argv[2]):
        print(requirement)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
