"""The node tier's (and the demo's) models: each becomes one tag of ``modelship-models:TAG``,
the server image with the model baked in at /models (hack/docker/model-images.sh).

    python tests/node/node_models.py OUT_DIR     (run with PYTHONHASHSEED=0: see write_all)

| tag      | /models                                        | on the real node                      |
|----------|------------------------------------------------|---------------------------------------|
| v1, v2   | model.pt: the tiny MLP, seeds 1 and 2          | serves; v1 and v2 answer differently  |
| broken   | model.pt: bytes that are not a model           | load fails, server exits: CrashLoop   |
| slow     | v1's model.pt + slow_handler.py (sleeps)       | outlives the startup budget           |

Every tag's spec is the same apart from the image (slow adds ``format: handler``), so a
rollout is a change of tag, as users do it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch

TAGS = ("v1", "v2", "broken", "slow")
MODEL_PATH = "/models/model.pt"
INPUT_SHAPE = [-1, 4]
#: slow_handler's load takes this long: far past any startup budget the tests give it.
SLOW_LOAD_S = 600
SLOW_HANDLER = f'''"""A model whose load outlives the pod's startup budget (the node tier's "slow" tag)."""
import time

import torch


class Model:
    inputs = [{{"name": "input__0", "datatype": "FP32", "shape": {INPUT_SHAPE}}}]

    def load(self, path, device):
        time.sleep({SLOW_LOAD_S})
        self.net = torch.jit.load(path, map_location=device).eval()

    def predict(self, x):
        return self.net(x)
'''


class TinyMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return TinyMLP().eval()


def _save(module: torch.nn.Module, path: Path) -> None:
    meta = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": INPUT_SHAPE}]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still served
        torch.jit.save(torch.jit.script(module), str(path), _extra_files={"modelship.json": json.dumps(meta)})


def write_all(out: Path) -> None:
    """OUT/<tag>/models/... for every tag.

    TorchScript bytes depend on Python's hash seed, so the caller runs this with
    PYTHONHASHSEED=0: the same files every run give the same image layers, so docker's cache
    returns the same image IDs and the real node imports each image once per digest.
    """
    for tag in TAGS:
        (out / tag / "models").mkdir(parents=True, exist_ok=True)
    _save(mlp(1), out / "v1" / "models" / "model.pt")
    _save(mlp(2), out / "v2" / "models" / "model.pt")
    (out / "broken" / "models" / "model.pt").write_bytes(b"this is not a TorchScript archive\n")
    shutil.copy(out / "v1" / "models" / "model.pt", out / "slow" / "models" / "model.pt")
    (out / "slow" / "models" / "slow_handler.py").write_text(SLOW_HANDLER)
    for tag in TAGS:
        (out / tag / "Dockerfile").write_text("ARG SERVER_IMAGE\nFROM ${SERVER_IMAGE}\nCOPY models/ /models/\n")


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") != "0":
        sys.exit("run with PYTHONHASHSEED=0 (reproducible TorchScript bytes)")
    write_all(Path(sys.argv[1]))
