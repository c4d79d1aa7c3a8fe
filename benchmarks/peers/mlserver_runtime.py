"""An MLServer runtime serving an ONNX model on onnxruntime (copied into the model folder,
where MLServer imports it from)."""
import os

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(os.environ.get("PEER_INTRA_OP_THREADS", "0"))
        # the session options mlos-core uses: idle onnxruntime threads must not spin on 2 cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = ort.InferenceSession(self.settings.parameters.uri, so, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        (y,) = self._session.run(None, {self._input: x})
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("logits", y)])
