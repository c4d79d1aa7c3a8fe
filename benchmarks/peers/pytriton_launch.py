"""Serve an ONNX model on onnxruntime through Triton (the ``tritonserver`` binary that
nvidia-pytriton ships, Python backend), over HTTP and gRPC, then print the serving line and block.
A second model (``x`` [batch, 64] -> ``y``, the small-tensor MatMul) is served as "matmul" when given.

    <pytriton venv>/bin/python benchmarks/peers/pytriton_launch.py MODEL.onnx [MATMUL.onnx]
"""
import os
import signal
import socket
import sys
import time

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("PEER_INTRA_OP_THREADS", "0"))
    # the session options mlos-core uses: idle onnxruntime threads must not spin on 2 cores
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
    small = ort.InferenceSession(sys.argv[2], so, providers=["CPUExecutionProvider"]) if len(sys.argv) > 2 else None

    @batch
    def infer(pixel_values):
        return {"logits": session.run(None, {"pixel_values": pixel_values.astype(np.float32, copy=False)})[0]}

    @batch
    def infer_small(x):
        return {"y": small.run(None, {"x": x.astype(np.float32, copy=False)})[0]}

    port, grpc_port = free_port(), free_port()
    config = TritonConfig(http_address="127.0.0.1", http_port=port, grpc_address="127.0.0.1", grpc_port=grpc_port,
                          metrics_port=free_port(), allow_grpc=True, allow_metrics=False)
    # PyTriton restricts the shared-memory and repository APIs to holders of an access token;
    # the benchmark client reads it from the serving line
    security = TritonSecurityConfig()
    with Triton(config=config, security_config=security) as triton:
        triton.bind(model_name="resnet50", infer_func=infer,
                    inputs=[Tensor(name="pixel_values", dtype=np.float32, shape=(3, 224, 224))],
                    outputs=[Tensor(name="logits", dtype=np.float32, shape=(-1,))],
                    config=ModelConfig(max_batch_size=32, batcher=DynamicBatcher(max_queue_delay_microseconds=0)))
        if small is not None:
            triton.bind(model_name="matmul", infer_func=infer_small,
                        inputs=[Tensor(name="x", dtype=np.float32, shape=(64,))],
                        outputs=[Tensor(name="y", dtype=np.float32, shape=(64,))],
                        config=ModelConfig(max_batch_size=32, batcher=DynamicBatcher(max_queue_delay_microseconds=0)))
        triton.run()  # returns once the model is loaded and ready
        print(f"serving on http://127.0.0.1:{port} grpc=127.0.0.1:{grpc_port} token={security.access_token}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave the with: Triton stops
        while triton.is_alive():
            time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
