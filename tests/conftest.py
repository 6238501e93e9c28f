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


def write_curve_file(path: Path) -> Path:
    """A small HDF5 curve file in the shared layout (``../shared/data/README.md``), two tables.

    ``loss_task``: a loss (lower is better, bounds [0, inf)), 30 configs x 12 steps (step 0 first,
    before training), hyperparameters ``lr`` (log scale, 1e-4..1e-1) and ``width`` (int 8..64).
    Curves: ``0.7 - 0.4 * q * (1 - exp(-5 t))`` with quality ``q`` peaking at lr = 1e-2; row 3
    diverges (1e30 from step 5 on), row 4 stops early (NaN from step 8, so no final value), row 5
    has only its step-0 value.

    ``acc_task``: an accuracy (bounds [0, 1]) at geometric train sizes 16, 32, ..., 512 (6 steps),
    3 learners (categorical) x 4 seeds; learner k ends near 0.6 + 0.1 k; row 0 stops after 4 steps.
    """
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as fh:
        fh.attrs["family"] = "synthetic"
        g = fh.create_group("loss_task")
        lr = 10 ** rng.uniform(-4, -1, 30)
        width = rng.integers(8, 65, 30).astype(np.float64)
        steps = np.arange(12, dtype=np.float64) * 100.0
        t = steps / steps[-1]
        q = np.exp(-((np.log10(lr) + 2) ** 2))
        curves = 0.7 - 0.4 * q[:, None] * (1 - np.exp(-5 * t[None]))
        curves += 0.002 * rng.standard_normal(curves.shape)
        curves[3, 5:] = 1e30
        curves[4, 8:] = np.nan
        curves[5, 1:] = np.nan
        g["curves"] = curves.astype(np.float32)
        g["steps"] = steps.astype(np.float32)
        g["configs"] = np.stack([lr, width], axis=1)
        g["config_names"] = np.array([b"lr", b"width"])
        g["config_log_scale"] = np.array([True, False])
        g["config_is_int"] = np.array([False, True])
        g.attrs.update(
            metric="valid_loss",
            higher_is_better=False,
            x_axis="step",
            metric_lower_bound=0.0,
            metric_upper_bound=np.inf,
        )
        g = fh.create_group("acc_task")
        sizes = 16.0 * 2 ** np.arange(6)
        learner = np.repeat(np.arange(3), 4).astype(np.float64)
        final = 0.6 + 0.1 * learner
        frac = np.log(sizes / 8) / np.log(sizes[-1] / 8)
        curves = 0.3 + (final[:, None] - 0.3) * frac[None]
        curves += 0.01 * rng.standard_normal(curves.shape)
        curves[0, 4:] = np.nan
        g["curves"] = curves.astype(np.float32)
        g["steps"] = sizes.astype(np.float32)
        g["configs"] = learner[:, None]
        g["config_names"] = np.array([b"learner"])
        g["config_log_scale"] = np.array([False])
        g["config_is_int"] = np.array([True])
        g["config_categories"] = np.array([b"tree", b"svm", b"knn"])
        g["seeds"] = np.stack([np.zeros(12), np.tile(np.arange(4), 3)], axis=1).astype(np.int32)
        g.attrs.update(
            metric="valid_accuracy",
            higher_is_better=True,
            x_axis="train_size",
            metric_lower_bound=0.0,
            metric_upper_bound=1.0,
        )
    return path


@pytest.fixture(scope="session")
def curve_file(tmp_path_factory) -> Path:
    """``write_curve_file`` in a session temp folder."""
    return write_curve_file(tmp_path_factory.mktemp("curves") / "curves.h5")
