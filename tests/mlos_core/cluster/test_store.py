"""The cluster store and package transfer, in-process (no Ray): what a front door uploads, what
a replica on another node downloads and verifies, and what the store refuses."""
from __future__ import annotations

import os
from dataclasses import asdict

import numpy as np
import pytest

from axon_pkg.manifest import sha256_file
from mlos_core.cluster.packages import CHUNK, Listing, fetch, list_package, upload
from mlos_core.cluster.store import ClusterStore, StoreError
from mlos_core.cluster.wire import error_from_wire, error_to_wire, model_key, split_key
from mlos_core.errors import MLOSError, ModelUnavailable, QueueFull, UnprocessableModel
from mlos_core.registry.store import ModelRecord
from mlos_core.scheduler import RequestTimedOut


def publish(store: ClusterStore, path, record: ModelRecord):
    """What the front door's StoreClient does, against the store object itself."""
    listing = list_package(path)

    def send(digest, size, file):
        token = store.begin(digest, size)
        with open(file, "rb") as f:
            offset = 0
            while chunk := f.read(CHUNK):
                store.write(token, offset, chunk)
                offset += len(chunk)
        store.commit(token)

    sent = upload(listing, path.parent, store.missing, send)
    return listing, sent, store.register(asdict(record), "registered", listing.to_wire())


def record(model_id: str, path) -> ModelRecord:
    return ModelRecord(id=model_id, path=str(path), format="onnx", plugin_id="onnxruntime")


@pytest.fixture
def store(tmp_path):
    s = ClusterStore(str(tmp_path / "head"))
    yield s
    s.close()


def test_a_model_file_travels_to_another_node_and_is_verified(store, tmp_path, models):
    listing, sent, answer = publish(store, models.matmul, record("t/mm@1", models.matmul))
    assert answer["status"] == "created" and answer["generation"] >= 1
    assert sent == models.matmul.stat().st_size
    assert listing.files[0]["sha256"] == sha256_file(models.matmul)

    node = tmp_path / "worker-node"
    got = fetch(Listing.from_wire(store.get("t/mm@1")["listing"]), store.read, node)
    assert got.name == "matmul.onnx" and node in got.parents
    assert got.read_bytes() == models.matmul.read_bytes()
    # the copy is reused, verified again; the same content registered twice uploads nothing
    assert fetch(listing, store.read, node) == got
    _, sent_again, again = publish(store, models.matmul, record("t/mm@1", models.matmul))
    assert sent_again == 0 and again == {"status": "exists", "path": str(models.matmul),
                                         "generation": answer["generation"]}


def test_a_directory_with_subfolders_travels_whole(store, tmp_path):
    pkg = tmp_path / "client" / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "model.bin").write_bytes(os.urandom(CHUNK + 123))  # more than one chunk
    (pkg / "sub" / "config.json").write_text('{"a": 1}')
    (pkg / "sub" / "same.bin").write_bytes((pkg / "model.bin").read_bytes())  # same content, another name
    listing, sent, _ = publish(store, pkg, record("t/dir@1", pkg))
    assert sorted(f["path"] for f in listing.files) == ["pkg/model.bin", "pkg/sub/config.json", "pkg/sub/same.bin"]
    assert sent == CHUNK + 123 + len('{"a": 1}')  # identical files travel once
    got = fetch(listing, store.read, tmp_path / "node")
    assert got.name == "pkg" and (got / "sub" / "same.bin").read_bytes() == (pkg / "model.bin").read_bytes()


def test_external_data_beside_a_model_file_travels_with_it(store, tmp_path):
    d = tmp_path / "client"
    d.mkdir()
    (d / "m.onnx").write_bytes(b"graph")
    (d / "m.onnx.data").write_bytes(b"weights")
    (d / "other.onnx").write_bytes(b"not this")
    listing = list_package(d / "m.onnx")
    assert listing.entry == "m.onnx" and sorted(f["path"] for f in listing.files) == ["m.onnx", "m.onnx.data"]


def test_a_store_blob_altered_on_disk_is_refused_before_loading(store, tmp_path, models):
    listing, _, _ = publish(store, models.matmul, record("t/mm@1", models.matmul))
    blob = store.blobs / listing.files[0]["sha256"]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    node = tmp_path / "node"
    with pytest.raises(UnprocessableModel, match="failed verification.*sha256"):
        fetch(listing, store.read, node)
    assert not any(p.name == listing.digest for p in (node / "packages").iterdir())  # nothing looks whole


def test_a_node_copy_altered_after_download_is_fetched_again(store, tmp_path, models):
    listing, _, _ = publish(store, models.matmul, record("t/mm@1", models.matmul))
    node = tmp_path / "node"
    got = fetch(listing, store.read, node)
    got.write_bytes(b"tampered")
    again = fetch(listing, store.read, node)
    assert again.read_bytes() == models.matmul.read_bytes()


def test_uploads_are_checked(store):
    digest = "a" * 64
    token = store.begin(digest, 4)
    with pytest.raises(StoreError, match="in order"):
        store.write(token, 2, b"xx")
    with pytest.raises(StoreError, match="ends within"):
        store.write(token, 0, b"12345")
    store.write(token, 0, b"1234")
    with pytest.raises(StoreError, match="hash to"):
        store.commit(token)  # "1234" is not sha256 aaaa...
    assert store.missing([digest]) == [digest]  # a bad upload never becomes a blob
    with pytest.raises(StoreError, match="unknown upload token"):
        store.write(token, 0, b"1234")
    for bad in ("../../etc/passwd", "A" * 64, "a" * 63, None):
        with pytest.raises(StoreError, match="sha256"):
            store.missing([bad])
        with pytest.raises(StoreError, match="sha256"):
            store.read(bad, 0, 10)
    with pytest.raises(StoreError, match="length"):
        store.read(digest, 0, CHUNK + 1)
    with pytest.raises(StoreError, match="offset"):
        store.read(digest, -1, 10)
    with pytest.raises(StoreError, match="size"):
        store.begin(digest, -1)


def test_registering_needs_every_blob_and_is_compare_and_set(store, tmp_path, models):
    listing = list_package(models.matmul)
    with pytest.raises(StoreError, match="not uploaded"):
        store.register(asdict(record("t/mm@1", models.matmul)), "registered", listing.to_wire())
    publish(store, models.matmul, record("t/mm@1", models.matmul))
    other = tmp_path / "other.onnx"
    other.write_bytes(models.matmul.read_bytes())
    _, _, answer = publish(store, other, record("t/mm@1", other))
    assert answer["status"] == "conflict" and answer["path"] == str(models.matmul)


def test_listings_from_a_client_are_checked(tmp_path):
    good = {"path": "m.onnx", "size": 1, "sha256": "a" * 64}
    for bad in ({"entry": "../x", "files": [good]},
                {"entry": "m.onnx", "files": []},
                {"entry": "m.onnx", "files": [{**good, "sha256": "zz"}]},
                {"entry": "m.onnx", "files": [{**good, "size": True}]},
                {"entry": "other", "files": [good]}):
        with pytest.raises(UnprocessableModel):
            Listing.from_wire(bad)
    # a path that climbs out of the package is refused when fetched, before anything is written
    escape = Listing("m.onnx", ({"path": "m.onnx", "size": 1, "sha256": "a" * 64},
                                {"path": "m.onnx/../../../escape", "size": 1, "sha256": "a" * 64}))
    with pytest.raises(UnprocessableModel, match="leaves the package"):
        fetch(escape, lambda d, o, n: b"x", tmp_path / "node")
    assert not (tmp_path / "escape").exists()


def test_links_are_refused(tmp_path, models):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "model.onnx").symlink_to(models.matmul)
    with pytest.raises(UnprocessableModel, match="link"):
        list_package(d)


def test_registrations_survive_a_store_restart_and_unregistering_frees_blobs(tmp_path, models):
    root = str(tmp_path / "head")
    store = ClusterStore(root)
    listing, _, first = publish(store, models.matmul, record("t/mm@1", models.matmul))
    v = store.version()
    store.set_state("t/mm@1", "ready")
    assert store.version() == v + 1
    store.set_state("t/mm@1", "ready")  # no change, no new version
    assert store.version() == v + 1
    store.close()

    store = ClusterStore(root)  # the actor restarted, or the head rebooted
    [row] = store.load_all()
    assert row["record"]["id"] == "t/mm@1" and row["state"] == "ready" and row["generation"] == first["generation"]
    store.delete("t/mm@1")
    assert store.load_all() == [] and store.missing([listing.files[0]["sha256"]]) != []
    _, _, again = publish(store, models.matmul, record("t/mm@1", models.matmul))
    assert again["generation"] > first["generation"]  # a new registration: replicas will not reuse the old
    store.close()


def test_errors_cross_the_wire_as_their_own_class():
    for e in (QueueFull("full", model_id="m", retry_after=1), RequestTimedOut("late"), ModelUnavailable("x")):
        back = error_from_wire(error_to_wire(e))
        assert type(back) is type(e) and back.message == e.message and back.status == e.status
        assert back.model_id == e.model_id and back.retry_after == e.retry_after
    unknown = error_from_wire({"type": "SomethingNew", "status": 418, "code": "teapot", "message": "m"})
    assert type(unknown) is MLOSError and (unknown.status, unknown.code) == (418, "teapot")


def test_model_keys():
    assert split_key(model_key("ns/name@1.0", 7)) == ("ns/name@1.0", 7)
    with pytest.raises(ValueError):
        split_key("no-generation")


def test_fetched_model_gives_the_same_answers(store, tmp_path, models):
    """The copy a replica loads is the model the client registered: same outputs."""
    import onnxruntime as ort

    listing, _, _ = publish(store, models.matmul, record("t/mm@1", models.matmul))
    got = fetch(listing, store.read, tmp_path / "node")
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    y = ort.InferenceSession(str(got), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ models.matmul_w, rtol=1e-4, atol=1e-4)
