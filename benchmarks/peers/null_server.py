"""The null system of the gRPC benchmark: aiohttp and grpc.aio on one uvloop event loop, as the
core runs them, each answering every infer request with a fixed, pre-encoded answer (a 1x64 FP32
tensor) and doing nothing else. What they cost per request is the floor of each transport in
Python, below any model or data plane.

    python -m benchmarks.peers.null_server
prints ``serving on http://127.0.0.1:<port> grpc=127.0.0.1:<port>`` and serves until killed.
"""
from __future__ import annotations

import asyncio
import json
import socket

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main() -> None:
    import grpc
    from aiohttp import web

    from mlos_core.grpc.protocol import pb

    y = np.zeros((1, 64), np.float32)
    response = pb.ModelInferResponse(model_name="matmul", model_version="1")
    response.outputs.add(name="y", datatype="FP32", shape=[1, 64])
    response.raw_output_contents.append(y.tobytes())
    grpc_answer = response.SerializeToString()
    head = json.dumps({"model_name": "matmul", "model_version": "1", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": y.nbytes}}]}).encode()
    http_answer = head + y.tobytes()

    async def infer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=http_answer, content_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(len(head))})

    app = web.Application(client_max_size=512 * 2**20)
    app.router.add_post("/v2/models/{name}/infer", infer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    http_port, grpc_port = _free_port(), _free_port()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()

    async def model_infer(request: bytes, context) -> bytes:
        return grpc_answer

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", -1)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)}),))
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    print(f"serving on http://127.0.0.1:{http_port} grpc=127.0.0.1:{grpc_port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    asyncio.run(main())
