"""Tests for pfn/checkpoint.py: the round trip through files, and the checks on load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from pfn.checkpoint import (
    CARD_DIGEST_KEY,
    FORMAT_VERSION,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from pfn.surrogate import Curve, Surrogate

K = 50  # buckets of the tiny checkpoint (tests/conftest.py)
CTX = [Curve([0.2], t=[0.1, 0.2], y=[0.3, 0.5]), Curve([0.8], t=[0.1], y=[0.6])]
QUERY = [Curve([0.2], t=[0.5, 1.0]), Curve([0.5], t=[1.0])]


@pytest.fixture
def ckpt(tiny_ckpt) -> Checkpoint:
    return tiny_ckpt


def test_round_trip_gives_identical_predictions(ckpt, tmp_path):
    weights, card = save_checkpoint(tmp_path / "sub" / "m", ckpt)
    assert (weights.name, card.name) == ("m.pt", "m.json")
    assert sorted(p.name for p in weights.parent.iterdir()) == ["m.json", "m.pt"]  # no temporaries
    state = torch.load(weights, map_location="cpu", weights_only=True)  # tensors only
    assert state.keys() == {*ckpt.state_dict.keys(), CARD_DIGEST_KEY}  # + the card's digest
    assert load_checkpoint(weights).state_dict.keys() == ckpt.state_dict.keys()
    meta = json.loads(card.read_text())
    assert meta["format_version"] == FORMAT_VERSION and len(meta["borders"]) == K + 1
    for name in ("m", "m.pt", "m.json"):
        loaded = load_checkpoint(tmp_path / "sub" / name)
        assert loaded.model == ckpt.model and loaded.prior == {"name": "ftpfn"}
        assert loaded.training == {"steps": 3}
        torch.testing.assert_close(loaded.borders, ckpt.borders, rtol=0, atol=0)
    before = Surrogate.from_checkpoint(ckpt).predict(CTX, QUERY)
    after = Surrogate.load(tmp_path / "sub" / "m").predict(CTX, QUERY)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(ckpt, tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "m", ckpt)
    save = torch.save

    def crash(obj, path):  # half a file written, then the process dies
        save(obj, path)
        with open(path, "r+b") as fh:
            fh.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "m", ckpt)
    monkeypatch.undo()
    loaded = load_checkpoint(tmp_path / "m")  # the earlier files, intact
    assert loaded.state_dict.keys() == ckpt.state_dict.keys()


def test_tampered_weights_fail_the_sha256_check(ckpt, tmp_path):
    weights, _ = save_checkpoint(tmp_path / "m", ckpt)
    state = torch.load(weights, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1.0
    torch.save(state, weights)
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(tmp_path / "m")


@pytest.mark.parametrize(
    "edit",
    ["borders", "model", "training", "added field"],
)
def test_an_edited_card_fails_the_digest_check(ckpt, tmp_path, edit):
    """The weights hold the digest of the card's contents: any edit of the card is refused,
    including one that keeps it loadable (a border moved changes every prediction)."""
    _, card = save_checkpoint(tmp_path / "m", ckpt)
    meta = json.loads(card.read_text())
    if edit == "borders":
        meta["borders"][3] += 1e-6
    elif edit == "model":
        meta["model"]["hp_bias"] = not meta["model"]["hp_bias"]
    elif edit == "training":
        meta["training"]["steps"] = 10**6
    else:
        meta["note"] = "hand-edited"
    card.write_text(json.dumps(meta, indent=2))
    with pytest.raises(ValueError, match="card was edited"):
        load_checkpoint(tmp_path / "m")
    meta["format_version"] = 3  # claiming a format without the digest does not get past it
    card.write_text(json.dumps(meta, indent=2))
    with pytest.raises(ValueError, match="card was edited"):
        load_checkpoint(tmp_path / "m")
    # Formatting alone (indentation, key order) is not an edit.
    _, card = save_checkpoint(tmp_path / "n", ckpt)
    original = json.loads(card.read_text())
    card.write_text(json.dumps(dict(reversed(list(original.items())))))
    torch.testing.assert_close(load_checkpoint(tmp_path / "n").borders, ckpt.borders)


def test_the_digest_key_is_reserved(ckpt, tmp_path):
    state = {**ckpt.state_dict, CARD_DIGEST_KEY: torch.zeros(32, dtype=torch.uint8)}
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "m", Checkpoint(state, ckpt.model, ckpt.borders))


def test_unknown_format_version_is_rejected(ckpt, tmp_path):
    _, card = save_checkpoint(tmp_path / "m", ckpt)
    meta = json.loads(card.read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    card.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version"):
        load_checkpoint(tmp_path / "m")


def _older_format(ckpt: Checkpoint, path, version: int) -> tuple[dict, Path]:
    """``ckpt`` written as a checkpoint of an older ``version`` would be: weights without the
    card's digest (before version 4). Returns the card's dict (to edit and write) and path."""
    weights, card = save_checkpoint(path, ckpt)
    state = torch.load(weights, weights_only=True)
    del state[CARD_DIGEST_KEY]
    torch.save(state, weights)
    meta = json.loads(card.read_text())
    meta["format_version"] = version
    meta["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    return meta, card


def test_a_version_3_checkpoint_loads_without_the_digest(ckpt, tmp_path):
    meta, card = _older_format(ckpt, tmp_path / "m", 3)
    card.write_text(json.dumps(meta))
    loaded = load_checkpoint(tmp_path / "m")
    assert loaded.model == ckpt.model and loaded.state_dict.keys() == ckpt.state_dict.keys()


def test_a_version_1_card_loads_as_the_network_without_the_last_value_head(ckpt, tmp_path):
    meta, card = _older_format(ckpt, tmp_path / "m", 1)
    del meta["model"]["last_value_head"]
    card.write_text(json.dumps(meta))
    assert load_checkpoint(tmp_path / "m").model.last_value_head is False


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ("drop model", "lacks model"),
        ("drop borders", "lacks borders"),
    ],
)
def test_a_malformed_card_is_named(ckpt, tmp_path, text, match):
    _, card = save_checkpoint(tmp_path / "m", ckpt)
    if text.startswith("drop "):
        meta = json.loads(card.read_text())
        del meta[text.removeprefix("drop ")]
        text = json.dumps(meta)
    card.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(tmp_path / "m")


def test_missing_file(ckpt, tmp_path):
    weights, _ = save_checkpoint(tmp_path / "m", ckpt)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="m.pt"):
        load_checkpoint(tmp_path / "m")


def test_a_version_2_card_loads_as_the_network_without_the_distance_bias(ckpt, tmp_path):
    meta, card = _older_format(ckpt, tmp_path / "m", 2)
    meta["model"].pop("hp_bias", None)
    card.write_text(json.dumps(meta))
    assert load_checkpoint(tmp_path / "m").model.hp_bias is False
