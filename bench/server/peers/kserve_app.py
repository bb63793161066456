"""KServe ModelServer peer: the same TorchScript file as a ``kserve.Model`` on the KServe v1
path, the way KServe's custom-model docs write it. Off, because no other server here does it
and it only costs the peer: gRPC (not measured), the per-request latency log, and KServe's
logging setup (its access log and timing trace print a line per request at INFO; with Python's
default WARNING level they print nothing). Run in its own venv."""

import os
import sys

# KServe parses its flags from sys.argv when imported.
sys.argv[1:] = ["--configure_logging", "false", "--enable_latency_logging", "false"]

import kserve  # noqa: E402
import torch  # noqa: E402


class TorchScriptModel(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        torch.set_num_threads(1)
        self.model = torch.jit.load(os.environ["BENCH_MODEL"]).eval()
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        x = torch.tensor(payload["instances"], dtype=torch.float32)
        with torch.inference_mode():
            y = self.model(x)
        return {"predictions": y.tolist()}


if __name__ == "__main__":
    server = kserve.ModelServer(
        http_port=int(os.environ["BENCH_PORT"]), enable_grpc=False, enable_latency_logging=False
    )
    server.start([TorchScriptModel("tiny")])
