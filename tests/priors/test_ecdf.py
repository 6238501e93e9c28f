"""Tests of priors.ecdf: the shipped table and the raw -> uniform map."""

from __future__ import annotations

import torch

from priors.ecdf import estimate_table, load_table, to_uniform


def test_table_maps_its_quantiles_to_their_levels():
    table = load_table()
    assert torch.all(table.quantiles[1:] > table.quantiles[:-1])
    u = to_uniform(table.quantiles, table)
    assert torch.allclose(u, table.levels, atol=1e-6)


def test_uniform_is_monotone_and_inside_open_interval():
    table = load_table()
    raw = torch.linspace(-100, 100, 9999)
    u = to_uniform(raw.view(101, 99), table).flatten()
    assert torch.all(u[1:] >= u[:-1])
    assert u.min() > 0 and u.max() < 1
    assert u[0] == table.levels[0] and u[-1] == table.levels[-1]


def test_regeneration_with_fewer_networks_matches_shipped_table():
    shipped = load_table()
    small = estimate_table(n_networks=400, rows_per_network=32, n_quantiles=64)
    u = to_uniform(small.quantiles, shipped)
    assert (u - small.levels).abs().max() < 0.04


def test_random_mlp_outputs_become_uniform():
    table = load_table()
    small = estimate_table(n_networks=300, rows_per_network=8, n_quantiles=16, seed=7)
    # quantiles of an independent sample land on their levels
    assert (to_uniform(small.quantiles, table) - small.levels).abs().max() < 0.05


def test_grid_lookup_matches_binary_search():
    table = load_table()
    q, lv = table.quantiles, table.levels
    raw = torch.cat([torch.randn(20000, generator=torch.Generator().manual_seed(0)) * 3, q])
    i = torch.searchsorted(q, raw).clamp(1, q.numel() - 1)
    frac = ((raw - q[i - 1]) / (q[i] - q[i - 1])).clamp(0.0, 1.0)
    expected = lv[i - 1] + frac * (lv[i] - lv[i - 1])
    assert torch.equal(to_uniform(raw, table), expected)
