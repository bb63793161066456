"""Virtual environments for the benchmark's peers, outside the repo, so their pins never touch
the project's ``.venv``: ``~/.cache/modelship/bench-venvs/<name>-<version>/``.

Each peer venv gets its own pinned packages from PyPI. torch is not downloaded again (the PyPI
wheel and its CUDA libraries are ~6 GB per venv): a ``.pth`` file appends a folder of symlinks
to the project venv's torch and torch's own dependencies, *after* the venv's site-packages,
so any package the peer pins itself wins. A venv is made once and reused while its stamp (the
pinned list) is unchanged.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("MODELSHIP_CACHE", Path.home() / ".cache" / "modelship")) / "bench-venvs"

TORCH_SHARED = (
    "torch", "torchgen", "functorch", "nvidia", "cuda", "triton", "sympy", "mpmath", "networkx",
    "filelock", "fsspec", "jinja2", "markupsafe", "typing_extensions.py", "isympy.py",
)
"""Top-level names linked from the project venv: torch and what ``import torch`` needs."""


@dataclass(frozen=True)
class Venv:
    name: str
    version: str
    requirements: tuple[str, ...]

    @property
    def path(self) -> Path:
        return CACHE / f"{self.name}-{self.version}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


VENVS = {
    # The floor uses the project's own pins for the pieces it shares with modelship.
    "floor": Venv(
        "floor", "1",
        ("uvicorn==0.54.0", "uvloop==0.23.0", "httptools==0.9.0", "orjson==3.13.0", "numpy==2.4.6"),
    ),
    "litserve": Venv("litserve", "0.2.19", ("litserve==0.2.19", "numpy==2.4.6")),
    "kserve": Venv("kserve", "0.21.0", ("kserve==0.21.0",)),
    "mlserver": Venv("mlserver", "1.7.1", ("mlserver==1.7.1",)),
    "tools": Venv("tools", "1", ("matplotlib==3.11.2", "py-spy==0.4.3")),
}


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    )
    return Path(out.stdout.strip())


def _torch_overlay() -> Path:
    """Symlinks to the project venv's torch (+ dist-info, which torch reads) in one folder.

    The folder torch is imported from, not this venv's own purelib: the checkout's ``.venv``
    only points (a ``.pth``) at the shared venv under ``~/.cache/modelship/venv/``.
    """
    import torch

    ours = Path(torch.__file__).resolve().parent.parent

    overlay = CACHE / f"torch-overlay-{torch.__version__}"
    overlay.mkdir(parents=True, exist_ok=True)
    for entry in ours.iterdir():
        stem = entry.name.split("-")[0].lower().replace("_", "-")
        wanted = {n.removesuffix(".py").replace("_", "-") for n in TORCH_SHARED}
        if entry.name in TORCH_SHARED or (entry.name.endswith(".dist-info") and (stem in wanted or stem.startswith(("nvidia", "cuda")))):
            link = overlay / entry.name
            if link.is_symlink() and not link.exists():
                link.unlink()  # the venv it pointed into is gone
            if not link.exists():
                link.symlink_to(entry)
    if not (overlay / "torch").exists():
        raise RuntimeError(f"no torch linked into {overlay} from {ours}")
    return overlay


def ensure(name: str, *, with_torch: bool = True) -> Venv:
    """Create (or reuse) the venv ``name`` and return it."""
    venv = VENVS[name]
    stamp = venv.path / ".bench-stamp"
    want = hashlib.sha256("\n".join(venv.requirements).encode()).hexdigest()[:16]
    if venv.python.exists() and stamp.exists() and stamp.read_text() == want:
        return venv
    print(f"bench: creating {venv.path} ({' '.join(venv.requirements)})", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv.path)], check=True)
    pip = [str(venv.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *venv.requirements], check=True)
    if with_torch:
        (_site_packages(venv.python) / "zz-modelship-bench-torch.pth").write_text(f"{_torch_overlay()}\n")
        subprocess.run([str(venv.python), "-c", "import torch, numpy"], check=True)
    stamp.write_text(want)
    return venv


if __name__ == "__main__":
    for key in sys.argv[1:] or list(VENVS):
        print(ensure(key, with_torch=key != "tools").path)
