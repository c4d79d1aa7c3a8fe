import numpy as np


async def test_v2_infer_matmul(app_factory, models):
    client = await app_factory()
    r = await client.post("/v1/models/register", json={"model_id": "test/matmul@1", "path": str(models.matmul)})
    assert r.status == 200, await r.text()
    x = np.arange(64, dtype=np.float32).reshape(1, 64) / 64
    r = await client.post("/v2/models/test%2Fmatmul%401/infer", json={
        "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}]})
    body = await r.json()
    assert r.status == 200, body
    y = np.array(body["outputs"][0]["data"], dtype=np.float32).reshape(1, 64)
    np.testing.assert_allclose(y, x @ models.matmul_w, rtol=1e-5, atol=1e-5)
