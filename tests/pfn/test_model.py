import math
from dataclasses import replace

import pytest
import torch

from pfn.model import (
    CurveSetInput,
    CurveSetTransformer,
    ModelConfig,
    _attention,
    _curve_stats,
    _distance_columns,
    _LastValueBumps,
    _with_distance_bias,
    upgrade_state_dict,
)

D = 6


def _input(b=2, c=5, n=30, m=7, seed=0) -> CurveSetInput:
    g = torch.Generator().manual_seed(seed)
    configs = torch.zeros(b, c, D)
    configs[..., :3] = torch.rand(b, c, 3, generator=g)
    hp_mask = torch.zeros(b, D, dtype=torch.bool)
    hp_mask[:, :3] = True
    return CurveSetInput(
        configs=configs,
        hp_mask=hp_mask,
        curve_mask=torch.ones(b, c, dtype=torch.bool),
        ctx_curve=torch.randint(0, c, (b, n), generator=g),
        ctx_t=torch.rand(b, n, generator=g).clamp_min(0.01),
        ctx_y=torch.rand(b, n, generator=g),
        ctx_mask=torch.ones(b, n, dtype=torch.bool),
        qry_curve=torch.randint(0, c, (b, m), generator=g),
        qry_t=torch.rand(b, m, generator=g).clamp_min(0.01),
        qry_mask=torch.ones(b, m, dtype=torch.bool),
    )


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "hp_bias"])
def net(request) -> CurveSetTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(
        max_hps=D, d_model=32, n_heads=4, n_layers=2, d_ff=64, n_buckets=20, hp_bias=request.param
    )
    net = CurveSetTransformer(cfg).eval()
    # The last-value head and the distance bias start at zero; give them weight so that the tests
    # below cover them.
    torch.nn.init.normal_(net.bumps.amplitude.weight, std=1.0)
    if request.param:
        for block, _ in net.query_layers:
            torch.nn.init.uniform_(block.hp_scale, 0.01, 0.1)  # λ = 0.5 .. 5
    return net


def _replace(inp: CurveSetInput, **kw) -> CurveSetInput:
    return CurveSetInput(**{**inp.__dict__, **kw})


def test_shape_and_finite(net):
    out = net(_input())
    assert out.shape == (2, 7, 20)
    assert torch.isfinite(out).all()


def test_context_order_does_not_matter(net):
    inp = _input()
    perm = torch.randperm(inp.ctx_t.shape[1], generator=torch.Generator().manual_seed(1))
    shuffled = _replace(
        inp, ctx_curve=inp.ctx_curve[:, perm], ctx_t=inp.ctx_t[:, perm], ctx_y=inp.ctx_y[:, perm]
    )
    torch.testing.assert_close(net(inp), net(shuffled), atol=1e-5, rtol=1e-5)


def test_curve_labels_do_not_matter(net):
    inp = _input()
    perm = torch.tensor([3, 0, 4, 1, 2])  # new label of old curve i is perm[i]
    inv = torch.argsort(perm)
    relabelled = _replace(
        inp,
        configs=inp.configs[:, inv],
        ctx_curve=perm[inp.ctx_curve],
        qry_curve=perm[inp.qry_curve],
    )
    torch.testing.assert_close(net(inp), net(relabelled), atol=1e-5, rtol=1e-5)


def test_queries_are_independent(net):
    inp = _input()
    first = _replace(
        inp, qry_curve=inp.qry_curve[:, :3], qry_t=inp.qry_t[:, :3], qry_mask=inp.qry_mask[:, :3]
    )
    torch.testing.assert_close(net(inp)[:, :3], net(first), atol=1e-5, rtol=1e-5)


def test_padding_is_ignored(net):
    inp = _input(b=1)
    pad_n, pad_c = 4, 2
    padded = _replace(
        inp,
        configs=torch.cat([inp.configs, torch.rand(1, pad_c, D)], 1),
        curve_mask=torch.cat([inp.curve_mask, torch.zeros(1, pad_c, dtype=torch.bool)], 1),
        ctx_curve=torch.cat([inp.ctx_curve, torch.full((1, pad_n), 5)], 1),
        ctx_t=torch.cat([inp.ctx_t, torch.rand(1, pad_n)], 1),
        ctx_y=torch.cat([inp.ctx_y, torch.rand(1, pad_n)], 1),
        ctx_mask=torch.cat([inp.ctx_mask, torch.zeros(1, pad_n, dtype=torch.bool)], 1),
    )
    # Values in padded hyperparameter slots must not leak either.
    padded.configs[..., 4] = 0.77
    torch.testing.assert_close(net(inp), net(padded), atol=1e-5, rtol=1e-5)


def test_context_changes_the_prediction(net):
    inp = _input()
    other = _replace(inp, ctx_y=1.0 - inp.ctx_y)
    assert not torch.allclose(net(inp), net(other), atol=1e-3)


def test_empty_context_and_many_curves(net):
    # No context at all (a cold start) and more than 1000 configurations: no cap anywhere.
    inp = _input(b=1, c=3000, n=0, m=50)
    out = net(inp)
    assert out.shape == (1, 50, 20) and torch.isfinite(out).all()


def test_wrong_hp_slots_rejected(net):
    inp = _input()
    with pytest.raises(ValueError, match="hyperparameter slots"):
        net(_replace(inp, configs=torch.zeros(2, 5, D + 1)))


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"d_model": 30, "n_heads": 4}, "n_heads"),
        ({"n_layers": 0}, "n_layers"),
        ({"max_hps": -1}, "max_hps"),
    ],
)
def test_config_validation(kw, name):
    with pytest.raises(ValueError, match=name):
        ModelConfig(**kw)


def test_config_dict_round_trip():
    cfg = ModelConfig(d_model=64, n_heads=2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"width": 3})


def test_new_curves_do_not_influence_each_other(net):
    # Queries on curves without context (new configurations) must not change any other prediction.
    inp = _input(b=1, c=5, n=30, m=4)
    inp = _replace(inp, ctx_curve=inp.ctx_curve % 3, qry_curve=torch.tensor([[0, 1, 3, 4]]))
    fewer = _replace(
        inp,
        qry_curve=inp.qry_curve[:, :3],
        qry_t=inp.qry_t[:, :3],
        qry_mask=inp.qry_mask[:, :3],
        configs=inp.configs.clone(),
    )
    fewer.configs[:, 4] = 0.123  # the dropped query's curve changes too
    torch.testing.assert_close(net(inp)[:, :3], net(fewer), atol=1e-5, rtol=1e-5)


def _one_task(ctx, qry, c=3) -> CurveSetInput:
    """One task from ctx [(curve, t, y)] and qry [(curve, t)]."""
    return CurveSetInput(
        configs=torch.rand(1, c, D, generator=torch.Generator().manual_seed(0)),
        hp_mask=torch.ones(1, D, dtype=torch.bool),
        curve_mask=torch.ones(1, c, dtype=torch.bool),
        ctx_curve=torch.tensor([[k for k, _, _ in ctx]]),
        ctx_t=torch.tensor([[t for _, t, _ in ctx]]),
        ctx_y=torch.tensor([[y for _, _, y in ctx]]),
        ctx_mask=torch.ones(1, len(ctx), dtype=torch.bool),
        qry_curve=torch.tensor([[k for k, _ in qry]]),
        qry_t=torch.tensor([[t for _, t in qry]]),
        qry_mask=torch.ones(1, len(qry), dtype=torch.bool),
    )


def test_noise_statistics_by_hand():
    # curve 0 given out of time order: sorted values 0.40, 0.45, 0.50, 0.52
    ctx = [(0, 0.3, 0.50), (1, 0.1, 0.70), (0, 0.1, 0.40), (0, 0.4, 0.52), (0, 0.2, 0.45)]
    inp = _one_task(ctx, [(0, 0.5)])
    seg = inp.ctx_curve.reshape(-1)
    stats = _curve_stats(inp, seg, 3 + 1, noise=True)[0]  # (C, 10)
    rough = lambda m: 1.0 + math.log(m + 1e-4) / math.log(1e4)  # noqa: E731
    expected = [
        # seen, log1p(n)/7, last t, last y, max, mean, min, previous y, roughness 1, 2
        [1, math.log(5) / 7, 0.4, 0.52, 0.52, 0.4675, 0.40, 0.50, rough(0.04), rough(0.015)],
        [1, math.log(2) / 7, 0.1, 0.70, 0.70, 0.70, 0.70, 0.70, rough(0.0), rough(0.0)],
        [0] * 10,  # no context
    ]
    torch.testing.assert_close(stats, torch.tensor(expected), atol=1e-5, rtol=0)
    assert _curve_stats(inp, seg, 4, noise=False).shape == (1, 3, 7)


def test_last_value_bumps_by_hand():
    k = 100
    bumps = _LastValueBumps(d_model=4, n_buckets=k)
    with torch.no_grad():
        bumps.amplitude.bias[0] = 5.0  # the narrowest bump, upper side only
        bumps.amplitude.bias[len(bumps.widths) + 4] = -2.0  # the widest bump, lower side only
    logits = torch.zeros(1, 3, k)
    q = torch.zeros(1, 3, 4)
    y_last = torch.tensor([[0.505, 0.995, 0.5]])
    observed = torch.tensor([[True, True, False]])
    out = bumps(logits, q, y_last, observed)[0]
    centres = torch.arange(k)
    for i, k0 in enumerate([50, 99]):
        o = (centres - k0) / k
        upper = 5.0 * torch.exp(-((o / 0.002) ** 2)) * (o >= 0)
        lower = -2.0 * torch.exp(-((o / 0.04) ** 2)) * (o < 0) * (o.abs() <= bumps.w / k + 1e-9)
        torch.testing.assert_close(out[i], upper + lower, atol=1e-6, rtol=0)
    assert out[2].abs().max() == 0  # a curve without context gets no bump


def test_upgrade_adds_the_head_without_changing_the_output():
    torch.manual_seed(1)
    old_cfg = ModelConfig(
        max_hps=D, d_model=32, n_heads=4, n_layers=1, d_ff=32, n_buckets=20, last_value_head=False
    )
    old = CurveSetTransformer(old_cfg).eval()
    new_cfg = replace(old_cfg, last_value_head=True)
    new = CurveSetTransformer(new_cfg).eval()
    new.load_state_dict(upgrade_state_dict(old.state_dict(), old_cfg, new_cfg))
    inp = _input()
    torch.testing.assert_close(new(inp), old(inp), atol=1e-5, rtol=0)  # summation order only
    with pytest.raises(ValueError, match="cannot upgrade"):
        upgrade_state_dict(old.state_dict(), old_cfg, replace(new_cfg, d_model=64))
    with pytest.raises(ValueError, match="cannot upgrade"):
        upgrade_state_dict(new.state_dict(), new_cfg, old_cfg)


def test_upgrade_adds_the_distance_bias_without_changing_the_output():
    torch.manual_seed(2)
    old_cfg = ModelConfig(max_hps=D, d_model=32, n_heads=4, n_layers=1, d_ff=32, n_buckets=20)
    old = CurveSetTransformer(old_cfg).eval()
    torch.nn.init.normal_(old.bumps.amplitude.weight, std=1.0)
    new_cfg = replace(old_cfg, hp_bias=True)
    new = CurveSetTransformer(new_cfg).eval()
    new.load_state_dict(upgrade_state_dict(old.state_dict(), old_cfg, new_cfg))
    inp = _input()
    torch.testing.assert_close(new(inp), old(inp), atol=1e-5, rtol=0)
    # Both additions at once, from the format-1 network.
    v1_cfg = replace(old_cfg, last_value_head=False)
    v1 = CurveSetTransformer(v1_cfg).eval()
    new.load_state_dict(upgrade_state_dict(v1.state_dict(), v1_cfg, new_cfg))
    torch.testing.assert_close(new(inp), v1(inp), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="cannot upgrade"):
        upgrade_state_dict(new.state_dict(), new_cfg, old_cfg)  # dropping it is not an upgrade


def test_distance_bias_columns_add_exactly_minus_lambda_squared_distance():
    g = torch.Generator().manual_seed(3)
    b, h, n, s, e, d = 2, 3, 5, 4, 8, 6
    q, k = torch.randn(b, h, n, e, generator=g), torch.randn(b, h, s + 1, e, generator=g)
    x_cfg, m_cfg = torch.rand(b, n, d, generator=g), torch.rand(b, s, d, generator=g)
    lam = torch.tensor([0.0, 1.0, 7.5])
    scale = 1.0 / math.sqrt(e)
    q2, k2 = _with_distance_bias(q, k, _distance_columns(x_cfg, m_cfg), lam, scale)
    logits = scale * q2 @ k2.transpose(-1, -2)  # (B, H, L, S+1)
    expected = scale * q @ k.transpose(-1, -2)
    expected[..., 1:] -= lam[None, :, None, None] * torch.cdist(x_cfg, m_cfg)[:, None] ** 2
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)  # the sink (key 0): no bias


def test_distance_bias_makes_queries_read_their_own_configuration():
    """With a large λ the query blocks read only the curves of the query's configuration (the
    curve blocks, which have no bias, still mix the far curves into every latent)."""
    torch.manual_seed(4)
    cfg = ModelConfig(max_hps=D, d_model=32, n_heads=4, n_layers=1, d_ff=32, n_buckets=20,
                      hp_bias=True)  # fmt: skip
    net = CurveSetTransformer(cfg).eval()
    inp = _input(b=1, c=4, n=40, m=6, seed=5)
    # Curves 0 and 1 share a configuration; curves 2 and 3 are far from it.
    configs = inp.configs.clone()
    configs[0, 1] = configs[0, 0]
    configs[0, 2:, :3] = configs[0, 0, :3] + 0.5
    ctx_curve = torch.arange(40)[None] % 4
    qry_curve = torch.zeros(1, 6, dtype=torch.long)
    base = _replace(inp, configs=configs, ctx_curve=ctx_curve, qry_curve=qry_curve)
    other = _replace(base, ctx_y=torch.where(ctx_curve >= 2, 1.0 - base.ctx_y, base.ctx_y))
    mate = _replace(base, ctx_y=torch.where(ctx_curve == 1, 1.0 - base.ctx_y, base.ctx_y))

    def change(a: CurveSetInput, b: CurveSetInput) -> float:
        with torch.no_grad():
            return float((net(a) - net(b)).abs().max())

    far_before = change(base, other)
    for block, _ in net.query_layers:
        torch.nn.init.constant_(block.hp_scale, 4.0)  # λ = 200
    assert change(base, other) < 0.6 * far_before  # far curves are read less
    assert change(base, mate) > change(base, other)  # the repeated run still is


def test_a_task_alone_gets_what_it_gets_in_a_batch(net):
    """One task takes the inference path (only observed curves as keys, their configurations
    picked for the distance bias); in a batch the keys stay dense and masked."""
    inp = _input(b=3, c=6, n=20, m=5, seed=7)
    # Curve 0 has no context in any task: a new configuration, never a key.
    qry = torch.tensor([0, 1, 0, 3, 5]).expand(3, 5)
    inp = _replace(inp, ctx_curve=1 + inp.ctx_curve % 5, qry_curve=qry)
    with torch.no_grad():
        batch = net(inp)
        for b in range(3):
            alone = net(CurveSetInput(**{k: v[b : b + 1] for k, v in inp.__dict__.items()}))
            torch.testing.assert_close(alone[0], batch[b], atol=1e-4, rtol=0)


def test_isolated_curves_are_encoded_as_tasks_of_their_own(net):
    """encode(isolated=True) of C curves in one task gives each curve what it gets as the only
    curve of a task of its own (B = C tasks, padded); a curve without points included."""
    g = torch.Generator().manual_seed(11)
    c, lengths = 5, [7, 1, 0, 12, 3]
    t = [torch.rand(n, generator=g).clamp_min(0.01) for n in lengths]
    y = [torch.rand(n, generator=g) for n in lengths]
    cfg = torch.zeros(1, c, D)
    cfg[..., :3] = torch.rand(1, c, 3, generator=g)
    hp_mask = torch.zeros(1, D, dtype=torch.bool)
    hp_mask[:, :3] = True

    def one(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.ones(shape, dtype=torch.bool)

    shared = CurveSetInput(
        configs=cfg, hp_mask=hp_mask, curve_mask=one((1, c)),
        ctx_curve=torch.repeat_interleave(torch.arange(c), torch.tensor(lengths))[None],
        ctx_t=torch.cat(t)[None], ctx_y=torch.cat(y)[None], ctx_mask=one((1, sum(lengths))),
        qry_curve=torch.zeros(1, 1, dtype=torch.long), qry_t=torch.ones(1, 1), qry_mask=one((1, 1)),
    )  # fmt: skip
    n = max(lengths)

    def pad(xs: list[torch.Tensor], value: float) -> torch.Tensor:  # (C, n)
        return torch.stack([torch.cat([x, torch.full((n - x.numel(),), value)]) for x in xs])

    alone = CurveSetInput(
        configs=cfg.transpose(0, 1), hp_mask=hp_mask.expand(c, -1), curve_mask=one((c, 1)),
        ctx_curve=torch.zeros(c, n, dtype=torch.long), ctx_t=pad(t, 0.5), ctx_y=pad(y, 0.0),
        ctx_mask=torch.arange(n)[None] < torch.tensor(lengths)[:, None],
        qry_curve=torch.zeros(c, 1, dtype=torch.long), qry_t=torch.ones(c, 1),
        qry_mask=one((c, 1)),
    )  # fmt: skip
    with torch.no_grad():
        iso, ref = net.encode(shared, isolated=True), net.encode(alone)
        torch.testing.assert_close(iso.z[0], ref.z[:, 0], atol=1e-5, rtol=0)
        torch.testing.assert_close(iso.stats[0], ref.stats[:, 0], atol=0, rtol=0)
        assert iso.observed[0].tolist() == [True, True, False, True, True]
        # without isolation the curves read each other
        assert not torch.allclose(net.encode(shared).z[0], ref.z[:, 0], atol=1e-3)


def test_encode_skips_only_the_unread_token_update_of_the_last_layer(net, monkeypatch):
    """encode() leaves the last layer's tokens alone (nothing reads them): its latents equal
    those of running every layer in full."""
    import pfn.model as model_module

    inp = _input(b=2, c=5, n=30, seed=4)
    with torch.no_grad():
        fast = net.encode(inp)
        layer_forward = model_module._Layer.forward
        calls = []

        def full(self, *args, **kwargs):
            calls.append(kwargs.get("tokens", True))
            return layer_forward(self, *args, **{**kwargs, "tokens": True})

        monkeypatch.setattr(model_module._Layer, "forward", full)
        slow = net.encode(inp)
    assert calls == [True] * (len(net.layers) - 1) + [False]
    torch.testing.assert_close(fast.z, slow.z, atol=0, rtol=0)


def test_attention_pads_head_sizes_without_changing_the_result(monkeypatch):
    """_attention with query/key heads wider than the values and not a multiple of 8 (the
    distance bias) equals softmax(scale q kᵀ) v computed directly, with and without a mask, and
    hands the fused kernel one head size, a multiple of 8."""
    import pfn.model as model_module

    sdpa = model_module.F.scaled_dot_product_attention
    widths = []

    def spy(q, k, v, **kwargs):
        widths.append((q.shape[-1], k.shape[-1], v.shape[-1]))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", spy)
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 3, 9, 13, generator=g), torch.randn(2, 3, 6, 13, generator=g)
    v = torch.randn(2, 3, 6, 5, generator=g)
    mask = torch.rand(2, 1, 1, 6, generator=g) > 0.4
    mask[..., 0] = True
    logits = 0.3 * q @ k.transpose(-1, -2)
    for m in (None, mask):
        ref = logits if m is None else logits.masked_fill(~m, -torch.inf)
        expected = torch.softmax(ref, dim=-1) @ v
        torch.testing.assert_close(_attention(q, k, v, m, 0.3), expected, atol=1e-5, rtol=0)
    assert widths == [(16, 16, 16)] * 2


def test_decode_reads_only_configurations_and_queries(net):
    """forward = decode(encode); decode ignores the context fields, so an encoding can be paired
    with an input that carries only the configurations and the queries."""
    inp = _input(b=2, c=5, n=30, m=7, seed=3)
    with torch.no_grad():
        enc = net.encode(inp)
        full = net(inp)
        dummy = _replace(
            inp,
            ctx_curve=torch.zeros(2, 1, dtype=torch.long),
            ctx_t=torch.ones(2, 1),
            ctx_y=torch.zeros(2, 1),
            ctx_mask=torch.zeros(2, 1, dtype=torch.bool),
        )
        torch.testing.assert_close(net.decode(dummy, enc), full, atol=0, rtol=0)
        assert not torch.allclose(net.decode(inp, net.encode(dummy)), full, atol=1e-3)
        with pytest.raises(ValueError, match="differ in tasks or curves"):
            net.decode(_input(b=1, c=5, seed=3), enc)


def test_tied_times_are_read_in_the_same_order_alone_and_in_a_batch(net):
    """The noise statistics sort points by (curve, time) stably: points of a curve at one time
    keep their input order, wherever the curve sits in a batch (an unstable sort of this many
    ties reorders them)."""
    g = torch.Generator().manual_seed(5)
    n = 400
    t = (torch.randint(1, 5, (1, n), generator=g) / 4.0).float()  # four distinct times
    alone = _replace(_input(b=1, c=2, n=n, m=2, seed=5), ctx_t=t)
    other = _input(b=1, c=2, n=n, m=2, seed=6)
    batch = CurveSetInput(**{k: torch.cat([getattr(other, k), getattr(alone, k)])
                             for k in alone.__dict__})  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(net(batch)[1], net(alone)[0], atol=1e-5, rtol=0)
