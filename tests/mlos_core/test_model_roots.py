"""Register reads only where it is allowed (issue 11, findings 3 and 6).

Before: registering /etc/shadow (or a symlink to it) answered with its first 8 bytes in hex, a
directory path answered with up to 20 of its file names, any path's existence could be tested,
ids like ``a/../../etc@1`` were accepted, and /dev/zero, /dev/null, a FIFO or a path with a NUL
byte gave 500s."""
from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture
async def rooted(app_factory, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    client = await app_factory(model_roots=[str(root)])
    return client, root


async def _register(client, path, model_id="t/m@1"):
    r = await client.post("/v1/models/register", json={"model_id": model_id, "path": path})
    return r.status, await r.json()


async def test_a_path_outside_the_roots_is_refused_without_looking_at_it(rooted, tmp_path):
    client, root = rooted
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOPSECRET" * 4)
    outside_dir = tmp_path / "private"
    outside_dir.mkdir()
    (outside_dir / "diary-entry.txt").write_text("x")
    answers = [await _register(client, p) for p in
               ("/etc/shadow", "/etc/passwd", str(secret), str(outside_dir), str(tmp_path / "does-not-exist"))]
    for status, doc in answers:
        assert status == 403 and doc["code"] == "forbidden" and "outside the model roots" in doc["error"]
        assert "TOPSECRET".encode().hex()[:8] not in doc["error"] and "54 4f 50" not in doc["error"]
        assert "diary-entry" not in doc["error"] and "no such file" not in doc["error"]
    # existing or not, the answer is the same but for the path itself
    assert {d["error"].split("' is outside", 1)[1] for _, d in answers} == {answers[0][1]["error"].split("' is outside", 1)[1]}


async def test_symlinks_are_resolved_before_the_check(rooted, tmp_path):
    client, root = rooted
    (root / "shadow-link").symlink_to("/etc/shadow")
    (root / "dir-link").symlink_to(tmp_path)
    for name in ("shadow-link", "dir-link"):
        status, doc = await _register(client, str(root / name))
        assert status == 403 and "outside the model roots" in doc["error"]


async def test_devices_fifos_and_nul_bytes_are_400s_inside_the_roots(app_factory, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    client = await app_factory(model_roots=["/dev", str(tmp_path)])
    for path, what in (("/dev/zero", "a character device"), ("/dev/null", "a character device"),
                       (str(fifo), "a FIFO")):
        status, doc = await _register(client, path)
        assert status == 400 and what in doc["error"], (path, doc)
    status, doc = await _register(client, str(tmp_path) + "/x\x00.onnx")
    assert status == 400 and "NUL" in doc["error"]


async def test_content_of_a_file_inside_the_roots_is_never_echoed(rooted):
    client, root = rooted
    (root / "notes.bin").write_bytes(b"\x13\x37PRIVATE-BYTES")
    status, doc = await _register(client, str(root / "notes.bin"))
    assert status == 422 and "no known model format" in doc["error"]
    assert "13 37" not in doc["error"] and "1337" not in doc["error"] and "PRIVATE" not in doc["error"]


@pytest.mark.parametrize("model_id", ["a/../../etc@1", "a/./b@1", "../x@1", "a/b@..", "a/b@."])
async def test_dot_segments_in_model_ids_are_refused(rooted, models, model_id):
    client, root = rooted
    shutil.copy(models.matmul, root / "mm.onnx")
    status, doc = await _register(client, str(root / "mm.onnx"), model_id)
    assert status == 400 and "'.' and '..' are not allowed" in doc["error"]


async def test_models_inside_the_roots_still_register(rooted, models):
    client, root = rooted
    shutil.copy(models.matmul, root / "mm.onnx")
    (root / "link.onnx").symlink_to(root / "mm.onnx")
    assert (await _register(client, str(root / "mm.onnx")))[0] == 200
    assert (await _register(client, str(root / "link.onnx"), "t/link@1"))[0] == 200


def test_default_roots(tmp_path):
    from pathlib import Path

    from axon_pkg.store import axon_home
    from mlos_core.config import load_settings
    from mlos_core.model_roots import ModelRoots

    loop = ModelRoots.from_settings(load_settings(None, {"data_dir": str(tmp_path / "d")}, environ={}))
    assert Path.home().resolve() in loop.roots and axon_home().resolve() in loop.roots
    public = ModelRoots.from_settings(load_settings(None, {"data_dir": str(tmp_path / "d"), "host": "0.0.0.0"},
                                                    environ={}))
    assert Path.home().resolve() not in public.roots and (tmp_path / "d").resolve() in public.roots
