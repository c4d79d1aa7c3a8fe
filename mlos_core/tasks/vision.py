"""Image classification over an ONNX tensor model, preprocessing as preprocessor_config.json
prescribes (the transformers image processors' resize / center-crop / rescale / normalise)."""
from __future__ import annotations

import io
import warnings
from typing import Any, Mapping

import numpy as np

from ..errors import BadRequest, UnprocessableModel
from ..smi import Model
from .text import _sigmoid, _softmax, labels_of

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000

_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]


def _pil():
    from PIL import Image

    return Image


def decode_image(data: bytes):
    """Bytes -> an RGB PIL image; BadRequest for what is not an image or is too big to decode."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadRequest("the image must be bytes")
    data = bytes(data)
    if len(data) > MAX_BYTES:
        raise BadRequest(f"the image is oversized: {len(data)} bytes, the limit is {MAX_BYTES} bytes")
    if not data:
        raise BadRequest("the image is empty: not a decodable image")
    Image = _pil()
    with warnings.catch_warnings():
        # Pillow warns (and only above twice the limit raises) on decompression bombs; here any
        # such warning refuses the image
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))  # reads the header only
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise BadRequest(f"the image is oversized: more than {MAX_PIXELS} pixels") from None
        except Exception:
            raise BadRequest("not a decodable image (Pillow knows no format in these bytes)") from None
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise BadRequest(f"the image is oversized: {w}x{h} is {w * h} pixels, the limit is {MAX_PIXELS}")
        if w < 1 or h < 1:
            raise BadRequest(f"not a decodable image: it is {w}x{h} pixels")
        try:
            img.load()
            return img.convert("RGB")
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise BadRequest(f"the image is oversized: more than {MAX_PIXELS} pixels") from None
        except Exception as e:
            raise BadRequest(f"not a decodable image: {str(e)[:200] or type(e).__name__}") from None


def _hw(size: Any) -> dict:
    if isinstance(size, int):
        return {"height": size, "width": size}
    return dict(size) if isinstance(size, Mapping) else {}


class ImageClassifier:
    def __init__(self, model: Model, config: Mapping[str, Any], processor: Mapping[str, Any]):
        self.model = model
        self.config = dict(config)
        self.proc = dict(processor)
        inputs = [t for t in model.metadata.inputs]
        names = [t.name for t in inputs]
        if names != ["pixel_values"]:
            raise UnprocessableModel(f"an image classifier takes one pixel_values input; this one takes {names}")
        self.dtype = inputs[0].dtype
        outs = [t.name for t in model.metadata.outputs]
        self.output = "logits" if "logits" in outs else outs[0]
        problem = config.get("problem_type")
        self.sigmoid = problem == "multi_label_classification"

        p = self.proc
        self.resample = int(p.get("resample", 2) if p.get("resample") is not None else 2)
        self.do_resize = bool(p.get("do_resize", True))
        self.size = _hw(p.get("size") if p.get("size") is not None else 224)
        self.crop_pct = p.get("crop_pct")
        self.do_center_crop = bool(p.get("do_center_crop", False))
        self.crop = _hw(p.get("crop_size") if p.get("crop_size") is not None else self.size)
        self.do_rescale = bool(p.get("do_rescale", True))
        self.rescale = float(p.get("rescale_factor", 1 / 255))
        self.do_normalize = bool(p.get("do_normalize", True))
        self.mean = np.asarray(p.get("image_mean", _IMAGENET_MEAN), dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(p.get("image_std", _IMAGENET_STD), dtype=np.float32).reshape(-1, 1, 1)
        # an int "size" with a center crop means the shortest edge (the older processors)
        if isinstance(p.get("size"), int) and self.do_center_crop:
            self.size = {"shortest_edge": p["size"]}

    def preprocess(self, image) -> np.ndarray:
        Image = _pil()
        do_crop, crop = self.do_center_crop, self.crop
        if self.do_resize:
            w, h = image.size
            if "shortest_edge" in self.size:
                edge = int(self.size["shortest_edge"])
                crop_pct = self.crop_pct if self.crop_pct and "crop_size" not in self.proc else None
                if crop_pct and edge < 384:   # ConvNeXt: resize to edge / crop_pct, then crop to edge
                    edge_r = int(edge / crop_pct)
                    image = image.resize(_short_edge(w, h, edge_r), resample=Image.Resampling(self.resample))
                    do_crop, crop = True, {"height": edge, "width": edge}
                else:
                    image = image.resize(_short_edge(w, h, edge), resample=Image.Resampling(self.resample))
            elif "height" in self.size and "width" in self.size:
                image = image.resize((int(self.size["width"]), int(self.size["height"])),
                                     resample=Image.Resampling(self.resample))
        arr = np.asarray(image, dtype=np.uint8)          # [h, w, 3]
        if do_crop and "height" in crop:
            arr = _center_crop(arr, int(crop["height"]), int(crop["width"]))
        x = arr.astype(np.float64)
        if self.do_rescale:
            x = x * self.rescale
        x = x.astype(np.float32).transpose(2, 0, 1)      # channels first
        if self.do_normalize:
            x = (x - self.mean) / self.std
        return x[None].astype(self.dtype)

    def logits(self, image: bytes) -> np.ndarray:
        pixels = self.preprocess(decode_image(image))
        return self.model.infer({"pixel_values": pixels}, [self.output])[self.output][0]

    def classify_image(self, image: bytes, top_k: int = 5) -> list[dict]:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise BadRequest(f"top_k must be a positive integer, not {top_k!r}")
        logits = self.logits(image)
        scores = _sigmoid(logits) if self.sigmoid else _softmax(logits)
        labels = labels_of(self.config, scores.shape[-1])
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"label": labels[j], "score": float(scores[j])} for j in order]


def _short_edge(w: int, h: int, edge: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``edge`` and the aspect ratio kept (as transformers)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = edge, int(edge * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def _center_crop(arr: np.ndarray, ch: int, cw: int) -> np.ndarray:
    h, w = arr.shape[:2]
    if h < ch or w < cw:   # pad with zeros first, centred, as transformers does
        ph, pw = max(ch, h), max(cw, w)
        padded = np.zeros((ph, pw) + arr.shape[2:], dtype=arr.dtype)
        top, left = (ph - h) // 2, (pw - w) // 2
        padded[top:top + h, left:left + w] = arr
        arr, h, w = padded, ph, pw
    top, left = (h - ch) // 2, (w - cw) // 2
    return arr[top:top + ch, left:left + cw]
