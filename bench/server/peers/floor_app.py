"""The raw floor: the same TorchScript model called inline from a bare ASGI callable (no
framework, no validation, no metrics, no batching), JSON through orjson. What one Python core
on uvicorn + uvloop + httptools can do; run by bench/server/run.py in its own venv."""

import os

import numpy as np
import orjson
import torch

torch.set_num_threads(1)
model = torch.jit.load(os.environ["BENCH_MODEL"]).eval()
HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send):
    if scope["type"] != "http":  # lifespan: accept and ignore
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "GET":  # /health
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": b'{"ready":true}'})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    rows = np.asarray(orjson.loads(body)["instances"], dtype=np.float32)
    with torch.inference_mode():
        out = model(torch.from_numpy(rows)).numpy()
    data = orjson.dumps({"predictions": out}, option=orjson.OPT_SERIALIZE_NUMPY)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": data})
