"""A model made of several ONNX graphs: optimum's encoder-decoder export.

optimum writes a seq2seq model as ``encoder_model.onnx`` plus either ``decoder_model.onnx`` and
``decoder_with_past_model.onnx`` (the first decoder step, and every later one with the key/value
cache), or ``decoder_model_merged.onnx`` (both, behind an If on its ``use_cache_branch`` input), or
all of them. One layout is loaded; its graphs are named ``encoder``, ``decoder``,
``decoder_with_past`` or ``decoder_merged``. The generation loop over them is the task layer's
(``mlos_core.tasks.seq2seq``); here each graph is a plain tensor model, reachable as such through
``Model.graphs()``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import BadRequest, UnprocessableModel
from ..smi import Model, ModelMetadata

ENCODER, DECODER, DECODER_WITH_PAST, DECODER_MERGED = "encoder", "decoder", "decoder_with_past", "decoder_merged"
FILES = {ENCODER: "encoder_model.onnx", DECODER: "decoder_model.onnx",
         DECODER_WITH_PAST: "decoder_with_past_model.onnx", DECODER_MERGED: "decoder_model_merged.onnx"}


def seq2seq_graphs(directory: Path) -> dict[str, Path] | None:
    """The graph files a directory's seq2seq export is served from, or None when it holds none.

    The merged decoder wins when both layouts are present, as in optimum's ORTModelForSeq2SeqLM:
    its two branches share one copy of the weights, where the split pair holds two (T5-small:
    358 MB against 567 MB); benchmarks/test_seq2seq.py measures both layouts' speed."""
    d = Path(directory)
    present = {role: d / name for role, name in FILES.items() if (d / name).is_file()}
    if ENCODER not in present:
        return None
    if DECODER_MERGED in present:
        return {ENCODER: present[ENCODER], DECODER_MERGED: present[DECODER_MERGED]}
    if DECODER in present:
        return {r: present[r] for r in (ENCODER, DECODER, DECODER_WITH_PAST) if r in present}
    return None


class OnnxGraphSet(Model):
    """Several graphs served as one model. Its own tensor interface is empty: tensors go to one
    graph (``graphs()``), text to the task layer attached over it."""

    def __init__(self, graphs: Mapping[str, Model], directory: Path):
        self._graphs = dict(graphs)
        self.directory = Path(directory)
        layout = "merged" if DECODER_MERGED in self._graphs else "split"
        self.metadata = ModelMetadata(
            (), (), platform="onnxruntime_onnx", batchable=False,
            properties={"layout": f"encoder-decoder ({layout} decoder)", "graphs": list(self._graphs)})

    def graphs(self) -> Mapping[str, Model]:
        return self._graphs

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        raise BadRequest("this model is several ONNX graphs (" + ", ".join(self._graphs) + "): send tensors to "
                         "one graph, addressed as <model name>/<graph>, or text to its task")

    def memory_bytes(self) -> int:
        return sum(g.memory_bytes() for g in self._graphs.values())

    def unload(self) -> None:
        for g in self._graphs.values():
            g.unload()


def load_graph_set(directory: Path, open_graph: Callable[[Path], Model]) -> OnnxGraphSet:
    files = seq2seq_graphs(directory)
    if files is None:
        names = ", ".join(sorted(p.name for p in Path(directory).glob("*.onnx"))) or "none"
        raise UnprocessableModel(f"{directory}: not an encoder-decoder export (it needs encoder_model.onnx with "
                                 f"decoder_model.onnx or decoder_model_merged.onnx; ONNX files here: {names})")
    graphs: dict[str, Model] = {}
    try:
        for role, path in files.items():
            graphs[role] = open_graph(path)
    except BaseException:
        for g in graphs.values():
            g.unload()
        raise
    return OnnxGraphSet(graphs, directory)
