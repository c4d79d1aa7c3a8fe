"""The vision-sized model of the Open Inference Protocol benchmark: a ResNet-50 (transformers'
default ``ResNetConfig``, with ImageNet's 1,000 classes: 25.6 M parameters) with random weights, exported to ONNX with a dynamic batch axis and
cached under ``~/.cache/mlos-tests`` (about 100 MB; a minute to export on 2 cores).

    python -m benchmarks.vision_model     # builds it if missing, prints its path
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

CACHE = Path(os.environ.get("MLOS_TEST_CACHE", Path.home() / ".cache" / "mlos-tests"))
NAME = "resnet50-random-1000-v1.onnx"


def resnet50_path() -> Path:
    path = CACHE / NAME
    if path.exists():
        return path
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(num_labels=1000)).eval()  # ImageNet-sized head

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m(pixel_values=pixel_values).logits

    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.incomplete")
    torch.onnx.export(Logits(model), (torch.zeros(1, 3, 224, 224),), str(tmp), input_names=["pixel_values"],
                      output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    print(resnet50_path())
    sys.exit(0)
