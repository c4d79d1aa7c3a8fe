"""Task-level requests over HTTP for models of every format the core converts or runs: SafeTensors
directories (converted to ONNX on registration) serving images, labels and generated text."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from ..hub import repos

pytest.importorskip("optimum.exporters.onnx", reason="conversion needs the convert extra (make test installs it)")


def png(width: int, height: int, seed: int = 0) -> str:
    from PIL import Image

    if width * height > 10**7:
        img = Image.new("RGB", (width, height))
    else:
        img = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The models' directories and the core's data directory, kept for the module so the
    conversions to ONNX happen once (the core caches them by content hash)."""
    root = tmp_path_factory.mktemp("task-api")
    for kind in ("vit", "bert-classifier", "gpt2"):
        repos.tiny_model_files(kind, root / kind)
    return root


@pytest.fixture
async def client(app_factory, shared):
    c = await app_factory(data_dir=str(shared / "data"))
    for kind in ("vit", "bert-classifier", "gpt2"):
        r = await c.post("/v1/models/register", json={"model_id": f"tiny/{kind}@1", "path": str(shared / kind)})
        assert r.status == 200, await r.text()
    return c


async def test_images_labels_and_generation(client, shared):
    tmp_path = shared
    import torch
    import transformers

    image = png(48, 40)
    r = await client.post("/v1/models/tiny%2Fvit%401/inference", json={"image": image, "top_k": 3})
    body = await r.json()
    assert r.status == 200 and body["task"] == "classify-image", body
    got = {d["label"]: d["score"] for d in body["outputs"]["labels"]}
    from PIL import Image

    proc = transformers.ViTImageProcessor.from_pretrained(tmp_path / "vit")
    ref_model = transformers.ViTForImageClassification.from_pretrained(tmp_path / "vit").eval()
    pixels = proc(Image.open(io.BytesIO(base64.b64decode(image))), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = torch.softmax(ref_model(pixel_values=pixels).logits, -1)[0].numpy()
    for i, label in ref_model.config.id2label.items():
        assert abs(got[label] - probs[i]) < 1e-4

    r = await client.post("/v1/models/tiny%2Fbert-classifier%401/inference", json={"text": "a fine day"})
    body = await r.json()
    assert r.status == 200 and body["task"] == "classify"
    assert {d["label"] for d in body["outputs"]["labels"][0]} == {"NEGATIVE", "POSITIVE"}
    assert abs(sum(d["score"] for d in body["outputs"]["labels"][0]) - 1) < 1e-5

    r = await client.post("/v1/models/tiny%2Fgpt2%401/inference", json={"prompt": "the cat", "max_length": 5,
                                                                       "temperature": 0})
    body = await r.json()
    assert r.status == 200 and body["outputs"]["usage"]["completion_tokens"] <= 5
    # an ONNX decoder answers the OpenAI chat endpoint like a GGUF would
    r = await client.post("/v1/chat/completions", json={"model": "tiny/gpt2@1", "max_tokens": 4, "temperature": 0,
                                                        "messages": [{"role": "user", "content": "hello"}]})
    body = await r.json()
    assert r.status == 200 and body["object"] == "chat.completion" and body["usage"]["completion_tokens"] <= 4


@pytest.mark.parametrize("image, message", [
    ("bm90IGFuIGltYWdl", "not a decodable image"),           # base64 of "not an image"
    ("%%%not-base64%%%", "not valid base64"),
    (None, "oversized"),
])
async def test_bad_images_are_clear_400s_and_the_model_keeps_serving(client, image, message):
    if image is None:
        image = png(8000, 6000)  # 48 megapixels, over the 40 MP bound
    r = await client.post("/v1/models/tiny%2Fvit%401/inference", json={"image": image})
    body = await r.json()
    assert r.status == 400 and message in body["message"].lower(), body
    r = await client.post("/v1/models/tiny%2Fvit%401/inference", json={"image": png(32, 32)})
    assert r.status == 200


async def test_task_the_model_does_not_serve(client):
    r = await client.post("/v1/models/tiny%2Fvit%401/inference", json={"text": "hello"})
    body = await r.json()
    assert r.status == 400 and "does not do" in body["message"] and "classify-image" in body["message"]
    r = await client.post("/v1/embeddings", json={"model": "tiny/gpt2@1", "input": "x"})
    body = await r.json()
    assert r.status == 400 and body["error"]["type"] == "invalid_request_error"
