"""The comparison baseline: a minimal plain FastAPI + uvicorn app serving the same TorchScript
file the way most tutorials do (pydantic request model, sync endpoint in the threadpool,
``torch.tensor(list)`` in, ``.tolist()`` out). Run by bench/server/run.py, not a product.
``PLAIN_RANK`` is the rank of ``instances`` (2 for rows of numbers, 4 for images)."""

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel

torch.set_num_threads(1)
model = torch.jit.load(os.environ["PLAIN_MODEL"]).eval()
app = FastAPI()


Instances = float
for _ in range(int(os.environ.get("PLAIN_RANK", "2"))):
    Instances = list[Instances]


class PredictRequest(BaseModel):
    instances: Instances


@app.post("/v1/models/tiny:predict")
def predict(request: PredictRequest) -> dict:
    with torch.inference_mode():
        y = model(torch.tensor(request.instances))
    return {"predictions": y.tolist()}


@app.get("/health")
def health() -> dict:
    return {"ready": True}
