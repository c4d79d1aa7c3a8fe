"""What ``mlos-tune MODEL`` names: a path (a model file, a directory, an ``.axon`` package or
archive), one of the core's demo models by id, or a package installed by axon-py
(``hf/org/model@rev``), resolved to a path the experiments' cores register."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import TuneError


@dataclass(frozen=True)
class ModelRef:
    given: str
    path: Path            # what a core registers
    format: str           # onnx | gguf | safetensors (served on onnxruntime)
    model_id: str         # the id experiments (and --apply) register it under
    package_dir: Path | None = None   # an .axon package directory: --apply=manifest writes here

    @property
    def engine(self) -> str:
        """Which option family applies: SafeTensors models are served as ONNX."""
        return "gguf" if self.format == "gguf" else "onnx"


def _demo_paths() -> dict[str, callable]:
    from mlos_core import demo

    return {demo.DEMO_ID: demo.silero_vad_path, demo.EMBEDDING_ID: demo.minilm_dir, demo.CHAT_ID: demo.gemma_path}


def _default_id(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem if path.is_file() else path.name).strip("-.") or "model"
    return f"tune/{stem[:100]}@1"


def resolve_model(given: str, model_id: str | None, work: Path) -> ModelRef:
    from mlos_core.errors import MLOSError
    from mlos_core.registry import validate_model_id
    from mlos_core.sources import resolve

    path = Path(given).expanduser()
    if not path.exists():
        demos = _demo_paths()
        if given in demos:
            found = demos[given]()
            if found is None:
                raise TuneError(f"{given} is a demo model, but the package that carries it is not installed "
                                "(make setup installs it)")
            path, model_id = Path(found), model_id or given
        elif "/" in given and not given.startswith((".", "/", "~")):
            path = _installed(given)
            model_id = model_id or given
        else:
            raise TuneError(f"{given}: no such file or directory, and not a model id (a demo model: "
                            f"{', '.join(demos)}; or a package installed with axon-py: hf/org/model@rev)")
    path = path.resolve()
    try:
        source = resolve(path, work / "packages")
    except MLOSError as e:
        raise TuneError(f"{given}: {e.message}") from None
    model_id = model_id or _default_id(path)
    try:
        validate_model_id(model_id)
    except MLOSError as e:
        raise TuneError(f"--model-id: {e.message}") from None
    return ModelRef(given, path, source.format, model_id, source.package_dir if path.is_dir() else None)


def _installed(ref_text: str) -> Path:
    from axon_pkg.errors import AxonError
    from axon_pkg.refs import parse_ref
    from axon_pkg.store import Cache

    try:
        return Cache().resolve(parse_ref(ref_text)).path
    except AxonError as e:
        raise TuneError(f"{ref_text}: {e} (install it first: axon-py install {ref_text})") from None
