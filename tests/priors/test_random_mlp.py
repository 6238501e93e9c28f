"""Tests of priors.random_mlp: dropout positions, input checks."""

from __future__ import annotations

import pytest
import torch

from priors.random_mlp import (
    _POOL_SLACK,
    RandomMLPConfig,
    _dropped_positions,
    _plan,
    _split_dropped_positions,
    draw_mlps,
    evaluate_mlps,
)


def test_dropped_positions_are_sorted_in_range_at_the_right_rate():
    gen = torch.Generator().manual_seed(0)
    pos = _dropped_positions(200_000, 0.145, gen)
    assert torch.all(pos[1:] > pos[:-1])
    assert 0 <= int(pos[0]) and int(pos[-1]) < 200_000
    assert pos.numel() / 200_000 == pytest.approx(0.145, abs=0.003)
    # gaps are geometric: P(gap = 1) = p
    gaps = pos[1:] - pos[:-1]
    assert (gaps == 1).float().mean().item() == pytest.approx(0.145, abs=0.01)


def test_split_dropped_positions_are_one_draw_cut_into_ranges():
    counts = [5000, 0, 12000, 3]
    gen = torch.Generator().manual_seed(1)
    parts = _split_dropped_positions(counts, 0.145, gen)
    full = _dropped_positions(sum(counts), 0.145, torch.Generator().manual_seed(1))
    starts = [0, 5000, 5000, 17000]
    assert [int(q.numel() > 0) for q in parts][:2] == [1, 0]
    for q, n in zip(parts, counts, strict=True):
        assert torch.all((q >= 0) & (q < n))
    assert torch.equal(torch.cat([q + s for q, s in zip(parts, starts, strict=True)]), full)
    assert all(q.numel() == 0 for q in _split_dropped_positions(counts, 0.0, gen))


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


def _reference_outputs(draw, x, rows, n_in, n_outputs, config, generator):
    """Plain per-task tanh networks in float64 from the same normals as ``evaluate_mlps`` (the
    layout of ``_plan``), without pre-activation noise."""
    rows_l, width_l = rows.tolist(), draw.width.tolist()
    hidden_l = (draw.layers - 2).tolist()
    buckets = _plan(rows_l, width_l, hidden_l, n_in.tolist(), n_outputs)
    pool = max(len(b.tasks) * b.rows * b.width for b in buckets)
    torch.randn(pool + _POOL_SLACK, generator=generator)
    torch.rand(sum(len(b.running) + 1 for b in buckets), generator=generator)
    p = config.weight_dropout
    dropped = _split_dropped_positions([b.params_at for b in buckets], p, generator)
    out = torch.zeros(x.shape[0], x.shape[1], n_outputs, dtype=torch.float64)
    for b, drop in zip(buckets, dropped, strict=True):
        z = torch.randn(b.size, generator=generator)
        z = z.index_fill_(0, drop, 0.0).double()
        k, h, d_b, l_b = len(b.tasks), b.width, b.inputs, len(b.running)
        sizes = b.param_sizes(n_outputs)
        blocks = z[b.params_at : b.out_noise_at].view(k, -1)
        noise = z[b.out_noise_at :].view(k, b.rows, n_outputs)
        for q, i in enumerate(b.tasks):
            w, d, n, r, s = width_l[i], int(n_in[i]), hidden_l[i], rows_l[i], draw.weight_std[i]
            w_in, b_in, b_hid, w_out, b_out = blocks[q].split(sizes)
            hid = z[b.hid_at[q] : b.hid_at[q] + n * w * w].view(n, w, w) / (1 - p) ** 0.5
            xs = (x[i, :r, :d].double() - 0.5) / (1.0 / 12.0) ** 0.5
            a = torch.tanh(xs @ (s * w_in.view(d_b, h)[:d, :w]) + s * b_in[:w])
            for j in range(n):
                a = torch.tanh(a @ (s * hid[j]) + s * b_hid.view(l_b, h)[j, :w])
            y = a @ (s * w_out.view(h, n_outputs)[:w]) + s * b_out
            out[i, :r] = y + draw.output_noise[i] * noise[q, :r]
    return out


def test_batched_networks_equal_plain_per_task_tanh_networks():
    # widths, depths, rows and inputs differ across tasks, so buckets pad and mask
    cfg = RandomMLPConfig(
        min_width=3,
        max_width=40,
        min_layers=2,
        max_layers=6,
        min_preactivation_noise=0.0,
        max_preactivation_noise=0.0,
    )
    gen = torch.Generator().manual_seed(3)
    b, m, d_slots = 12, 30, 6
    draw = draw_mlps(cfg, b, generator=gen)
    rows = torch.randint(0, m + 1, (b,), generator=gen)
    n_in = torch.randint(0, d_slots + 1, (b,), generator=gen)
    hp_mask = torch.arange(d_slots) < n_in[:, None]
    rows[0] = 0  # a task without rows gets no network
    x = torch.rand(b, m, d_slots, generator=gen)  # also past rows and inputs: those are ignored
    state = gen.get_state()
    y = evaluate_mlps(draw, x, rows=rows, hp_mask=hp_mask, n_outputs=7, config=cfg, generator=gen)
    gen.set_state(state)
    expected = _reference_outputs(draw, x, rows, n_in, 7, cfg, gen)
    assert len(set(draw.width.tolist())) > 3 and len(set(draw.layers.tolist())) > 2
    assert int(n_in.min()) < int(n_in.max())  # tasks use different numbers of inputs
    torch.testing.assert_close(y.double(), expected, rtol=1e-4, atol=1e-5)
