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
    p.add_argument("--no-grpc", action="store_true", help="accepted for compatibility; this core has no gRPC")
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
    p.add_argument("--demo", action="store_const", const=True, help="register the demo model (Silero VAD) at start")
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
    from .http.app import create_app
    from .registry import RegisterSpec

    async def on_started(plane) -> None:
        for model_id, path in register:  # an error here stops the server: it names the model
            await plane.register(RegisterSpec(model_id, path))
        if settings.demo:
            await register_demo(plane)

    app = create_app(settings, on_started=on_started)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    where = []
    if settings.http_enabled:
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1] if settings.port == 0 else settings.port
        where.append(f"http://{settings.host}:{port}")
    if settings.ipc_enabled:
        settings.ipc_path.parent.mkdir(parents=True, exist_ok=True)
        if settings.ipc_path.is_socket():
            settings.ipc_path.unlink()
        await web.UnixSite(runner, str(settings.ipc_path)).start()
        os.chmod(settings.ipc_path, 0o600)
        where.append(f"unix:{settings.ipc_path}")
    if not where:
        raise ConfigError("both --no-http and --no-ipc given: nothing to serve on")
    print(f"mlos-core {__version__} serving on {', '.join(where)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "no_grpc", "register") and v is not None}
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as e:
        print(f"mlos-core: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
