"""Shared fixtures: a tiny random-weight checkpoint for tests of the API (not of accuracy)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pfn.bar_distribution import uniform_borders
from pfn.checkpoint import Checkpoint, save_checkpoint
from pfn.model import CurveSetTransformer, ModelConfig

TINY_BUCKETS = 50


def tiny_checkpoint(seed: int = 0) -> Checkpoint:
    """A 1-layer, 16-wide network with random weights over 50 uniform buckets."""
    torch.manual_seed(seed)
    config = ModelConfig(
        d_model=16, n_heads=2, n_layers=1, d_ff=32, n_query_layers=1, n_buckets=TINY_BUCKETS
    )
    return Checkpoint(
        state_dict=CurveSetTransformer(config).state_dict(),
        model=config,
        borders=uniform_borders(TINY_BUCKETS),
        prior={"name": "ftpfn"},
        training={"steps": 3},
    )


@pytest.fixture
def tiny_ckpt() -> Checkpoint:
    """A fresh ``tiny_checkpoint()``."""
    return tiny_checkpoint()


@pytest.fixture(scope="session")
def tiny_checkpoint_path(tmp_path_factory) -> Path:
    """``tiny_checkpoint()`` saved as ``.../tiny.pt`` + ``.json``; the path without suffix."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(path, tiny_checkpoint())
    return path
