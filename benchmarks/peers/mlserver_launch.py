"""Start MLServer on a free port with the ONNX runtime above, wait until the model is ready,
then print the serving line and wait (SIGTERM stops MLServer too).

    <mlserver venv>/bin/python benchmarks/peers/mlserver_launch.py MODEL.onnx WORKDIR
"""
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    model, work = Path(sys.argv[1]), Path(sys.argv[2])
    repo = work / "repo"
    (repo / "resnet50").mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("mlserver_runtime.py"), repo / "resnet50" / "mlserver_runtime.py")
    port = free_port()
    (repo / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0, "debug": False}))
    (repo / "resnet50" / "model-settings.json").write_text(json.dumps({
        "name": "resnet50", "implementation": "mlserver_runtime.OnnxRuntime",
        "max_batch_size": 32, "max_batch_time": 0.0005, "parameters": {"uri": str(model)}}))
    mlserver = Path(sys.executable).with_name("mlserver")
    child = subprocess.Popen([str(mlserver), "start", str(repo)], cwd=repo)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return child.returncode or 1
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/resnet50/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.2)
    print(f"serving on http://127.0.0.1:{port}", flush=True)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
