"""A real torchvision architecture with random weights in the real file layout, for the
``pytorch/`` adapter's offline tests and the validator's offline suite. Runs under the vision
converter environment's Python (it imports torchvision).

``python -m validation.torchvision_models build DIR`` writes SqueezeNet 1.1 weights (3 classes,
seeded random values) saved as torchvision's files are (``torch.save`` of the state dict, named
``<name>-<first 8 hex of its sha256>.pth``) and prints ``{"file", "path", "sha256"}``.

Imported with ``MLOS_TEST_TORCHVISION_WEIGHTS=<that file>`` (``AXON_TORCHVISION_MODULES=
validation.torchvision_models`` makes axon's vision worker import it), it registers the model
``mlos_test_squeezenet`` in torchvision's registry with a weights enum whose URL names that file
on download.pytorch.org, with the transforms of torchvision's own classification weights.
The real enums' files cannot be had offline, and random weights cannot match their checksums.

``python -m validation.torchvision_models reference WEIGHTS --image PNG`` prints torchvision's
own answer for an image (its transforms, then the model): the parity reference of the tests;
``--pixels NPY`` instead of ``--image`` gives the model's logits for given pixel values.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any, Optional

MODEL = "mlos_test_squeezenet"
CATEGORIES = ["cat", "dog", "bird"]
UPSTREAM = "https://download.pytorch.org/models"


def build(dest: Path) -> dict:
    import torch
    from torchvision.models.squeezenet import SqueezeNet

    torch.manual_seed(0)
    net = SqueezeNet("1_1", num_classes=len(CATEGORIES))
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f"{MODEL}.pth.tmp"
    torch.save(net.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    final = dest / f"{MODEL}-{digest[:8]}.pth"
    os.replace(tmp, final)
    return {"file": final.name, "path": str(final), "sha256": digest}


def _register(weights_file: Path) -> None:
    from torchvision.models._api import Weights, WeightsEnum, register_model
    from torchvision.models.squeezenet import SqueezeNet
    from torchvision.transforms._presets import ImageClassification

    weights = WeightsEnum("MLOSTestSqueezeNetWeights", {"RANDOM_V1": Weights(
        url=f"{UPSTREAM}/{weights_file.name}",
        transforms=partial(ImageClassification, crop_size=224),
        meta={"categories": CATEGORIES, "num_params": 0, "min_size": (21, 21),
              "recipe": "random weights (seed 0), for offline tests",
              "_docs": "SqueezeNet 1.1 with random weights"})})
    weights.DEFAULT = weights.RANDOM_V1   # as torchvision's enums say which member is the default

    def builder(*, weights: Optional[Any] = None, progress: bool = True, **kwargs: Any) -> SqueezeNet:
        weights = enum.verify(weights)
        if weights is not None:
            kwargs["num_classes"] = len(weights.meta["categories"])
        net = SqueezeNet("1_1", **kwargs)
        if weights is not None:
            net.load_state_dict(weights.get_state_dict(progress=progress, check_hash=True))
        return net

    enum = weights
    builder.__annotations__["weights"] = Optional[enum]   # how torchvision finds a builder's enum
    builder.__name__ = MODEL
    register_model(MODEL)(builder)


def reference_tensor(weights_file: Path, array: Path) -> dict:
    """torchvision's model on given pixel values (an .npy of N x 3 x H x W)."""
    import numpy as np
    import torch
    from torchvision.models.squeezenet import SqueezeNet

    net = SqueezeNet("1_1", num_classes=len(CATEGORIES))
    net.load_state_dict(torch.load(str(weights_file), map_location="cpu", weights_only=True))
    with torch.no_grad():
        return {"logits": net.eval()(torch.from_numpy(np.load(array))).tolist()}


def reference(weights_file: Path, image: Path) -> dict:
    import torch
    from PIL import Image
    from torchvision.models.squeezenet import SqueezeNet
    from torchvision.transforms._presets import ImageClassification

    net = SqueezeNet("1_1", num_classes=len(CATEGORIES))
    net.load_state_dict(torch.load(str(weights_file), map_location="cpu", weights_only=True))
    net.eval()
    pixels = ImageClassification(crop_size=224)(Image.open(image).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        logits = net(pixels)
    return {"logits": logits[0].tolist(), "pixel_values": pixels.numpy().ravel()[:8].tolist(),
            "scores": torch.softmax(logits[0], 0).tolist()}


_env = os.environ.get("MLOS_TEST_TORCHVISION_WEIGHTS")
if _env and __name__ != "__main__":
    _register(Path(_env))


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"]:
        print(json.dumps(build(Path(sys.argv[2]))))
    elif sys.argv[1:2] == ["reference"] and "--pixels" in sys.argv:
        print(json.dumps(reference_tensor(Path(sys.argv[2]), Path(sys.argv[sys.argv.index("--pixels") + 1]))))
    elif sys.argv[1:2] == ["reference"]:
        print(json.dumps(reference(Path(sys.argv[2]), Path(sys.argv[sys.argv.index("--image") + 1]))))
    else:
        sys.exit("usage: python -m validation.torchvision_models build DIR | reference WEIGHTS --image PNG")
