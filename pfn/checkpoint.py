"""The checkpoint format: a tensor-only ``state_dict`` file plus a JSON card that describes it.

A checkpoint named ``NAME`` is two files side by side:

``NAME.pt``
    ``torch.save`` of the network's ``state_dict`` plus the card's digest (:data:`CARD_DIGEST_KEY`,
    removed by :func:`load_checkpoint`); tensors only, so it loads with
    ``torch.load(..., weights_only=True)``: no pickled code, no network access.
``NAME.json``
    ``format_version``, ``model`` (the :class:`~pfn.model.ModelConfig` fields), ``prior`` (the
    prior's config dict, enough to rebuild it), ``borders`` (the K + 1 bucket borders of the output
    distribution), ``training`` (free-form summary: steps, tasks seen, wall time, validation
    log-likelihoods, hardware) and ``sha256`` of ``NAME.pt``, checked on every load.

The two files vouch for each other: the card holds the weights' sha256, and the weights hold
(under the key :data:`CARD_DIGEST_KEY`, a 32-byte tensor) the sha256 of the card's contents
without that field, so an edited card (say its ``borders``, which change every prediction) is
refused as surely as swapped weights (format version 4 on; older cards have no digest).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from pfn.model import ModelConfig

FORMAT_VERSION = 4
"""Version 2 added ``ModelConfig.last_value_head``; version-1 cards (which lack it) load with
``last_value_head=False``, the network they were written for. Version 3 added
``ModelConfig.hp_bias``; older cards lack it and load with ``hp_bias=False``. Version 4 added
the card's digest to the weights (:data:`CARD_DIGEST_KEY`); older checkpoints load without that
check."""
_READABLE = (1, 2, 3, 4)

CARD_DIGEST_KEY = "__card_sha256__"
"""The weights file's entry holding the sha256 of the card's contents (not a network weight)."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: weights plus the metadata needed to use them."""

    state_dict: dict[str, Tensor]
    model: ModelConfig
    borders: Tensor  # (K + 1,) bucket borders of the output distribution
    prior: dict = field(default_factory=dict)  # the prior's config dict (see priors.registry)
    training: dict = field(default_factory=dict)  # free-form training summary


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, as hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _card_digest(meta: dict) -> bytes:
    """sha256 of a card's contents without its ``sha256`` field, as canonical JSON (sorted
    keys, no spaces; floats as Python writes them, which read back exactly)."""
    content = {k: v for k, v in meta.items() if k != "sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).digest()


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """The two files of a checkpoint: ``foo``, ``foo.pt`` or ``foo.json`` -> (foo.pt, foo.json)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".pt", ".json") else path
    return stem.with_name(stem.name + ".pt"), stem.with_name(stem.name + ".json")


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> tuple[Path, Path]:
    """Write ``ckpt`` as ``path.pt`` + ``path.json`` (parents created); returns both paths.

    Each file is written beside its target and moved onto it (``os.replace``), so a reader never
    sees a half-written file; a crash between the two moves leaves weights whose sha256 the card
    does not hold, which :func:`load_checkpoint` refuses.
    """
    weights, card = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    if CARD_DIGEST_KEY in ckpt.state_dict:
        raise ValueError(f"{CARD_DIGEST_KEY!r} is reserved for the card's digest")
    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "model": ckpt.model.to_dict(),
        "prior": ckpt.prior,
        "borders": [float(b) for b in ckpt.borders.detach().cpu().double()],
        "training": ckpt.training,
    }
    meta = json.loads(json.dumps(meta))  # as the card will read back (tuples become lists)
    tensors[CARD_DIGEST_KEY] = torch.tensor(list(_card_digest(meta)), dtype=torch.uint8)
    tmp_weights, tmp_card = (p.with_name(f".{p.name}.tmp") for p in (weights, card))
    torch.save(tensors, tmp_weights)
    meta["sha256"] = file_sha256(tmp_weights)
    tmp_card.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_weights, weights)
    os.replace(tmp_card, card)
    return weights, card


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` if either file is missing and ``ValueError`` if the format version
    is unknown, the weights' sha256 does not match the card (a corrupt or swapped file), or (from
    version 4) the card's contents do not match the digest the weights hold (an edited card).
    """
    weights, card = checkpoint_paths(path)
    for p in (weights, card):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file {p} does not exist")
    try:
        meta = json.loads(card.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{card}: not a checkpoint card (invalid JSON: {err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{card}: not a checkpoint card (a JSON object is expected)")
    version = meta.get("format_version")
    if version not in _READABLE:
        raise ValueError(
            f"{card}: checkpoint format_version {version!r} is not supported "
            f"(this curvepfn reads versions {', '.join(map(str, _READABLE))})"
        )
    actual = file_sha256(weights)
    if actual != meta.get("sha256"):
        raise ValueError(
            f"{weights}: sha256 {actual} does not match {meta.get('sha256')} recorded in {card}; "
            "the weights file is corrupt or belongs to another checkpoint"
        )
    missing = [k for k in ("model", "borders") if k not in meta]
    if missing:
        raise ValueError(f"{card}: the checkpoint card lacks {', '.join(missing)}")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    digest = state.pop(CARD_DIGEST_KEY, None)  # checked whenever present: an edited card may
    # claim an older version too
    if digest is None:
        wrong = version >= 4  # format 4 always holds one
    else:
        wrong = bytes(digest.tolist()) != _card_digest(meta)
    if wrong:
        raise ValueError(
            f"{card}: the card's contents do not match the digest its weights {weights.name} "
            "hold; the card was edited after the checkpoint was written (re-save it with "
            "pfn.checkpoint.save_checkpoint to change it)"
        )
    return Checkpoint(
        state_dict=state,
        model=ModelConfig.from_dict(
            {"last_value_head": False, **meta["model"]} if version == 1 else meta["model"]
        ),
        borders=torch.tensor(meta["borders"], dtype=torch.float32),
        prior=meta.get("prior", {}),
        training=meta.get("training", {}),
    )
