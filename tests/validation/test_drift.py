"""validation.drift: each measure on arrays whose answer is known by construction."""
from __future__ import annotations

import numpy as np
import pytest

from validation import drift


def test_cosine_and_row_cosines():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert drift.cosine(a, a) == pytest.approx(1.0)
    assert drift.cosine(a, -a) == pytest.approx(-1.0)
    assert drift.cosine(np.zeros(3), np.zeros(3)) == 1.0 and drift.cosine(np.zeros(3), np.ones(3)) == 0.0
    rows = drift.row_cosines(a, np.array([[1.0, 1.0], [0.0, 5.0]]))
    assert rows == pytest.approx([np.sqrt(0.5), 1.0])
    with pytest.raises(ValueError, match="shapes differ"):
        drift.row_cosines(a, a[:1])


def test_classifier_measures():
    parent = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    variant = parent.copy()
    variant[2] = [0.0, 1.0, 0.0]                   # one row of four changes its top class
    assert drift.top1_agreement(parent, variant) == 0.75
    p = np.exp(parent[2]) / np.exp(parent[2]).sum()
    q = np.exp(variant[2]) / np.exp(variant[2]).sum()
    assert drift.max_prob_diff(parent, variant) == pytest.approx(np.max(np.abs(p - q)))
    assert drift.max_prob_diff(parent, parent) == 0.0


def test_greedy_token_agreement_stops_at_the_first_difference():
    assert drift.token_agreement([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert drift.token_agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 0.5     # after 9 the prefixes differ
    assert drift.token_agreement([1, 2], [1, 2, 3, 4]) == 0.5           # a shorter generation
    assert drift.token_agreement([], []) == 1.0 and drift.token_agreement([5], []) == 0.0


def test_outputs_picks_the_measure_of_the_output_kind():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 7, 30))
    c = drift.outputs({"logits": logits}, {"logits": logits + 1e-3})
    assert c["kind"] == "classifier" and c["top1_agreement"] == 1.0
    assert c["headline"] == {"name": "top-1 agreement", "value": 1.0}
    assert c["max_abs_diff"] == pytest.approx(1e-3)
    hidden = rng.standard_normal((1, 5, 8))
    mask = np.array([[1, 1, 1, 0, 0]])
    noisy = hidden.copy()
    noisy[0, 3:] = rng.standard_normal((2, 8))       # padding positions: noise, and masked out
    e = drift.outputs({"last_hidden_state": hidden}, {"last_hidden_state": noisy}, mask)
    assert e["kind"] == "embedding" and e["headline"]["name"] == "sentence cosine (worst)"
    assert e["sentence_cosine_min"] == pytest.approx(1.0) and e["cosine_min"] < 0.9
    plain = drift.outputs({"output": np.array([[0.2]])}, {"output": np.array([[0.2]])})
    assert plain["headline"] == {"name": "cosine (worst)", "value": 1.0}
    with pytest.raises(ValueError, match="no output in common"):
        drift.outputs({"a": hidden}, {"b": hidden})


def test_worst_of_several_inputs():
    a = {"kind": "classifier", "cosine": 0.99, "cosine_min": 0.98, "max_abs_diff": 0.1, "top1_agreement": 1.0,
         "max_prob_diff": 0.01, "sentence_cosine_min": None, "headline": {"name": "top-1 agreement", "value": 1.0}}
    b = {**a, "cosine_min": 0.95, "max_abs_diff": 0.3, "top1_agreement": 0.875,
         "headline": {"name": "top-1 agreement", "value": 0.875}}
    w = drift.worst([a, b])
    assert (w["cosine_min"], w["max_abs_diff"], w["top1_agreement"], w["headline"]["value"]) == (0.95, 0.3, 0.875, 0.875)


def test_token_ids_from_a_package_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    assert drift.token_ids("hello world hello", tmp_path) == [0, 1, 0]
    (tmp_path / "empty").mkdir()
    assert drift.token_ids("hello", tmp_path / "empty") is None       # no tokenizer: no ids, not a guess
