"""A small Keras model exported as a TensorFlow SavedModel, for the ``tfhub/`` adapter's offline tests
and the validator's offline suite. Runs under the TensorFlow converter environment's Python.

``python -m validation.keras_models build DIR`` writes the SavedModel (``model.export``: variables,
``saved_model.pb`` with the ``serve`` / ``serving_default`` signatures) of a seeded CNN (32x32x3
image -> 5 softmax scores) and prints ``{"dir", "files"}``. ``reference DIR --input NPY`` prints
TensorFlow's own output for an input array (the parity reference)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def build(dest: Path) -> dict:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5, activation="softmax", name="scores")(x)
    keras.Model(inp, out).export(str(dest), verbose=False)
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    return {"dir": str(dest), "files": files}


def reference(saved_model: Path, array: Path) -> dict:
    import numpy as np
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    out = fn(image=tf.constant(np.load(array)))
    return {k: v.numpy().tolist() for k, v in out.items()}


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"]:
        print(json.dumps(build(Path(sys.argv[2]))))
    elif sys.argv[1:2] == ["reference"]:
        print(json.dumps(reference(Path(sys.argv[2]), Path(sys.argv[sys.argv.index("--input") + 1]))))
    else:
        sys.exit("usage: python -m validation.keras_models build DIR | reference DIR --input NPY")
