"""The naive baseline: the aiohttp handler anyone would write first.

Parses the v2 JSON body with ``json``, builds inputs with ``np.asarray``, calls
``session.run`` in the loop's default executor, answers with ``web.json_response``. One
``InferenceSession`` per model with onnxruntime's default options, no batching, plain asyncio.
It serves the same path shape as mlos-core: ``POST /v2/models/{name}/infer``.

    python -m benchmarks.naive_server --port 0 --model bench/matmul@1=/abs/model.onnx

prints ``naive serving on http://127.0.0.1:PORT`` when up.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from urllib.parse import unquote

import numpy as np
import onnxruntime as ort
from aiohttp import web

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def make_app(models: dict[str, str]) -> web.Application:
    sessions = {name: ort.InferenceSession(path, providers=["CPUExecutionProvider"]) for name, path in models.items()}

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def infer(request: web.Request) -> web.Response:
        name = unquote(request.match_info["name"])
        session = sessions.get(name)
        if session is None:
            return web.json_response({"error": f"unknown model {name}"}, status=404)
        body = json.loads(await request.read())
        feed = {
            t["name"]: np.asarray(t["data"], dtype=_DTYPES[t["datatype"]]).reshape(t["shape"])
            for t in body["inputs"]
        }
        loop = asyncio.get_running_loop()
        values = await loop.run_in_executor(None, session.run, None, feed)
        outputs = [
            {"name": o.name, "datatype": _NAMES[v.dtype], "shape": list(v.shape), "data": v.ravel().tolist()}
            for o, v in zip(session.get_outputs(), values)
        ]
        return web.json_response({"model_name": name, "model_version": name.rsplit("@", 1)[-1], "outputs": outputs})

    app = web.Application()
    app.add_routes([web.get("/v2/health/live", live), web.post("/v2/models/{name:.+}/infer", infer)])
    return app


async def _serve(host: str, port: int, models: dict[str, str]) -> None:
    runner = web.AppRunner(make_app(models), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    print(f"naive serving on http://{host}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="naive aiohttp + onnxruntime baseline server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model", action="append", default=[], help="ID=PATH, repeatable")
    args = p.parse_args(argv)
    models = dict(m.split("=", 1) for m in args.model)
    try:
        asyncio.run(_serve(args.host, args.port, models))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
