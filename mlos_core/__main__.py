"""``python -m mlos_core``: start the inference server."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from aiohttp import web

from . import __version__
from .config import ConfigError, load_settings
from .errors import MLOSError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlos_core", description="MLOS core inference server")
    p.add_argument("-p", "--port", "--http-port", dest="port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the server)")
    p.add_argument("-s", "--socket", dest="socket_path", help="Unix socket serving the same API (default <data-dir>/mlos.sock)")
    p.add_argument("-c", "--config", help="mlos-core.yaml (also MLOS_CONFIG)")
    p.add_argument("--no-http", dest="http_enabled", action="store_const", const=False, help="do not serve TCP")
    p.add_argument("--no-ipc", dest="ipc_enabled", action="store_const", const=False, help="do not serve the Unix socket")
    p.add_argument("--grpc-port", type=int, help="gRPC port of the Open Inference Protocol (default 8001; 0 picks a free one)")
    p.add_argument("--no-grpc", dest="grpc_enabled", action="store_const", const=False, help="do not serve gRPC")
    p.add_argument("--data-dir", help="registry and unpacked packages (default ~/.mlos)")
    p.add_argument("--models-dir", help="model repository scanned at start (default /var/lib/mlos/models)")
    p.add_argument("--load-on-start", choices=("lazy", "eager"), help="load registered models at start or on first use")
    p.add_argument("--memory-budget-mb", type=float, help="memory for loaded models; LRU eviction past it (0: none)")
    p.add_argument("--keep-alive", type=float, help="seconds an idle model stays loaded (-1 forever, 0 unload at once)")
    p.add_argument("--max-queue", type=int, help="per model: requests waiting or running before 503")
    p.add_argument("--max-batch-size", type=int, help="rows a dynamic batch may hold (1 disables batching)")
    p.add_argument("--max-batch-delay-us", type=int, help="how long a batch may wait to fill (default 0)")
    p.add_argument("--instances", type=int, help="concurrent executions per model (0: 1 when batching, else 2)")
    p.add_argument("--intra-op-threads", type=int, help="onnxruntime intra-op threads (0: one per core)")
    p.add_argument("--inference-priority", choices=("realtime", "high", "normal", "batch"),
                   help="scheduling class of inference threads, through /dev/mlos-ml or setpriority (default normal)")
    p.add_argument("--allow-client-shm", nargs="?", const="true", choices=("auto", "true", "false"),
                   help="let clients register system shared memory (default auto: only while bound to loopback)")
    p.add_argument("--max-request-mb", type=float, help="request body limit; larger bodies get 413")
    p.add_argument("--ray-address", help="serve on a Ray cluster: 'auto' or the head's HOST:PORT "
                   "(pip install .[ray]; docs/scaling-out.md)")
    p.add_argument("--register", action="append", type=_model_at, metavar="ID=PATH", default=[],
                   help="register (and load) this model at start; the server exits if it cannot "
                        "(repeatable; how a KServe ServingRuntime names /mnt/models: docs/kserve.md)")
    p.add_argument("--demo", action="store_const", const=True,
                   help="register the three demo models at start: Silero VAD (ONNX), all-MiniLM-L6-v2 (SafeTensors, "
                        "converted to ONNX once) and Gemma 3 270M (GGUF)")
    sec = p.add_argument_group("access control (see docs/security.md)")
    sec.add_argument("--api-key", dest="api_keys", action="append", metavar="KEY",
                     help="a key clients must send (Authorization: Bearer KEY); repeatable; also MLOS_API_KEY")
    sec.add_argument("--api-key-file", help="a file of keys, one per line")
    sec.add_argument("--api-key-header", help="a header that may carry the bare key (default x-api-key)")
    sec.add_argument("--public-health", action="store_const", const=True,
                     help="answer liveness and readiness without a key (for probes)")
    sec.add_argument("--public-metrics", action="store_const", const=True, help="answer /metrics without a key")
    sec.add_argument("--allow-unauthenticated", action="store_const", const=True,
                     help="serve a non-loopback address without a key (something in front authenticates)")
    sec.add_argument("--model-root", dest="model_roots", action="append", metavar="DIR",
                     help="a directory clients may register models from; repeatable (default: the models "
                          "directory, the data directory, axon-py's cache, and the home directory on loopback)")
    lim = p.add_argument_group("limits and timeouts (see docs/operations.md)")
    lim.add_argument("--request-timeout", type=float, help="seconds to receive a request body (default 60)")
    lim.add_argument("--idle-timeout", type=float,
                     help="seconds a connection may stay idle or half-sent before it is closed (default 30)")
    lim.add_argument("--max-connections", type=int, help="open client connections (default 1024)")
    lim.add_argument("--max-inflight", type=int, help="requests admitted at once, server-wide (default 1024)")
    lim.add_argument("--max-body-memory-mb", type=float, help="request bodies held at once, server-wide (default 512)")
    lim.add_argument("--json-inline-max-mb", type=float,
                     help="JSON bodies up to this size are parsed on the event loop, larger ones in a parser "
                          "process (default 1)")
    lim.add_argument("--drain-timeout", type=float,
                     help="seconds DELETE waits for running requests before cancelling them (default 5)")
    p.add_argument("--reset-registry", action="store_const", const=True,
                   help="if the registry file is unreadable, move it aside and start with an empty registry")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--version", action="version", version=f"mlos-core {__version__}")
    return p


def _model_at(value: str) -> tuple[str, str]:
    model_id, sep, path = value.partition("=")
    if not sep or not model_id or not path:
        raise argparse.ArgumentTypeError(f"expected ID=PATH (e.g. my-model=/mnt/models), not {value!r}")
    return model_id, path


async def _serve(settings, register: list[tuple[str, str]]) -> None:
    from .demo import register_demo
    from .http.app import FRONT_DOORS, create_app
    from .http.site import CappedTCPSite, quiet_protocol_errors
    from .registry import RegisterSpec

    async def on_started(plane) -> None:
        for model_id, path in register:  # an error here stops the server: it names the model
            await plane.register(RegisterSpec(model_id, path))
        if settings.demo:
            await register_demo(plane)

    quiet_protocol_errors()
    app = create_app(settings, on_started=on_started)
    # keepalive_timeout also closes a connection that never completes its first request
    # (aiohttp arms it when the connection opens): the idle and half-sent bound
    runner = web.AppRunner(app, access_log=None, handle_signals=True, keepalive_timeout=settings.idle_timeout)
    await runner.setup()
    try:  # whatever fails from here on, the models, the gRPC server and the registry are closed
        where = []
        if settings.http_enabled:
            site = CappedTCPSite(runner, settings.host, settings.port, max_connections=settings.max_connections)
            await site.start()
            where.append(f"http://{settings.host}:{site.port}")
        if app[FRONT_DOORS].grpc is not None:
            where.append(f"grpc://{settings.host}:{app[FRONT_DOORS].grpc.port}")
        if settings.ipc_enabled:
            settings.ipc_path.parent.mkdir(parents=True, exist_ok=True)
            if settings.ipc_path.is_socket():
                settings.ipc_path.unlink()
            await web.UnixSite(runner, str(settings.ipc_path)).start()
            os.chmod(settings.ipc_path, 0o600)
            where.append(f"unix:{settings.ipc_path}")
        if not where:
            raise ConfigError("--no-http, --no-grpc and --no-ipc given: nothing to serve on")
        print(f"mlos-core {__version__} serving on {', '.join(where)}", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "register") and v is not None}
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as e:
        print(f"mlos-core: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.umask(0o077)  # what the server writes (registry, packages, sockets, conversions) is its owner's alone
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(_serve(settings, args.register))
    except ConfigError as e:
        print(f"mlos-core: {e}", file=sys.stderr)
        return 2
    except MLOSError as e:
        print(f"mlos-core: cannot start: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"mlos-core: cannot serve: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, web.GracefulExit):  # Ctrl-C, or SIGTERM through aiohttp's handler
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
