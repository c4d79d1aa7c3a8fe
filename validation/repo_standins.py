"""The local repositories an offline validation run installs from, one per ``repository:`` of
models.yaml, each started on first use: the Hugging Face Hub (``hub_server``), PyTorch Hub
(``pytorch_hub_server``), Kaggle Models behind TF Hub handles (``kaggle_server``) and ModelScope
(``modelscope_server``); plus the environment that points axon-py at them, and the models that only
a converter environment can build (torchvision weights, a Keras SavedModel), cached like the tiny
transformers models.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .offline_models import CACHE_ROOT, SourceError, publish, repo_files

REPOSITORIES = {"hf": "huggingface", "pytorch": "pytorch", "tfhub": "tfhub", "modelscope": "modelscope"}
ROOT = Path(__file__).resolve().parent.parent


def repository_of(axon_id: str) -> str:
    from axon_pkg.refs import parse_ref

    return REPOSITORIES.get(parse_ref(axon_id).namespace, "huggingface")


def converter_run(kind: str, *args: str, env: dict | None = None) -> dict:
    """``python -m <args>`` in a converter environment (its last stdout line, JSON)."""
    from axon_pkg.converter_envs import ConverterMissing, python_for

    try:
        python = python_for(kind)
    except ConverterMissing as e:
        raise SourceError(f"{e.message} ({e.hint})") from None
    full = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    proc = subprocess.run([python, "-m", *args], capture_output=True, text=True, env=full, cwd=ROOT, timeout=900)
    if proc.returncode != 0:
        raise SourceError(f"{' '.join(args[:2])} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _built(kind: str, module: str, name: str) -> Path:
    """A model a converter environment builds, cached under CACHE_ROOT/<kind>/<name> (built once)."""
    target = CACHE_ROOT / kind / name
    if target.is_dir() and any(target.iterdir()):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        out = tmp / "model"
        converter_run(kind, module, "build", str(out))
        os.replace(out, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def torchvision_weights() -> Path:
    return next(_built("vision", "validation.torchvision_models", "mlos_test_squeezenet").glob("*.pth"))


def keras_saved_model() -> Path:
    return _built("tf", "validation.keras_models", "tiny_cnn")


class StandIns:
    def __init__(self):
        self.hf = self.pytorch = self.kaggle = self.modelscope = None

    def start_hf(self):
        if self.hf is None:
            from .hub_server import LocalHub

            self.hf = LocalHub().start()
        return self.hf

    def publish(self, spec) -> None:
        """Put the model's files where its ``repository`` serves them, under its axon_id."""
        from axon_pkg.refs import parse_ref

        if not spec.source:
            raise SourceError(f"{spec.name}: no 'source' in models.yaml, so the offline suite cannot serve it")
        ref = parse_ref(spec.axon_id)
        repo = spec.repository
        if repo == "huggingface":
            publish(self.start_hf(), spec)
        elif repo == "modelscope":
            from .modelscope_server import ModelScopeHub

            self.modelscope = self.modelscope or ModelScopeHub().start()
            self.modelscope.commit(ref.repo, repo_files(spec.source, spec.model_file))
        elif repo == "pytorch":
            from .pytorch_hub_server import PyTorchHub

            if spec.source != "torchvision:mlos_test_squeezenet":
                raise SourceError(f"{spec.name}: the offline PyTorch Hub serves torchvision:mlos_test_squeezenet only")
            self.pytorch = self.pytorch or PyTorchHub().start()
            self.pytorch.add_weights(torchvision_weights())
        elif repo == "tfhub":
            from .kaggle_server import KaggleModels

            if spec.source != "keras:tiny_cnn":
                raise SourceError(f"{spec.name}: the offline Kaggle Models serves keras:tiny_cnn only")
            self.kaggle = self.kaggle or KaggleModels().start()
            root = keras_saved_model()
            files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
            handle = "mlos-test/tiny-cnn/tensorFlow2/classification"
            self.kaggle.add_model(handle, 1, files)
            self.kaggle.add_tfhub_redirect(ref.repo, handle, 1)
        else:
            raise SourceError(f"{spec.name}: unknown repository {repo!r}")

    def env(self) -> dict:
        """Variables that point axon-py at the running stand-ins."""
        env: dict[str, str] = {}
        if self.hf is not None:
            env.update(HF_ENDPOINT=self.hf.url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_IMPLICIT_TOKEN="1")
        if self.pytorch is not None:
            env.update(AXON_PYTORCH_ENDPOINT=self.pytorch.url, AXON_GITHUB_ENDPOINT=self.pytorch.url,
                       AXON_TORCHVISION_MODULES="validation.torchvision_models",
                       MLOS_TEST_TORCHVISION_WEIGHTS=str(torchvision_weights()))
        if self.kaggle is not None:   # kagglehub as it is: kagglesdk's LOCALHOST, reached through the stand-in
            env.update(AXON_TFHUB_ENDPOINT=self.kaggle.url, KAGGLE_API_ENVIRONMENT="LOCALHOST",
                       HTTP_PROXY=self.kaggle.url, http_proxy=self.kaggle.url,
                       NO_PROXY="127.0.0.1,::1", no_proxy="127.0.0.1,::1")
        if self.modelscope is not None:
            env.update(MODELSCOPE_ENDPOINT=self.modelscope.url)
        return env

    def stop(self) -> None:
        for server in (self.hf, self.pytorch, self.kaggle, self.modelscope):
            if server is not None:
                server.stop()


def framework_outputs(source: str, inputs: dict) -> dict:
    """The framework's own answer for the arrays the core got (torchvision or TensorFlow, in its
    converter environment): the parity reference of the rows those repositories serve."""
    import numpy as np

    kind = source.split(":", 1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        (name, array), = inputs.items()
        path = Path(tmp) / "input.npy"
        np.save(path, array)
        if kind == "torchvision":
            out = converter_run("vision", "validation.torchvision_models", "reference", str(torchvision_weights()),
                                "--pixels", str(path))
        else:
            out = converter_run("tf", "validation.keras_models", "reference", str(keras_saved_model()),
                                "--input", str(path))
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items() if k in ("logits", "output_0")}
