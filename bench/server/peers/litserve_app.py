"""LitServe peer: the same TorchScript file behind a LitAPI on the KServe v1 path, the way
LitServe's docs write it. Batching on when BENCH_MAX_BATCH > 1. Run in its own venv."""

import os

import litserve as ls
import torch


class TorchScriptAPI(ls.LitAPI):
    def setup(self, device):
        torch.set_num_threads(1)
        self.model = torch.jit.load(os.environ["BENCH_MODEL"]).eval()

    def decode_request(self, request):
        return torch.tensor(request["instances"], dtype=torch.float32)

    def batch(self, inputs):
        return torch.cat(inputs)

    def predict(self, x):
        with torch.inference_mode():
            return self.model(x)

    def unbatch(self, output):
        return [row.unsqueeze(0) for row in output]

    def encode_response(self, output):
        return {"predictions": output.tolist()}


if __name__ == "__main__":
    batch = int(os.environ.get("BENCH_MAX_BATCH", "1"))
    api = TorchScriptAPI(
        max_batch_size=batch,
        batch_timeout=0.005 if batch > 1 else 0.0,
        api_path=os.environ.get("BENCH_PATH", "/v1/models/tiny:predict"),
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), log_level="warning",
               generate_client_file=False)
