"""Tests of priors.random_mlp: dropout positions, input checks."""

from __future__ import annotations

import pytest
import torch

from priors.random_mlp import RandomMLPConfig, _dropped_positions, draw_mlps, evaluate_mlps


def test_dropped_positions_are_sorted_in_range_at_the_right_rate():
    gen = torch.Generator().manual_seed(0)
    pos = _dropped_positions(200_000, 0.145, gen)
    assert torch.all(pos[1:] > pos[:-1])
    assert 0 <= int(pos[0]) and int(pos[-1]) < 200_000
    assert pos.numel() / 200_000 == pytest.approx(0.145, abs=0.003)
    # gaps are geometric: P(gap = 1) = p
    gaps = pos[1:] - pos[:-1]
    assert (gaps == 1).float().mean().item() == pytest.approx(0.145, abs=0.01)


def test_hp_mask_must_be_a_prefix():
    cfg = RandomMLPConfig()
    gen = torch.Generator().manual_seed(0)
    draw = draw_mlps(cfg, 2, generator=gen)
    x = torch.rand(2, 3, 4, generator=gen)
    rows = torch.tensor([3, 2])
    ok = torch.tensor([[True, True, False, False], [True, False, False, False]])
    y = evaluate_mlps(draw, x, rows=rows, hp_mask=ok, n_outputs=5, config=cfg, generator=gen)
    assert y.shape == (2, 3, 5) and torch.all(y[1, 2] == 0) and torch.all(y[0] != 0)
    bad = torch.tensor([[False, True, False, False], [True, False, False, False]])
    with pytest.raises(ValueError, match="prefix"):
        evaluate_mlps(draw, x, rows=rows, hp_mask=bad, n_outputs=5, config=cfg, generator=gen)
