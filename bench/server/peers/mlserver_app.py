"""MLServer peer: a custom runtime serving the same TorchScript file. MLServer speaks OIP v2
only, so the KServe v1 body arrives through a custom handler that turns it into a v2
InferenceRequest and calls the runtime's own (adaptively batched, when configured) predict:
MLServer's codecs and batcher are on the path, as for any MLServer request. run.py writes
settings.json/model-settings.json (one process: parallel_workers=0). Run in its own venv."""

import numpy as np
import torch
from fastapi import Request
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.context import model_context
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse


class TorchScriptRuntime(MLModel):
    async def load(self) -> bool:
        torch.set_num_threads(1)
        self._model = torch.jit.load(self.settings.parameters.uri).eval()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        with torch.inference_mode():
            y = self._model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("output__0", y)])

    @custom_handler(rest_path="/v1/models/tiny:predict")
    async def predict_v1(self, request: Request) -> dict:
        body = await request.json()
        rows = np.asarray(body["instances"], dtype=np.float32)
        request_v2 = InferenceRequest(inputs=[NumpyCodec.encode_input("input__0", rows)])
        with model_context(self.settings):  # what MLServer's own v2 route sets around predict
            response = await self.predict(request_v2)
        return {"predictions": NumpyCodec.decode_output(response.outputs[0]).tolist()}
