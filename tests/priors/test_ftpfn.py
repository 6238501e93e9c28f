"""Tests of priors.ftpfn: parameter marginals, batch layout, sequence construction, statistics."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from scipy import stats

from priors.base import Prior
from priors.curves import CurveParams, mean_curve
from priors.ftpfn import (
    FTPFNPrior,
    FTPFNPriorConfig,
    dips,
    geometric_grid,
    late_onset,
    log_time,
    no_decline,
    one_hot_block,
    parameters_from_uniforms,
    repeat_rows,
    stall,
    start_late,
)

KS_P = 1e-3


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _marginal_checks(
    p: CurveParams, y0: float, ymax: float, n: int, max_distance: dict[str, float] | None = None
) -> None:
    """KS test of every parameter against its target marginal; for the names in ``max_distance``
    only a bound on the KS distance (a known, small deviation)."""
    max_distance = max_distance or {}
    checks = {
        "yinf": (p.yinf.flatten(), stats.uniform(y0, ymax - y0).cdf),
        "weight": (p.weights[..., 0].flatten(), stats.beta(1, 3).cdf),
        "alpha_pow": (p.alpha[..., 0].log().flatten(), stats.norm(1, 1).cdf),
        "alpha_exp": (p.alpha[..., 1].log().flatten(), stats.norm(0, 1).cdf),
        "alpha_log": ((p.alpha[..., 2] - 1).log().flatten(), stats.norm(-4, 1).cdf),
        "alpha_hill": (p.alpha[..., 3].log().flatten(), stats.norm(0.5, 0.5).cdf),
        "xsat_max": (p.xsat.amax(-1).log10().flatten(), stats.norm(0, 1).cdf),
        "prec": (p.prec[..., 2].log10().flatten(), stats.uniform(0, 3).cdf),
        "rate": ((1 - p.rate[..., 3]).flatten(), stats.expon().cdf),
        "sigma": (p.sigma.log().flatten(), stats.norm(-5, 1).cdf),
    }
    for name, (x, cdf) in checks.items():
        assert x.numel() == n
        res = stats.kstest(x.double().numpy(), cdf)
        if name in max_distance:
            assert res.statistic < max_distance[name], f"{name}: {res}"
        else:
            assert res.pvalue > KS_P, f"{name}: {res}"


def test_parameters_from_exact_uniforms_have_the_target_marginals():
    n = 20000
    u = torch.rand(n, 23, generator=_gen(0), dtype=torch.float64)
    p = parameters_from_uniforms(u, y0=torch.tensor(0.2), ymax=torch.tensor(0.9))
    _marginal_checks(p, 0.2, 0.9, n)
    # relative saturation times: the slowest basis saturates at Xsat_max
    assert torch.allclose(
        p.xsat.amax(-1), torch.exp(2.302585092994046 * torch.special.ndtri(u[:, 9]))
    )


def test_parameters_through_random_networks_have_the_target_marginals():
    # one configuration per task, so draws are independent; y0 and ymax pinned by the config
    prior = FTPFNPrior(FTPFNPriorConfig(ceiling_prob=0.0))
    n = 800
    cp = prior.sample_parameters(n, 1, generator=_gen(1))
    p = cp.params
    assert p.yinf.shape == (n,)
    # Yinf is U(y0, 1) given y0: its uniform is (yinf - y0) / (1 - y0)
    u_inf = (p.yinf - p.y0) / (1 - p.y0)
    p = dataclasses.replace(p, yinf=u_inf)
    # Each raw output is exactly uniform, but the four basis weights are normalised from four
    # outputs of the same network, which are dependent: their marginal is Beta(1, 3) only up to a
    # KS distance of about 0.035-0.047 (measured on 8000 draws, two seeds). Bound: that plus the
    # 0.1% critical value at n = 800 (1.95 / sqrt(800) = 0.069).
    _marginal_checks(p, 0.0, 1.0, n, max_distance={"weight": 0.12})


def _batch(seed: int = 0, b: int = 6, **kw) -> tuple[FTPFNPrior, object]:
    prior = FTPFNPrior(FTPFNPriorConfig(**kw))
    return prior, prior.sample(b, generator=_gen(seed))


def test_implements_prior_protocol():
    assert isinstance(FTPFNPrior(), Prior)


def test_batch_layout_and_masks():
    prior, batch = _batch()
    b, c, d = batch.configs.shape
    assert d == prior.max_hps == 32
    assert batch.n_tokens == 1000 and batch.batch_size == 6
    assert torch.all((batch.y >= 0) & (batch.y <= 1))
    assert torch.all((batch.t > 0) & (batch.t <= 1))
    n_hps = batch.hp_mask.sum(1)
    assert torch.all((n_hps >= 1) & (n_hps <= 10))
    assert torch.all(batch.hp_mask == (torch.arange(d) < n_hps[:, None]))  # a prefix of slots
    n_curves = batch.curve_mask.sum(1)
    assert torch.all(batch.curve_mask == (torch.arange(c) < n_curves[:, None]))
    assert c == int(n_curves.max())
    mask = batch.curve_mask[:, :, None] & batch.hp_mask[:, None, :]
    assert torch.all(batch.configs[~mask] == 0)
    assert torch.all((batch.configs[mask] > 0) & (batch.configs[mask] < 1))
    assert torch.all(batch.curve < n_curves[:, None])
    for i in range(b):  # every real curve is touched by some token
        assert torch.equal(batch.curve[i].unique(), torch.arange(int(n_curves[i])))


def test_context_is_a_prefix_and_queries_are_later_distinct_steps():
    for seed in range(2):
        _, batch = _batch(seed, b=4)
        for i in range(batch.batch_size):
            for cid in batch.curve[i].unique().tolist():
                pos = (batch.curve[i] == cid).nonzero().flatten()
                t = batch.t[i, pos]
                ctx = pos < batch.n_context
                t_ctx, t_q = t[ctx], t[~ctx]
                if t_ctx.numel():
                    step = t_ctx / t_ctx[0]  # context steps are 1..k: t = k / n
                    expected = torch.arange(1, t_ctx.numel() + 1).float()
                    assert torch.allclose(step, expected, atol=1e-3)
                if t_q.numel():
                    last = t_ctx.max() if t_ctx.numel() else torch.tensor(0.0)
                    assert torch.all(t_q > last + 1e-7)
                    assert t_q.unique().numel() == t_q.numel()


def test_same_seed_same_batch_different_seed_different():
    _, a = _batch(5)
    _, b = _batch(5)
    _, c = _batch(6)
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb
    assert not torch.equal(a.y, c.y[: a.y.shape[0]]) or a.n_context != c.n_context


def test_n_context_override():
    prior = FTPFNPrior()
    assert prior.sample(2, generator=_gen(0), n_context=0).n_context == 0
    assert prior.sample(2, generator=_gen(0), n_context=1000).n_queries == 0
    with pytest.raises(ValueError, match="n_context"):
        prior.sample(2, generator=_gen(0), n_context=1001)


def test_tasks_without_hyperparameters():
    _, batch = _batch(b=4, min_hps=0, max_task_hps=0)
    assert not batch.hp_mask.any()
    assert torch.all(batch.configs == 0)
    assert torch.all((batch.y >= 0) & (batch.y <= 1))
    prior = FTPFNPrior(FTPFNPriorConfig(min_hps=0, max_task_hps=0))
    p = prior.sample_parameters(3, 50, generator=_gen(2)).params
    # all curves of a task share their parameters up to the networks' tiny internal noise
    yinf = p.yinf.view(3, 50)
    assert (yinf.amax(1) - yinf.amin(1)).max() < 0.05


def test_small_task_sizes():
    # fewer configurations than tokens: curves are made long enough to hold every token
    _, batch = _batch(b=3, n_configs=10, seq_len=200)
    assert batch.configs.shape[1] <= 10 and batch.n_tokens == 200
    _, batch = _batch(b=3, n_configs=1, seq_len=5, max_hps=2, max_task_hps=2)
    assert batch.configs.shape == (3, 1, 2)
    # many configurations are allowed
    _, batch = _batch(b=2, n_configs=5000, seq_len=300)
    assert batch.n_tokens == 300


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"max_hps": -1}, "max_hps"),
        ({"min_hps": -1}, "min_hps"),
        ({"max_hps": 4}, "max_task_hps"),
        ({"min_hps": 11}, "min_hps"),
        ({"n_configs": 0}, "n_configs"),
        ({"seq_len": 0}, "seq_len"),
        ({"min_curve_length": 0}, "min_curve_length"),
        ({"max_curve_length": 5, "min_curve_length": 6}, "max_curve_length"),
        ({"n_configs": 2, "max_curve_length": 10}, "seq_len"),
        ({"weight_floor": -1.0}, "weight_floor"),
        ({"ceiling_prob": 2.0}, "ceiling_prob"),
        ({"stall_task_prob": -0.1}, "stall_task_prob"),
        ({"max_stall_share": 1.5}, "max_stall_share"),
        ({"stall_noise_factor": -1.0}, "stall_noise_factor"),
        ({"min_log10_concentration": 0.0}, "max_log10_concentration"),
        ({"categorical_task_prob": 1.5}, "categorical_task_prob"),
        ({"replicate_task_prob": -0.5}, "replicate_task_prob"),
        ({"max_categories": 1}, "max_categories"),
        ({"max_categories": 40, "categorical_task_prob": 0.5}, "max_categories"),
        ({"max_replicates": 1}, "max_replicates"),
        ({"min_log10_seed_std": 0.0}, "max_log10_seed_std"),
        ({"monotone_task_prob": 1.1}, "monotone_task_prob"),
        ({"log_time_task_prob": -0.2}, "log_time_task_prob"),
        ({"min_log10_time_scale": 5.0}, "max_log10_time_scale"),
        ({"dip_task_prob": 2.0}, "dip_task_prob"),
        ({"geometric_grid_prob": 1.5, "log_time_task_prob": 0.3}, "geometric_grid_prob"),
        ({"geometric_grid_prob": 0.5}, "needs log_time_task_prob"),
        ({"late_start_share": 0.3}, "needs stall_task_prob"),
        ({"late_start_on_grid_only": True}, "late_start_on_grid_only"),
        (
            {"late_start_on_grid_only": True, "late_start_share": 0.3, "stall_task_prob": 0.5},
            "late_start_on_grid_only",
        ),
        ({"late_start_share": 1.3, "stall_task_prob": 0.5}, "late_start_share"),
        (
            {"geometric_grid_prob": 0.5, "log_time_task_prob": 0.3, "min_log10_time_scale": 0.0},
            "needs min_log10_time_scale",
        ),
        ({"max_dip_rate": -0.1}, "max_dip_rate"),
    ],
)
def test_invalid_config_raises_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FTPFNPriorConfig(**kwargs)


def test_invalid_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        FTPFNPrior().sample(0, generator=_gen(0))


def test_config_round_trips_through_json():
    config = FTPFNPriorConfig(max_hps=12, n_configs=3000)
    again = FTPFNPriorConfig(**json.loads(json.dumps(config.to_dict())))
    assert again == config


def _final_value_stats(n_tasks: int, seed: int) -> tuple[float, float]:
    p = FTPFNPrior().sample_parameters(n_tasks, 1, generator=_gen(seed)).params
    p = CurveParams(**{f.name: getattr(p, f.name)[:, None] for f in dataclasses.fields(p)})
    y = mean_curve(p, torch.linspace(0.001, 1.0, 1000))  # (n, 1000)
    final = y[:, -1]
    below_peak = ((y.amax(1) - final) > 0.05).float().mean().item()
    return final.mean().item(), below_peak


def test_reference_statistics_small():
    mean, below = _final_value_stats(600, 3)
    assert 0.47 - 0.05 < mean < 0.47 + 0.05
    assert 0.18 < below < 0.42


@pytest.mark.slow
def test_reference_statistics_10k_tasks():
    mean, below = _final_value_stats(10_000, 4)
    assert 0.47 - 0.03 < mean < 0.47 + 0.03
    assert 0.22 < below < 0.40


# ---- stalled runs (our addition to the reference prior) ----------------------------------------


def test_stall_makes_rows_flat_at_their_start_value_and_quieter():
    u = torch.rand(6, 23, generator=_gen(0)).clamp(1e-6, 1 - 1e-6)
    p = parameters_from_uniforms(u, y0=torch.tensor(0.3), ymax=torch.tensor(0.9))
    stalled = torch.tensor([True, False, True, False, False, True])
    q = stall(p, stalled, noise_factor=0.1)
    t = torch.linspace(0.01, 1.0, 50)
    flat = mean_curve(
        CurveParams(**{f.name: getattr(q, f.name)[:, None] for f in dataclasses.fields(q)}), t
    )  # (6, 50)
    assert torch.allclose(flat[stalled], torch.full((3, 50), 0.3), atol=1e-6)
    assert (flat[~stalled].amax(1) - flat[~stalled].amin(1) > 1e-3).all()  # the others still move
    assert torch.allclose(q.sigma[stalled], 0.1 * p.sigma[stalled])
    assert torch.equal(q.sigma[~stalled], p.sigma[~stalled])
    assert torch.equal(q.yinf[~stalled], p.yinf[~stalled])


def test_stall_off_by_default_keeps_the_reference_streams():
    ref = FTPFNPrior().sample(2, generator=_gen(5))
    off = FTPFNPrior(FTPFNPriorConfig(stall_task_prob=0.0, max_stall_share=0.5)).sample(
        2, generator=_gen(5)
    )
    assert torch.equal(ref.y, off.y) and torch.equal(ref.configs, off.configs)
    assert FTPFNPrior().sample_parameters(3, 10, generator=_gen(1)).stalled is None


def test_late_onset_grows_from_the_edge_of_the_stalled_region():
    u0 = torch.tensor([0.05, 0.2, 0.29, 0.3001, 0.35, 0.39, 0.4, 0.7])
    onset = late_onset(u0, torch.tensor(0.4), 0.25)  # stalled below 0.4; late in [0.3, 0.4)
    expected = torch.tensor([0.0, 0.0, 0.0, 0.999, 0.5, 0.1, 0.0, 0.0])
    assert torch.allclose(onset, expected, atol=1e-5)
    assert float(late_onset(torch.tensor([0.1]), torch.tensor(0.0), 0.5)) == 0.0  # no stalling


def test_start_late_holds_the_start_until_the_onset_then_runs_the_whole_curve():
    t = torch.tensor([0.1, 0.5, 0.75, 1.0])
    assert torch.equal(start_late(t, torch.tensor(0.0)), t)
    assert torch.allclose(start_late(t, torch.tensor(0.5)), torch.tensor([0.0, 0.0, 0.5, 1.0]))


def _flat_then_rising(late_start_share: float, seed: int) -> float:
    """Share of curves flat (spread < 0.01) before t = 0.15 that rise by > 0.05 after t = 0.85."""
    cfg = FTPFNPriorConfig(
        **{**_SMALL_MONOTONE, "seq_len": 400},
        stall_task_prob=1.0,
        late_start_share=late_start_share,
    )
    batch = FTPFNPrior(cfg).sample(128, generator=_gen(seed), n_context=400)
    n = late = 0
    for t, y in _curves(batch, batch.t.shape[1]):
        early, end = y[t < 0.15], y[t > 0.85]
        if early.numel() < 3 or end.numel() < 1:
            continue
        n += 1
        flat = float(early.max() - early.min()) < 0.01
        late += flat and float(end.mean() - early.mean()) > 0.05
    return late / n


def test_late_starters_stay_flat_and_quiet_then_rise():
    # Measured over seeds 0-2 (~160 curves each): 0.14-0.20 of the curves with every stalled
    # configuration a late starter, none without (stalled runs stay flat, learners are not flat).
    assert _flat_then_rising(0.0, 0) < 0.01
    assert _flat_then_rising(1.0, 0) > 0.08
    # a late starter is never also stalled (it keeps its own curve)
    prior = FTPFNPrior(FTPFNPriorConfig(stall_task_prob=1.0, late_start_share=0.5))
    cp = prior.sample_parameters(50, 40, generator=_gen(8))
    assert cp.stalled is not None and cp.onset is not None
    assert bool((cp.onset > 0).any()) and not bool((cp.stalled & (cp.onset > 0)).any())


def test_late_starters_on_grid_only_leave_other_tasks_stalled():
    kwargs = {"stall_task_prob": 1.0, "late_start_share": 0.5, "log_time_task_prob": 0.6}
    kwargs |= {"geometric_grid_prob": 0.5}
    shares, region = {}, {}
    for grid_only in (False, True):
        prior = FTPFNPrior(FTPFNPriorConfig(**kwargs, late_start_on_grid_only=grid_only))
        gen = _gen(4)
        tasks = prior.draw_tasks(300, generator=gen)
        rows = torch.full((300,), 40)
        cp = prior.config_parameters(tasks, rows, 40, generator=gen)
        assert cp.onset is not None and cp.stalled is not None and tasks.geometric is not None
        on_grid = tasks.geometric.repeat_interleave(40)  # (R,) one task per 40 packed rows
        late = cp.onset > 0
        shares[grid_only] = (late[on_grid].float().mean(), late[~on_grid].float().mean())
        region[grid_only] = late | cp.stalled
        assert float(region[grid_only].float().mean()) > 0.2
    assert 0.1 < shares[True][0] and abs(shares[True][0] - shares[False][0]) < 1e-6
    assert shares[True][1] == 0.0 and shares[False][1] > 0.05
    # the late or stalled region is the same; off the grid all of it is stalled
    assert torch.equal(region[True], region[False])


def test_stalled_share_per_task_and_smooth_in_the_configuration():
    prior = FTPFNPrior(FTPFNPriorConfig(stall_task_prob=1.0, max_stall_share=0.8, max_task_hps=2))
    gen = _gen(2)
    tasks = prior.draw_tasks(400, generator=gen)
    assert tasks.stall_share is not None
    share = tasks.stall_share
    assert (share >= 0).all() and (share <= 0.8).all()
    assert stats.kstest(share.numpy() / 0.8, "uniform").pvalue > KS_P
    rows = torch.full((400,), 200)
    cp = prior.config_parameters(tasks, rows, 200, generator=gen)
    stalled = cp.stalled.view(400, 200).float()
    # A task's networks are smooth, so within a task the stalled fraction scatters around its
    # share; over tasks the ECDF makes it exact on average, and it follows the share.
    frac = stalled.mean(1)
    assert abs(frac.mean() - share.mean()) < 0.05
    assert torch.corrcoef(torch.stack([frac, share]))[0, 1] > 0.3
    # Smooth in λ: a configuration's nearest neighbour shares its state more often than chance.
    x = cp.configs[:, :, :2]  # (400, 200, 2); padded slots are 0 in every row
    dist = torch.cdist(x, x) + torch.eye(200) * 10
    nn_state = stalled.gather(1, dist.argmin(2))
    mixed = (share > 0.2) & (share < 0.6)
    agree = (nn_state == stalled)[mixed].float().mean()
    p = stalled[mixed].mean()
    assert agree > (p**2 + (1 - p) ** 2) + 0.1
    # Stalled rows are flat at y0; the batch's curves of stalled rows have tiny spread.
    y0 = tasks.y0.repeat_interleave(rows)
    assert torch.equal(cp.params.yinf[cp.stalled], y0[cp.stalled])


def test_stalled_curves_in_a_batch_are_flat():
    prior = FTPFNPrior(
        FTPFNPriorConfig(stall_task_prob=1.0, max_stall_share=0.8, seq_len=400, n_configs=100)
    )
    batch = prior.sample(8, generator=_gen(3))
    # Per curve, the spread of its observed values; stalled curves have noise std ~0.1 x the usual.
    y = batch.y
    spreads = []
    for b in range(8):
        for c in batch.curve[b].unique():
            v = y[b][batch.curve[b] == c]
            if v.numel() >= 5:
                spreads.append(float(v.std()))
    spreads = torch.tensor(spreads)
    # A sizeable share of curves is almost constant (stalled), which the reference prior lacks.
    assert (spreads < 2e-3).float().mean() > 0.1


# ---- many hyperparameters, categoricals, repeated runs (our additions) --------------------------


def test_additions_off_by_default_keep_the_reference_streams():
    ref = FTPFNPrior().sample(2, generator=_gen(5))
    off = FTPFNPrior(
        FTPFNPriorConfig(
            categorical_task_prob=0.0,
            replicate_task_prob=0.0,
            max_replicates=3,
            monotone_task_prob=0.0,
            log_time_task_prob=0.0,
            max_log10_time_scale=6.0,
            geometric_grid_prob=0.0,
            dip_task_prob=0.0,
            max_dip_rate=0.5,
        )
    ).sample(2, generator=_gen(5))
    assert torch.equal(ref.y, off.y) and torch.equal(ref.configs, off.configs)
    tasks = FTPFNPrior().draw_tasks(3, generator=_gen(1))
    assert tasks.cat_size is None and tasks.replicates is None and tasks.monotone is None
    assert tasks.time_scale is None and tasks.dip_rate is None and tasks.geometric is None
    # log-time tasks without a geometric grid draw no grid flags (and so no extra random numbers)
    warped = FTPFNPrior(FTPFNPriorConfig(log_time_task_prob=0.3)).draw_tasks(3, generator=_gen(1))
    assert warped.time_scale is not None and warped.geometric is None


def test_log_uniform_hps_reach_every_slot_and_favour_few():
    prior = FTPFNPrior(FTPFNPriorConfig(log_uniform_hps=True, max_task_hps=32))
    d = prior.draw_tasks(20_000, generator=_gen(0)).n_hps
    assert int(d.min()) == 1 and int(d.max()) == 32
    counts = torch.bincount(d, minlength=33)[1:].float() / d.numel()
    expected = torch.log(torch.arange(2, 34.0) / torch.arange(1, 33.0)) / math.log(33)
    assert torch.allclose(counts, expected, atol=0.01)
    assert (d <= 10).float().mean() > 0.6  # most tasks keep few hyperparameters


def test_one_hot_block_is_one_category_per_row_uniformly():
    u = torch.rand(2, 3000, 6, generator=_gen(1))
    out = one_hot_block(u, torch.tensor([1, 0]), torch.tensor([4, 0]))
    block = out[0, :, 1:5]
    assert torch.equal(block.sum(1), torch.ones(3000))  # exactly one category
    assert set(block.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(out[0, :, [0, 5]], u[0, :, [0, 5]])  # other slots untouched
    assert torch.equal(out[1], u[1])  # no categorical in task 1
    counts = block.sum(0)
    assert stats.chisquare(counts.numpy()).pvalue > KS_P
    # The category follows the block's first uniform: floor(k u).
    assert torch.equal(block.argmax(1), (u[0, :, 1] * 4).floor().long())


def test_repeat_rows_copies_each_group_leader():
    x = torch.arange(2 * 7 * 2, dtype=torch.float32).view(2, 7, 2)
    out = repeat_rows(x, torch.tensor([3, 1]))
    assert torch.equal(out[0, :3], x[0, [0, 0, 0]])
    assert torch.equal(out[0, 3:6], x[0, [3, 3, 3]])
    assert torch.equal(out[0, 6], x[0, 6])
    assert torch.equal(out[1], x[1])


def test_categorical_tasks_hold_valid_one_hot_configurations():
    prior = FTPFNPrior(FTPFNPriorConfig(categorical_task_prob=1.0, max_categories=20))
    gen = _gen(3)
    tasks = prior.draw_tasks(200, generator=gen)
    assert tasks.cat_size is not None and tasks.cat_offset is not None
    k, o = tasks.cat_size, tasks.cat_offset
    assert int(k.min()) == 2 and int(k.max()) == 20
    assert (tasks.n_hps >= k).all() and (o >= 0).all() and (o + k <= tasks.n_hps).all()
    rows = torch.full((200,), 50)
    cp = prior.config_parameters(tasks, rows, 50, generator=gen)
    for b in range(200):
        block = cp.configs[b, :, o[b] : o[b] + k[b]]
        assert torch.equal(block.sum(1), torch.ones(50))
        assert (cp.configs[b, :, tasks.n_hps[b] :] == 0).all()
    # Rows of the same category share their curve (the network sees the same input) when the task
    # has no other hyperparameter; different categories differ.
    pure = torch.nonzero(tasks.n_hps == k).flatten()
    assert pure.numel() > 20
    # Asymptotes relative to the task's range, in which the network's output is uniform.
    rel = (cp.params.yinf.view(200, 50) - tasks.y0[:, None]) / (tasks.ymax - tasks.y0)[:, None]
    within, between = [], []
    for b in pure.tolist():
        cat = cp.configs[b, :, o[b] : o[b] + k[b]].argmax(1)
        within += [rel[b, cat == c].std(unbiased=False) for c in cat.unique()]
        between.append(torch.stack([rel[b, cat == c].mean() for c in cat.unique()]).std())
    # Within a category only the network's tiny pre-activation noise moves the asymptote; some
    # random networks nearly ignore their input (as for continuous hyperparameters), most give the
    # categories clearly different asymptotes.
    assert float(torch.stack(within).median()) < 0.01
    assert float(torch.stack(between).median()) > 0.1


def test_repeated_runs_share_configurations_and_differ_by_the_seed_effect():
    prior = FTPFNPrior(FTPFNPriorConfig(replicate_task_prob=1.0, max_replicates=5, max_task_hps=4))
    gen = _gen(4)
    tasks = prior.draw_tasks(300, generator=gen)
    assert tasks.replicates is not None and tasks.seed_std is not None
    r, s = tasks.replicates, tasks.seed_std
    assert int(r.min()) == 2 and int(r.max()) == 5
    assert (s >= 10**-2.5 - 1e-9).all() and (s <= 10**-0.5 + 1e-9).all()
    rows = torch.full((300,), 40)
    cp = prior.config_parameters(tasks, rows, 40, generator=gen)
    yinf = cp.params.yinf.view(300, 40)
    spread_within, spread_between = [], []
    for b in range(300):
        groups = torch.arange(40) // r[b]
        for g in groups.unique():
            members = groups == g
            assert (cp.configs[b, members] == cp.configs[b, members][0]).all()
        first = cp.configs[b, 0]
        assert (cp.configs[b, r[b] :] != first).any(dim=1).all()  # other groups: other configs
        lead = groups * r[b]
        spread_within.append((yinf[b] - yinf[b, lead]).abs().mean())
        spread_between.append((yinf[b] - yinf[b].roll(1)).abs().mean())
    within, between = torch.stack(spread_within), torch.stack(spread_between)
    assert float(within.mean()) < 0.5 * float(between.mean())
    # The seed spread grows with the task's seed std.
    assert stats.spearmanr(s.numpy(), within.numpy()).statistic > 0.5


def test_preset_prior_batches_fill_many_slots():
    from pfn.train import _preset_prior
    from priors.registry import make_prior

    spec = dict(_preset_prior())
    prior = make_prior(spec.pop("name"), **spec)
    batch = prior.sample(64, generator=_gen(6))
    used = batch.hp_mask.sum(1)
    assert int(used.max()) > 10  # slots the reference prior never trains


def test_no_decline_truncates_the_rate_marginal_to_its_non_negative_part():
    u = torch.rand(20_000, 23, generator=_gen(7)).clamp(1e-6, 1 - 1e-6)
    rows = torch.arange(20_000) % 2 == 0
    v = no_decline(u, rows)
    assert torch.equal(v[~rows], u[~rows])  # other rows untouched
    assert torch.equal(v[:, :18], u[:, :18]) and torch.equal(v[:, 22], u[:, 22])  # other columns
    y0, ymax = torch.tensor(0.0), torch.tensor(1.0)
    rate = parameters_from_uniforms(v, y0=y0, ymax=ymax).rate  # (R, 4)
    free = parameters_from_uniforms(u, y0=y0, ymax=ymax).rate
    assert (free[~rows] < 0).float().mean() > 0.3  # the reference: e^-1 of the rates are negative
    assert (rate[rows] >= 0).all() and (rate[rows] <= 1).all()
    # 1 - Exp(1) conditioned on [0, 1]: the law of the free rates that happen to be non-negative.
    kept = free[~rows][free[~rows] >= 0]
    assert stats.ks_2samp(rate[rows].flatten().numpy(), kept.numpy()).pvalue > KS_P


def test_monotone_tasks_never_turn_back_and_the_others_do():
    prior = FTPFNPrior(FTPFNPriorConfig(monotone_task_prob=0.5, max_task_hps=3))
    gen = _gen(8)
    tasks = prior.draw_tasks(400, generator=gen)
    assert tasks.monotone is not None
    assert 0.4 < float(tasks.monotone.float().mean()) < 0.6
    rows = torch.full((400,), 30)
    cp = prior.config_parameters(tasks, rows, 30, generator=gen)
    t = torch.linspace(0.01, 1.0, 100)
    per_row = {f.name: getattr(cp.params, f.name)[:, None] for f in dataclasses.fields(cp.params)}
    y = mean_curve(CurveParams(**per_row), t).view(400, 30, 100)  # noise-free curves
    drop = (y.cummax(-1).values - y).amax(-1)  # largest fall below the running peak, (400, 30)
    assert float(drop[tasks.monotone].max()) < 1e-4
    assert float((drop[~tasks.monotone] > 0.05).float().mean()) > 0.1


@pytest.mark.parametrize(
    "share",
    [
        "monotone_task_prob",
        "log_time_task_prob",
        "geometric_grid_prob",
        "dip_task_prob",
        "late_start_share",
    ],
)  # fmt: skip
def test_preset_prior_has_our_task_additions(share):
    from pfn.train import _preset_prior

    assert 0 < _preset_prior()["ftpfn"][share] < 1


def test_log_time_maps_the_unit_interval_onto_itself_concavely():
    t = torch.linspace(0.0, 1.0, 1001)
    assert torch.equal(log_time(t, torch.tensor(0.0)), t)  # K = 0: unwarped
    for k in (10.0, 1000.0, 1e4):
        x = log_time(t, torch.tensor(k))
        assert abs(float(x[0])) < 1e-7 and abs(float(x[-1]) - 1.0) < 1e-6
        assert (x.diff() > 0).all() and (x.diff().diff() < 1e-7).all()  # increasing, concave
        assert (x[1:-1] > t[1:-1]).all()
    x = log_time(torch.tensor([0.001, 0.1]), torch.tensor(1000.0))
    assert torch.allclose(
        x, torch.tensor([math.log(2) / math.log(1001), math.log(101) / math.log(1001)])
    )
    # per-task scales broadcast over tokens; a tiny K is close to no warp
    both = log_time(torch.full((2, 3), 0.5), torch.tensor([[0.0], [1e-6]]))
    assert torch.allclose(both, torch.full((2, 3), 0.5), atol=1e-6)


def test_log_time_tasks_draw_their_scale_in_range():
    prior = FTPFNPrior(
        FTPFNPriorConfig(log_time_task_prob=0.3, min_log10_time_scale=1.0, max_log10_time_scale=3.0)
    )
    k = prior.draw_tasks(20_000, generator=_gen(2)).time_scale
    assert k is not None
    warped = k > 0
    assert 0.28 < float(warped.float().mean()) < 0.32
    assert float(k[warped].min()) >= 10.0 - 1e-3 and float(k[warped].max()) <= 1000.0 + 1e-2
    log_k = torch.log10(k[warped]).numpy()
    assert stats.kstest(log_k, "uniform", args=(1.0, 2.0)).pvalue > KS_P


# Small tasks of long monotone curves: a late rise or a fall between steps is then the curves' own
# (or an addition's), not a post-saturation decline.
_SMALL_MONOTONE = dict(max_task_hps=2, n_configs=20, seq_len=200, min_curve_length=50,
                       max_curve_length=200, monotone_task_prob=1.0)  # fmt: skip


def _mean_where(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean of ``y`` over the tokens in ``mask`` (0 where none)."""
    return (y * mask).sum(1) / mask.sum(1).clamp(min=1)


def _rise_after(prior: FTPFNPrior, seed: int) -> float:
    """Mean over tasks of (mean y of tokens at t > 0.9) - (mean y of tokens at t <= 0.1)."""
    batch = prior.sample(256, generator=_gen(seed), n_context=100)
    early, late = batch.t <= 0.1, batch.t > 0.9
    keep = early.any(1) & late.any(1)
    rise = _mean_where(batch.y, late) - _mean_where(batch.y, early)
    return float(rise[keep].mean())


def test_log_time_tasks_do_most_of_their_rise_early():
    base = _SMALL_MONOTONE
    plain = _rise_after(FTPFNPrior(FTPFNPriorConfig(**base)), 3)
    warped = _rise_after(
        FTPFNPrior(
            FTPFNPriorConfig(
                **base, log_time_task_prob=1.0, min_log10_time_scale=4.0, max_log10_time_scale=4.0
            )
        ),
        3,
    )
    # K = 10^4: by t = 0.1 the curve has covered 3/4 of its time axis, against a tenth unwarped
    # (measured over seeds 0-3: plain 0.09-0.10, warped 0.009-0.013).
    assert plain > 0.05 and warped < 0.3 * plain, (plain, warped)


def test_geometric_grid_spaces_steps_by_a_constant_ratio_from_one_over_k_to_one():
    n = torch.tensor([[17], [5], [1]])
    step = torch.tensor([[1, 2, 9, 17], [1, 2, 3, 5], [1, 1, 1, 1]])
    t = geometric_grid(step, n, torch.tensor([[256.0], [10.0], [100.0]]))
    ratio = 256.0 ** (1 / 16)  # sqrt(2)
    assert torch.allclose(t[0], torch.tensor([1 / 256, ratio / 256, 1 / 16, 1.0]))
    assert torch.allclose(t[1], torch.tensor([0.1, 10**-0.75, 10**-0.5, 1.0]))
    assert torch.equal(t[2], torch.ones(4))  # a one-step curve ends at once


def test_geometric_grid_tasks_are_a_share_of_the_log_time_tasks():
    cfg = FTPFNPriorConfig(log_time_task_prob=0.4, geometric_grid_prob=0.5)
    tasks = FTPFNPrior(cfg).draw_tasks(20_000, generator=_gen(6))
    assert tasks.geometric is not None and tasks.time_scale is not None
    assert not bool(tasks.geometric[tasks.time_scale == 0].any())  # only log-time tasks
    assert 0.18 < float(tasks.geometric.float().mean()) < 0.22


def _curves(batch, n_tokens: int):
    """(t, y) of every curve of every task, over the first ``n_tokens`` tokens, in token order."""
    for b in range(batch.t.shape[0]):
        t, y, curve = batch.t[b, :n_tokens], batch.y[b, :n_tokens], batch.curve[b, :n_tokens]
        for c in curve.unique():
            yield t[curve == c], y[curve == c]


def _context_log_ratios(batch) -> list[torch.Tensor]:
    """Per curve with >= 3 context points: the log ratios of consecutive times (steps 1..k)."""
    return [torch.log(t).diff() for t, _ in _curves(batch, batch.n_context) if t.numel() >= 3]


def test_geometric_grid_tasks_are_observed_on_the_grid_and_still_read_on_the_log_axis():
    cfg = FTPFNPriorConfig(
        **_SMALL_MONOTONE,
        log_time_task_prob=1.0,
        geometric_grid_prob=1.0,
        min_log10_time_scale=4.0,
        max_log10_time_scale=4.0,
    )
    batch = FTPFNPrior(cfg).sample(64, generator=_gen(7), n_context=100)
    assert float(batch.t.min()) >= 1e-4 * (1 - 1e-5) and float(batch.t.max()) <= 1.0 + 1e-6
    ratios = _context_log_ratios(batch)
    assert len(ratios) > 20
    for r in ratios:  # one constant ratio per curve (a uniform grid's ratios shrink: (s + 1) / s)
        assert float(r.min()) > 0 and float(r.max() - r.min()) < 1e-3 * float(r.mean()) + 1e-5
    # Read on the log axis, a curve does most of its rise in the first half of its steps
    # (t < K^-1/2 = 0.01); read at t itself it would do most of it in the second half (measured
    # over seeds 0-3: 0.72-0.81 of the rise, against 0.35 without the warp).
    batch = FTPFNPrior(cfg).sample(256, generator=_gen(0), n_context=100)
    start, mid, end = batch.t <= 1.5e-4, (batch.t > 0.008) & (batch.t < 0.0125), batch.t >= 0.99
    keep = start.any(1) & mid.any(1) & end.any(1)
    first = _mean_where(batch.y, mid) - _mean_where(batch.y, start)
    total = _mean_where(batch.y, end) - _mean_where(batch.y, start)
    assert float(first[keep].mean()) > 0.6 * float(total[keep].mean()) > 0.02


def test_dips_pull_a_share_of_observations_towards_the_start():
    y = torch.full((3, 20_000), 0.8)
    y0 = torch.tensor([0.2, 0.2, 0.5])
    rate = torch.tensor([0.0, 0.1, 1.0])
    out = dips(y, y0, rate, generator=_gen(4))
    assert torch.equal(out[0], y[0])  # rate 0: untouched
    moved = out[1] != y[1]
    assert 0.09 < float(moved.float().mean()) < 0.11
    # a dipped value lies between the start and the curve, uniformly
    v = (out[1][moved] - 0.2) / 0.6
    assert float(v.min()) >= 0 and float(v.max()) <= 1
    assert stats.kstest(v.numpy(), "uniform").pvalue > KS_P
    assert float(out[2].min()) >= 0.5 and float(out[2].max()) <= 0.8 and (out[2] < 0.8).all()


def test_dip_tasks_sample_dipped_observations():
    base = _SMALL_MONOTONE
    tasks = FTPFNPrior(FTPFNPriorConfig(dip_task_prob=0.5)).draw_tasks(20_000, generator=_gen(5))
    assert tasks.dip_rate is not None
    assert 0.48 < float((tasks.dip_rate > 0).float().mean()) < 0.52
    assert float(tasks.dip_rate.max()) <= 0.2

    def falls(config: FTPFNPriorConfig) -> float:
        """Share of curve steps that drop by more than 0.1 (monotone curves with small noise)."""
        batch = FTPFNPrior(config).sample(128, generator=_gen(6), n_context=200)
        order = torch.argsort(batch.curve * 2 + batch.t, dim=1)  # by curve, then time
        curve, y = batch.curve.gather(1, order), batch.y.gather(1, order)
        same = curve[:, 1:] == curve[:, :-1]
        return float(((y[:, :-1] - y[:, 1:] > 0.1) & same).sum() / same.sum())

    plain = falls(FTPFNPriorConfig(**base))
    dipped = falls(FTPFNPriorConfig(**base, dip_task_prob=1.0, max_dip_rate=0.2))
    assert plain < 0.01 and dipped > 0.02, (plain, dipped)
