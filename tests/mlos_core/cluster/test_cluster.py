"""The server on a Ray cluster of a head and two worker nodes (one CPU each): front doors are
real ``python -m mlos_core --ray-address`` subprocesses, replicas run on the worker nodes, each
node with a private directory. The tests share the cluster and run in file order: the last ones
remove worker nodes."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest

from axon_pkg.manifest import sha256_file
from tests import onnx_models
from tests.conftest import http

from .conftest import infer, path_of, register, served_by

MM, INT, STICKY, MOVED, TAMPERED, SCALED, LOST = (
    "c/matmul@1", "c/add-one@1", "c/sticky@1", "c/moved@1", "c/tampered@1", "c/scaled@1", "c/lost@1")
CHAT = "c/gemma@Q4_K_M"


@pytest.fixture(scope="module")
def door_a(front_door):
    return front_door("a")


@pytest.fixture(scope="module")
def door_b(front_door):
    """A second front door that registers without loading (so that a package's first fetch can
    be watched), on the same cluster."""
    return front_door("b", MLOS_LOAD_ON_REGISTER="false")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cluster-models")


def node_names(cluster) -> dict[str, str]:
    return {w.node_id: w.mlos_name for w in cluster.workers}


def replicas(door, app: str) -> int:
    _, _, status = door.call("GET", "/status")
    return status["cluster"]["applications"].get(app, {}).get("replica_states", {}).get("RUNNING", 0)


def wait_for(predicate, timeout: float, what: str, period: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(period)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def test_the_three_apis_through_the_front_door(ray_cluster, door_a, models):
    import tritonclient.http as httpclient
    from openai import OpenAI

    from tests.hub.repos import gemma_gguf

    answer = register(door_a, MM, models.matmul)
    assert answer["state"] == "ready" and answer["plugin_id"] == "onnxruntime"
    x = np.random.default_rng(3).standard_normal((3, 64)).astype(np.float32)

    # MLOS API
    status, out = infer(door_a, MM, x)
    assert status == 200
    np.testing.assert_allclose(np.array(out["y"], np.float32), x @ models.matmul_w, rtol=1e-4, atol=1e-4)

    # Open Inference Protocol, binary tensors both ways, with the stock Triton client
    client = httpclient.InferenceServerClient(url=door_a.url.removeprefix("http://"))
    try:
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer(MM, [inp], outputs=[httpclient.InferRequestedOutput("y", binary_data=True)])
        np.testing.assert_allclose(result.as_numpy("y"), x @ models.matmul_w, rtol=1e-4, atol=1e-4)
        assert client.get_model_metadata(MM)["inputs"][0]["shape"] == [-1, 64]
    finally:
        client.close()

    # OpenAI, streamed (SSE) and whole, on a GGUF model a replica fetched and loaded
    # one slot (the whole context): the test of a client leaving relies on one generation at a time
    register(door_a, CHAT, gemma_gguf(), n_ctx=2048, n_threads=1, parallel=1)
    oai = OpenAI(base_url=door_a.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    args = dict(model=CHAT, prompt="The capital of France is", max_tokens=8, temperature=0)
    whole = oai.completions.create(**args)
    streamed = [c.choices[0].text for c in oai.completions.create(**args, stream=True) if c.choices]
    assert whole.choices[0].text.strip() and "".join(streamed) == whole.choices[0].text
    assert whole.usage.completion_tokens == 8 and whole.choices[0].finish_reason == "length"
    chat = oai.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "Say hello."}],
                                       max_tokens=6, temperature=0, stream=True)
    events = list(chat)
    assert events[-1].choices[0].finish_reason in ("length", "stop")
    assert "".join(e.choices[0].delta.content or "" for e in events if e.choices).strip()

    # the replicas that answered run on worker nodes, and the front door's /metrics counts them
    workers = set(node_names(ray_cluster))
    for model in (MM, CHAT):
        assert served_by(door_a, model) and {r["node"] for r in served_by(door_a, model).values()} <= workers
    _, _, text = door_a.call("GET", "/metrics")
    assert f'mlos_cluster_answers_total{{model="{MM}"' in text
    ok = [line for line in text.splitlines() if line.startswith(f'mlos_inference_request_success_total{{model="{MM}"}}')]
    assert ok and float(ok[0].split()[-1]) >= 1


def test_a_client_leaving_a_stream_stops_the_generation_on_the_replica(door_a):
    """The replica's llama.cpp context (registered with one slot) runs one generation at a time: the next request is
    answered promptly only if the abandoned 1500-token generation stopped (it would take minutes)."""
    import json
    import socket

    body = json.dumps({"model": CHAT, "prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0.8,
                       "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", door_a.port)) as s:
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        s.settimeout(120)
        received = b""
        while received.count(b"data: ") < 3:  # a few tokens streamed
            part = s.recv(4096)
            assert part, received
            received += part
            assert b"HTTP/1.1 200".startswith(received[:12]), received
    start = time.monotonic()
    status, _, answer = door_a.call("POST", "/v1/completions", {"model": CHAT, "prompt": "Hi", "max_tokens": 2},
                                    timeout=120)
    assert status == 200 and answer["usage"]["completion_tokens"] == 2
    assert time.monotonic() - start < 30, "the abandoned generation went on on the replica"
    wait_for(lambda: door_a.call("GET", "/status")[2]["models"] and all(
        r["pending"] == 0 for r in door_a.call("GET", "/status")[2]["models"]), 10, "no request left pending")


def test_a_model_registered_through_one_front_door_is_served_through_another(front_door, door_a, door_b, models):
    register(door_a, INT, models.int64)
    x = np.array([[1, 2, 3, 4]], np.int64)
    status, out = infer(door_b, INT, x)  # B learns of it from the cluster store on first use
    assert status == 200 and out["y"] == [[2, 3, 4, 5]]
    assert INT in [m["id"] for m in door_b.call("GET", "/models")[2]["models"]]

    # a front door started later knows it, and so does the same front door after a restart
    door_c = front_door("c")
    assert infer(door_c, INT, x)[1]["y"] == [[2, 3, 4, 5]]
    door_c.stop()
    door_c.start(timeout=240)
    assert infer(door_c, INT, x)[1]["y"] == [[2, 3, 4, 5]]

    # unregistered through B: every front door forgets it
    assert door_b.call("DELETE", f"/v1/models/{path_of(INT)}")[0] == 200
    wait_for(lambda: infer(door_a, INT, x)[0] == 404, 10, "front door A answering 404 for an unregistered model")
    assert infer(door_c, INT, x)[0] == 404
    door_c.stop()


def test_a_model_keeps_hitting_the_replica_that_holds_it(work, door_a, door_b):
    path, w = onnx_models.matmul(work / "sticky.onnx", seed=11)
    register(door_a, STICKY, path)
    time.sleep(1.5)  # a replica tells the router what it holds within a fraction of a second
    x = np.ones((1, 64), np.float32)
    for door in (door_a, door_b) * 10:
        status, out = infer(door, STICKY, x)
        assert status == 200
        np.testing.assert_allclose(np.array(out["y"], np.float32), x @ w, rtol=1e-4, atol=1e-4)
    held_a, held_b = served_by(door_a, STICKY), served_by(door_b, STICKY)
    assert len(held_a) == 1 and held_a.keys() == held_b.keys(), (held_a, held_b)
    assert sum(r["answers"] for r in held_b.values()) >= 10  # and its describe when it opened the model


def test_a_package_is_served_on_a_node_that_never_had_the_file(ray_cluster, work, door_a, door_b):
    client_dir = work / "client-only"
    client_dir.mkdir()
    src, w = onnx_models.matmul(client_dir / "moved.onnx", seed=21)
    digest = sha256_file(src)
    register(door_a, MOVED, src)
    src.unlink()  # only the cluster store has it now
    x = np.full((2, 64), 0.5, np.float32)
    status, out = infer(door_b, MOVED, x)
    assert status == 200
    np.testing.assert_allclose(np.array(out["y"], np.float32), x @ w, rtol=1e-4, atol=1e-4)

    # (a request in the first moments after a registration may open the model on a second replica,
    # before the router has heard which replica holds it: each such copy is checked)
    for info in served_by(door_b, MOVED).values():
        node = node_names(ray_cluster)[info["node"]]  # a worker, not the head the front doors run beside
        copies = list(ray_cluster.node_dir(node).glob("packages/*/moved.onnx"))
        assert len(copies) == 1 and sha256_file(copies[0]) == digest
    assert not list(ray_cluster.node_dir("head").glob("**/moved.onnx"))

    # a package whose stored copy no longer matches its sha256 is refused before it loads
    bad, _ = onnx_models.matmul(work / "tampered.onnx", seed=22)
    register(door_b, TAMPERED, bad)  # door B registers without loading
    blob = ray_cluster.dir / "store" / "blobs" / sha256_file(bad)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    status, answer = infer(door_b, TAMPERED, x)
    assert status == 503 and answer["code"] == "model_unavailable"
    assert "failed verification" in answer["message"] and "sha256" in answer["message"], answer["message"]


def test_replicas_scale_up_under_load_and_back_down(door_a, models):
    from mlos_core.cluster.frontdoor import app_for

    options = dict(min_replicas=1, max_replicas=2, target_ongoing_requests=1, upscale_delay_s=0,
                   downscale_delay_s=1, look_back_period_s=1, intra_op_threads=1, instances=1)
    register(door_a, SCALED, models.slow, **options)
    app = app_for(SCALED, options)
    assert replicas(door_a, app) == 1
    x = np.random.default_rng(5).standard_normal((4, 1024)).astype(np.float32)
    expected = ort.InferenceSession(str(models.slow), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    stop, answers = threading.Event(), []

    def client():
        while not stop.is_set():
            status, out = infer(door_a, SCALED, x)
            answers.append(status)
            assert status == 200, out
            np.testing.assert_allclose(np.array(out["y"], np.float32), expected, rtol=1e-3, atol=1e-3)

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(client) for _ in range(4)]
        try:
            wait_for(lambda: replicas(door_a, app) == 2, 120, "a second replica under load")
        finally:
            stop.set()
        for f in running:
            f.result()
    assert len(answers) >= 4
    wait_for(lambda: replicas(door_a, app) == 1, 120, "back to one replica once idle")
    status, out = infer(door_a, SCALED, x)
    assert status == 200
    # the model's own deployment goes when the model is unregistered
    assert door_a.call("DELETE", f"/v1/models/{path_of(SCALED)}")[0] == 200
    wait_for(lambda: app not in door_a.call("GET", "/status")[2]["cluster"]["applications"], 60,
             "the model's deployment deleted")


def test_a_worker_node_removed_mid_load(ray_cluster, door_a, door_b, models):
    """Every request is answered: correctly (retried once on another replica when its own was
    lost) or with a clear 503; later requests succeed; registrations are intact."""
    register(door_a, LOST, models.slow, intra_op_threads=1)
    # requests of a few hundred milliseconds: some are running on the replica when its node goes
    x = np.random.default_rng(6).standard_normal((32, 1024)).astype(np.float32)
    expected = ort.InferenceSession(str(models.slow), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    [(replica, info)] = served_by(door_a, LOST).items()
    victim = next(w for w in ray_cluster.workers if w.node_id == info["node"])

    stop, results, errors = threading.Event(), [], []

    def client():
        while not stop.is_set():
            try:
                status, out = infer(door_a, LOST, x, timeout=180)
            except OSError as e:  # a connection error would be a request left unanswered
                errors.append(repr(e))
                return
            results.append((time.monotonic(), status, out))

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(client) for _ in range(4)]
        time.sleep(2)
        removed_at = time.monotonic()
        ray_cluster.remove_worker(victim)
        time.sleep(6)
        stop.set()
        for f in running:
            f.result()

    assert not errors, errors
    assert results
    for _, status, out in results:
        if status == 200:
            np.testing.assert_allclose(np.array(out["y"], np.float32), expected, rtol=1e-3, atol=1e-3)
        else:
            assert status == 503 and out["code"] == "replica_lost", out
            assert "the replica serving this request was lost" in out["message"]
    assert any(t > removed_at and s == 200 for t, s, _ in results), "no request succeeded after the removal"
    _, _, text = door_a.call("GET", "/metrics")
    retried = [float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(f'mlos_cluster_retries_total{{model="{LOST}"}}')]
    lost = sum(s == 503 for _, s, _ in results)
    assert sum(retried) + lost >= 1, "no request was in flight on the lost replica: the test tested nothing"

    # later requests succeed on the remaining worker; earlier registrations are still served
    for _ in range(3):
        status, out = infer(door_a, LOST, x)
        assert status == 200
    remaining = {w.node_id for w in ray_cluster.workers}
    assert any(r["node"] in remaining for r in served_by(door_a, LOST).values())
    status, out = infer(door_b, MM, np.ones((1, 64), np.float32))
    assert status == 200 and np.allclose(np.array(out["y"], np.float32), np.ones((1, 64), np.float32) @ models.matmul_w,
                                         rtol=1e-4, atol=1e-4)


def test_a_stream_cut_by_node_loss_ends_with_a_clear_error(ray_cluster, door_a):
    """A generation that has streamed tokens is not retried: the client gets OpenAI's error event."""
    from openai import APIError, OpenAI

    [old] = ray_cluster.workers  # every replica runs there since the last test removed the other
    new = ray_cluster.add_worker()
    oai = OpenAI(base_url=door_a.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    stream = oai.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=400, temperature=0,
                                    stream=True)
    chunks = iter(stream)
    assert next(chunks).choices
    ray_cluster.remove_worker(old)
    with pytest.raises(APIError, match="replica serving this request was lost after it had started streaming"):
        for _ in chunks:
            pass
    # the next generation is served by a replica started on the node that remains
    again = oai.completions.create(model=CHAT, prompt="Hello", max_tokens=4, temperature=0)
    assert again.choices[0].text and again.usage.completion_tokens == 4
    assert new.node_id in {r["node"] for r in served_by(door_a, CHAT).values()}
    status, _, _ = http("GET", door_a.url + "/v2/health/ready")
    assert status == 200
