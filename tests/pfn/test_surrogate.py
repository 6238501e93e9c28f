"""Tests for pfn/surrogate.py on a tiny network with random weights (the API, not its accuracy)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from pfn.bar_distribution import BarDistribution, uniform_borders
from pfn.checkpoint import Checkpoint, save_checkpoint
from pfn.forecast import BarForecast
from pfn.model import CurveSetInput, CurveSetTransformer, ModelConfig
from pfn.scaling import MetricScaler
from pfn.surrogate import Curve, RawRun, Surrogate

K = 50


def tiny_model(seed: int = 0) -> CurveSetTransformer:
    torch.manual_seed(seed)
    return CurveSetTransformer(
        ModelConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, n_query_layers=1, n_buckets=K)
    )


@pytest.fixture(scope="module")
def sur() -> Surrogate:
    return Surrogate(tiny_model(), BarDistribution(uniform_borders(K)))


CTX = [
    Curve([0.1, 0.5], t=[0.1, 0.2, 0.3], y=[0.2, 0.35, 0.4]),
    Curve([0.9, 0.2], t=[0.1], y=[0.1]),
    Curve([0.4, 0.7], t=[0.1, 0.2], y=[0.5, 0.6]),
]


# ---- Curve validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"t": [0.1, 0.2], "y": [0.3, np.nan]}, r"Curve\.y contains NaN"),
        ({"t": [0.1, 0.2], "y": [0.3, np.inf]}, r"Curve\.y contains NaN or inf"),
        ({"t": [0.0, 0.2], "y": [0.3, 0.4]}, r"Curve\.t must lie in \(0, 1\]"),
        ({"t": [0.5, 1.5]}, r"Curve\.t must lie in \(0, 1\]"),
        ({"t": [np.nan]}, r"Curve\.t contains NaN"),
        ({"t": [0.1, 0.2], "y": [0.3, 1.2]}, r"Curve\.y must lie in \[0, 1\]"),
        ({"t": [0.1, 0.2], "y": [0.3]}, r"Curve\.y has 1 values but Curve\.t has 2"),
        ({"t": [0.1], "y": ["a"]}, r"Curve\.y must be numeric"),
        ({"t": [[0.1]]}, r"Curve\.t must be 1-D"),
    ],
)
def test_curve_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Curve([0.5], **kwargs)


def test_curve_rejects_bad_config():
    with pytest.raises(ValueError, match=r"Curve\.config must lie in \[0, 1\]"):
        Curve([0.5, 1.5], t=[1.0])
    with pytest.raises(ValueError, match=r"Curve\.config contains NaN"):
        Curve([np.nan], t=[1.0])


def test_curve_converts_and_freezes():
    c = Curve([], t=0.5)
    assert c.config.shape == (0,) and c.t.shape == (1,) and c.t.dtype == np.float64
    with pytest.raises(ValueError):
        c.t[0] = 0.7  # read-only
    assert Curve([0.25, 1], t=[1.0]).key == (0.25, 1.0)


# ---- predict: errors ----------------------------------------------------------------------------


def test_predict_errors(sur):
    with pytest.raises(ValueError, match="query is empty"):
        sur.predict(CTX, [])
    with pytest.raises(ValueError, match="same length"):
        sur.predict(CTX, [Curve([0.1, 0.5, 0.3], t=[1.0])])
    with pytest.raises(ValueError, match="max_hps=32"):
        sur.predict([], [Curve(np.full(33, 0.5), t=[1.0])])
    with pytest.raises(ValueError, match="context curve 0 has no y"):
        sur.predict([Curve([0.1, 0.5], t=[0.2])], [Curve([0.1, 0.5], t=[1.0])])
    with pytest.raises(ValueError, match="query curve 0 has y"):
        sur.predict(CTX, [CTX[0]])
    with pytest.raises(ValueError, match="query curve 0 has no t"):
        sur.predict(CTX, [Curve([0.1, 0.5], t=[])])
    twins = [CTX[0], Curve(CTX[0].config, t=[0.1], y=[0.9])]
    with pytest.raises(ValueError, match="shared by several context curves"):
        sur.predict(twins, [Curve(CTX[0].config, t=[1.0])])


# ---- predict: behaviour -------------------------------------------------------------------------


def test_prediction_shapes_and_consistency(sur):
    (p,) = sur.predict(CTX, [Curve([0.1, 0.5], t=[0.5, 0.8, 1.0])])
    assert p.logits.shape == (3, K)
    np.testing.assert_array_equal(p.t, [0.5, 0.8, 1.0])
    for out in (
        p.mean(),
        p.variance(),
        p.quantile(0.5),
        p.cdf(0.5),
        p.log_prob(0.5),
        p.pi(0.5),
        p.ei(0.5),
        p.ucb(),
    ):
        assert isinstance(out, np.ndarray) and out.shape == (3,)
        assert np.isfinite(out).all()
    draws = p.sample(7, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (7, 3) and ((draws >= 0) & (draws <= 1)).all()
    np.testing.assert_array_equal(draws, p.sample(7, generator=torch.Generator().manual_seed(0)))
    assert (p.quantile(0.05) <= p.quantile(0.5)).all() and (p.quantile(0.5) <= p.ucb(q=0.95)).all()
    np.testing.assert_allclose(p.cdf(p.quantile(0.3)), 0.3, atol=1e-5)
    np.testing.assert_allclose(p.pi(0.4), 1 - p.cdf(0.4), atol=1e-5)
    np.testing.assert_allclose(
        p.quantile([0.1, 0.5, 0.9]),
        [p.quantile(q)[i] for i, q in enumerate([0.1, 0.5, 0.9])],
        atol=1e-6,
    )


def test_predict_matches_a_hand_built_input(sur):
    new = Curve([0.3, 0.3], t=[0.5, 1.0])
    preds = sur.predict(CTX, [Curve([0.4, 0.7], t=[1.0]), new])
    inp = CurveSetInput(
        configs=torch.nn.functional.pad(
            torch.tensor([[0.1, 0.5], [0.9, 0.2], [0.4, 0.7], [0.3, 0.3]]), (0, 30)
        )[None],
        hp_mask=(torch.arange(32) < 2)[None],
        curve_mask=torch.ones(1, 4, dtype=torch.bool),
        ctx_curve=torch.tensor([[0, 0, 0, 1, 2, 2]]),
        ctx_t=torch.tensor([[0.1, 0.2, 0.3, 0.1, 0.1, 0.2]]),
        ctx_y=torch.tensor([[0.2, 0.35, 0.4, 0.1, 0.5, 0.6]]),
        ctx_mask=torch.ones(1, 6, dtype=torch.bool),
        qry_curve=torch.tensor([[2, 3, 3]]),
        qry_t=torch.tensor([[1.0, 0.5, 1.0]]),
        qry_mask=torch.ones(1, 3, dtype=torch.bool),
    )
    with torch.no_grad():
        context_view = sur.model(inp)[0].log_softmax(-1)  # (3, K)
    # the single-curve view: the query alone, its own points only, no hyperparameters; the new
    # curve has no points to read alone, so its predictive is the context view
    single_view = _single_by_hand(sur.model, [0.1, 0.2], [0.5, 0.6], 1.0).log_softmax(-1)
    w = sur.single_weight
    assert 0 < w < 1
    mixed = ((1 - w) * context_view[:1].exp() + w * single_view.exp()).log()
    torch.testing.assert_close(preds[0].logits.log_softmax(-1), mixed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        preds[1].logits.log_softmax(-1), context_view[1:], atol=1e-5, rtol=1e-5
    )


def _single_by_hand(model, t, y, qry_t) -> torch.Tensor:
    """(1, K) logits of one curve read alone (one masked dummy point when it has none)."""
    n = max(len(t), 1)
    return model(
        CurveSetInput(
            configs=torch.zeros(1, 1, 32),
            hp_mask=torch.zeros(1, 32, dtype=torch.bool),
            curve_mask=torch.ones(1, 1, dtype=torch.bool),
            ctx_curve=torch.zeros(1, n, dtype=torch.long),
            ctx_t=torch.tensor([t or [0.5]]),
            ctx_y=torch.tensor([y or [0.0]]),
            ctx_mask=torch.tensor([[bool(t)] * n]),
            qry_curve=torch.zeros(1, 1, dtype=torch.long),
            qry_t=torch.tensor([[qry_t]]),
            qry_mask=torch.ones(1, 1, dtype=torch.bool),
        )
    )[0].detach()


def test_single_curve_view_of_a_shuffled_context_matches_curve_by_curve(sur):
    rng = np.random.default_rng(0)
    n_points = [7, 0, 3, 1, 5, 2]  # per curve; curve 1 has none
    points = [(np.sort(rng.random(k)) * 0.9 + 0.05, rng.random(k)) for k in n_points]
    curve = np.concatenate([np.full(k, c) for c, k in enumerate(n_points)])
    order = rng.permutation(curve.size)
    qry_curve, qry_t = np.array([5, 0, 1, 4, 0, 3, 2]), np.array([1.0, 0.9, 0.5, 1.0, 1.0, 0.7, 1])
    task = dict(
        ctx_curve=curve[order],
        ctx_t=np.concatenate([t for t, _ in points])[order],
        ctx_y=np.concatenate([y for _, y in points])[order],
        qry_curve=qry_curve,
        qry_t=qry_t,
    )
    configs = rng.random((6, 2))
    fc = sur.forecast(configs, **task, single_weight=1.0).logits.softmax(-1)
    context = sur.forecast(configs, **task, single_weight=0.0).logits.softmax(-1)
    batched = sur.forecast_single([points[c] for c in qry_curve], qry_t).logits.softmax(-1)
    # independently: each query's curve as a task of one curve, read by the context view alone
    for j, (c, t) in enumerate(zip(qry_curve, qry_t, strict=True)):
        ts, ys = points[c]
        alone = sur.forecast(np.zeros((1, 0)), ctx_curve=np.zeros(ts.size), ctx_t=ts, ctx_y=ys,
                             qry_curve=[0], qry_t=[t], single_weight=0.0)  # fmt: skip
        expected = alone.logits.softmax(-1)[0]
        torch.testing.assert_close(batched[j], expected, atol=1e-5, rtol=1e-5)
        # the predictive at w = 1: the single-curve view where the curve has points to read
        # alone, the context view where it has none (curve 1)
        expected = expected if n_points[c] else context[j]
        torch.testing.assert_close(fc[j], expected, atol=1e-5, rtol=1e-5)


def test_single_weight_mixes_the_two_views(sur):
    cfg = np.array([[0.1, 0.5], [0.9, 0.2], [0.4, 0.7], [0.3, 0.3]])
    arrays = dict(  # the context points of the curves interleaved, out of time order
        ctx_curve=[2, 0, 1, 0, 2, 0, 0, 0],
        ctx_t=[0.2, 0.3, 0.1, 0.1, 0.1, 0.2, 0.5, 0.4],
        ctx_y=[0.6, 0.4, 0.1, 0.2, 0.5, 0.35, 0.45, 0.3],
        # repeated (curve, time) pairs, a curve without points, one curve at three times
        qry_curve=[0, 0, 0, 1, 2, 3, 3, 0],
        qry_t=[0.5, 1.0, 0.5, 1.0, 0.7, 1.0, 0.4, 0.9],
    )
    context = sur.forecast(cfg, **arrays, single_weight=0.0).logits.log_softmax(-1)
    single = sur.forecast(cfg, **arrays, single_weight=1.0).logits.exp()
    # the single-curve view, query by query, with its own curve's points (batched: one row per
    # curve with points, each (curve, time) asked once)
    points = {
        0: ([0.1, 0.2, 0.3, 0.4, 0.5], [0.2, 0.35, 0.4, 0.3, 0.45]),
        1: ([0.1], [0.1]),
        2: ([0.1, 0.2], [0.5, 0.6]),
    }
    for j, (c, t) in enumerate(zip(arrays["qry_curve"], arrays["qry_t"], strict=True)):
        if c in points:  # curve 3 has no points to read alone: the context view
            alone = sur.forecast_single([points[c]], [t]).logits.softmax(-1)[0]
        else:
            alone = context[j].exp()
        torch.testing.assert_close(single[j], alone, atol=1e-5, rtol=1e-5)
    for w in (0.3, sur.single_weight):
        mixed = sur.forecast(cfg, **arrays, single_weight=w).logits.softmax(-1)
        torch.testing.assert_close(
            mixed, (1 - w) * context.exp() + w * single, atol=1e-6, rtol=1e-5
        )
    default = sur.forecast(cfg, **arrays).logits.softmax(-1)
    w = sur.single_weight
    # the views kept apart: the single view holds each distinct (curve, time) once, and mixes
    # into the same predictive
    views = sur.forecast_views(cfg, **arrays)
    assert views.weight == w and views.single.logits.shape[0] == 5  # of 8 queries
    assert views.single_index[0] == views.single_index[2]  # curve 0 at t = 0.5, twice
    assert views.single_index[5] == views.single_index[6] == -1  # curve 3 has no points
    torch.testing.assert_close(views.context.logits.log_softmax(-1), context)
    torch.testing.assert_close(views.mixed().logits.softmax(-1), default)
    np.testing.assert_allclose(views.ei(0.4), sur.forecast(cfg, **arrays).ei(0.4), rtol=1e-4)
    assert sur.forecast_views(cfg, **arrays, single_weight=0.0).single is None
    # an optimiser's decision: 50 new configurations read the context view alone
    new = sur.forecast_views(
        np.random.default_rng(0).uniform(size=(51, 2)), ctx_curve=[0, 0], ctx_t=[0.1, 0.2],
        ctx_y=[0.3, 0.4], qry_curve=np.arange(51), qry_t=np.full(51, 0.3),
    )  # fmt: skip
    assert new.single.logits.shape[0] == 1 and (new.single_index[1:] == -1).all()
    torch.testing.assert_close(default, (1 - w) * context.exp() + w * single, atol=1e-6, rtol=1e-5)
    # a surrogate built with weight 0 gives the context view by default (one pass, no mixture)
    plain = Surrogate(sur.model, sur.distribution, single_weight=0.0)
    torch.testing.assert_close(plain.forecast(cfg, **arrays).logits.log_softmax(-1), context)
    assert not torch.allclose(default.log(), context, atol=1e-3)
    # the weight is validated wherever it is set
    with pytest.raises(ValueError, match="single_weight must lie in"):
        plain.single_weight = float("nan")
    with pytest.raises(ValueError, match="single_weight must lie in"):
        sur.mix_single_view(
            torch.zeros(1, K),
            1.5,
            ctx_curve=np.zeros(1),
            ctx_t=np.ones(1),
            ctx_y=np.ones(1),
            qry_curve=np.zeros(1),
            qry_t=np.ones(1),
        )
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="single_weight must lie in"):
            sur.forecast(cfg, **arrays, single_weight=bad)
        with pytest.raises(ValueError, match="single_weight must lie in"):
            Surrogate(sur.model, sur.distribution, single_weight=bad)


def test_predictions_do_not_depend_on_context_order(sur):
    query = [Curve([0.1, 0.5], t=[0.5, 1.0]), Curve([0.6, 0.6], t=[1.0]), Curve([0.9, 0.2], t=[1])]
    a = sur.predict(CTX, query)
    b = sur.predict([CTX[2], CTX[0], CTX[1]], query)
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa.logits, pb.logits, atol=1e-5, rtol=1e-5)


def test_query_times_are_independent(sur):
    # The same curves queried at more times: the shared times get the same predictions.
    one = sur.predict(CTX, [Curve([0.1, 0.5], t=[1.0]), Curve([0.7, 0.5], t=[0.4])])
    many = sur.predict(CTX, [Curve([0.1, 0.5], t=[0.5, 1.0]), Curve([0.7, 0.5], t=[0.4, 0.9])])
    torch.testing.assert_close(one[0].logits[0], many[0].logits[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one[1].logits[0], many[1].logits[0], atol=1e-5, rtol=1e-5)


def test_a_query_with_a_context_config_is_that_curve(sur):
    seen = sur.predict(CTX, [Curve([0.1, 0.5], t=[1.0])])[0]
    unseen = sur.predict(CTX[1:], [Curve([0.1, 0.5], t=[1.0])])[0]
    assert not torch.allclose(seen.logits, unseen.logits, atol=1e-4)
    # the query reads curve 0 itself (its points), not a new curve of the same config
    configs = np.array([c.config for c in CTX])
    arrays = dict(
        ctx_curve=np.concatenate([np.full(c.t.size, i) for i, c in enumerate(CTX)]),
        ctx_t=np.concatenate([c.t for c in CTX]),
        ctx_y=np.concatenate([c.y for c in CTX]),
        qry_t=[1.0],
    )
    curve_0 = sur.forecast(configs, qry_curve=[0], **arrays)
    twin = sur.forecast(np.vstack([configs, configs[:1]]), qry_curve=[len(CTX)], **arrays)
    probs = seen.logits.softmax(-1)
    torch.testing.assert_close(probs, curve_0.logits.softmax(-1), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(probs, twin.logits.softmax(-1), atol=1e-4)


def test_predict_without_context_and_without_hyperparameters(sur):
    (p,) = sur.predict([], [Curve([], t=[0.5, 1.0])])
    assert p.mean().shape == (2,)
    ctx = [Curve([], t=[0.1, 0.2], y=[0.3, 0.4])]
    assert sur.predict(ctx, [Curve([], t=[1.0])])[0].mean().shape == (1,)


# ---- predict_final ------------------------------------------------------------------------------


def test_predict_final_in_metric_units(sur):
    runs = {
        "good": RawRun(steps=[1, 2, 3], values=[0.9, 0.6, 0.4], config=[0.1]),
        "diverged": RawRun(steps=[1, 2], values=[0.9, np.nan], config=[0.8]),
        "huge": RawRun(steps=[1, 2, 3], values=[0.9, 50.0, 1e34], config=[0.5]),
    }
    preds = sur.predict_final(
        runs, max_step=10, higher_is_better=False, lower_bound=0.0, steps=[5, 2.5]
    )
    assert [p.run for p in preds] == ["good", "diverged", "huge"]
    for p in preds:
        assert 0.0 <= p.lower <= p.final <= p.upper
        np.testing.assert_array_equal(p.steps, [2.5, 5.0, 10.0])
        np.testing.assert_array_equal(p.score.t, [0.25, 0.5, 1.0])
        assert p.median_path.shape == p.lower_path.shape == p.upper_path.shape == (3,)
        assert p.median_path[-1] == p.final and p.interval == 0.9
        # The metric quantiles are images of the score quantiles (flipped for a loss).
        assert p.final == pytest.approx(float(p.scaler.to_metric(p.score.quantile(0.5))[-1]))
        assert p.upper == pytest.approx(float(p.scaler.to_metric(p.score.quantile(0.05))[-1]))
    scaler = preds[0].scaler
    assert isinstance(scaler, MetricScaler) and not scaler.higher_is_better


def test_predict_final_matches_predict(sur):
    runs = [RawRun(steps=[10, 20], values=[0.5, 0.6]), RawRun(steps=[10], values=[0.2])]
    (p0, _) = sur.predict_final(
        runs, max_step=100, higher_is_better=True, lower_bound=0.0, upper_bound=1.0
    )
    assert p0.run == 0
    # Accuracy in [0, 1] maps to itself, so this is predict() on the same curves; the runs share
    # the empty config, so predict() can query neither, but a run alone can be.
    alone = sur.predict_final(
        runs[:1], max_step=100, higher_is_better=True, lower_bound=0.0, upper_bound=1.0
    )[0]
    direct = sur.predict([Curve([], t=[0.1, 0.2], y=[0.5, 0.6])], [Curve([], t=[1.0])])[0]
    torch.testing.assert_close(alone.score.logits, direct.logits)
    assert alone.final == pytest.approx(float(direct.quantile(0.5)[0]))


def test_predict_final_errors(sur):
    ok = RawRun(steps=[1, 2], values=[0.5, 0.4])
    with pytest.raises(ValueError, match="no runs"):
        sur.predict_final([], max_step=10, higher_is_better=True)
    with pytest.raises(ValueError, match=r"steps must lie in \(0, max_step=10\]"):
        sur.predict_final([RawRun(steps=[0, 5], values=[1, 2])], max_step=10, higher_is_better=True)
    with pytest.raises(ValueError, match=r"steps must lie in \(0, max_step=10\]"):
        sur.predict_final(
            [RawRun(steps=[5, 11], values=[1, 2])], max_step=10, higher_is_better=True
        )
    with pytest.raises(ValueError, match="same length"):
        sur.predict_final([RawRun(steps=[1, 2], values=[1])], max_step=10, higher_is_better=True)
    with pytest.raises(ValueError, match="every run has a config or none"):
        sur.predict_final(
            [ok, RawRun(steps=[1], values=[1], config=[0.5])], max_step=10, higher_is_better=True
        )
    with pytest.raises(ValueError, match="interval"):
        sur.predict_final([ok], max_step=10, higher_is_better=True, interval=1.0)


# ---- loading ------------------------------------------------------------------------------------


def test_load_reports_a_missing_shipped_checkpoint(monkeypatch, tmp_path):
    monkeypatch.setattr("pfn.surrogate.files", lambda package: tmp_path)
    with pytest.raises(FileNotFoundError, match="shipped checkpoint is absent.*curvepfn pretrain"):
        Surrogate.load()


def test_load_default_and_path(monkeypatch, tmp_path):
    model = tiny_model(seed=3)
    ckpt = Checkpoint(state_dict=model.state_dict(), model=model.config, borders=uniform_borders(K))
    save_checkpoint(tmp_path / "default", ckpt)
    monkeypatch.setattr("pfn.surrogate.files", lambda package: tmp_path)
    query = [Curve([0.1, 0.5], t=[1.0])]
    a = Surrogate.load().predict(CTX, query)[0]
    b = Surrogate.load(tmp_path / "default.pt").predict(CTX, query)[0]
    torch.testing.assert_close(a.logits, b.logits)


def test_load_reads_the_edge_buckets_as_atoms_on_the_unit_range(tmp_path):
    torch.manual_seed(4)
    config = ModelConfig(
        d_model=16, n_heads=2, n_layers=1, d_ff=32, n_query_layers=1, n_buckets=K,
        last_value_head=False,  # which needs borders on [0, 1]
    )  # fmt: skip
    model = CurveSetTransformer(config)
    wide_edges = torch.cat([torch.zeros(1), torch.linspace(0.05, 0.95, K - 1), torch.ones(1)])
    cases = (("unit", uniform_borders(K), True), ("wide", uniform_borders(K, 0.0, 2.0), False),
             ("wide-edges", wide_edges, False))  # fmt: skip
    for name, borders, atoms in cases:
        ckpt = Checkpoint(state_dict=model.state_dict(), model=model.config, borders=borders)
        save_checkpoint(tmp_path / name, ckpt)
        sur = Surrogate.load(tmp_path / f"{name}.pt")
        assert sur.distribution.edge_atoms is atoms
        assert sur.predict(CTX, [Curve([0.1, 0.5], t=[1.0])])[0].distribution.edge_atoms is atoms


def test_shipped_model_interval_holds_a_run_sitting_at_the_bound():
    """A run at 100% accuracy for its last steps: the 90% interval must reach 100%, the value it
    already has (without edge atoms its top was 0.99965)."""
    at_top = [0.6, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0, 1.0, 1.0, 1.0]
    runs = [RawRun(steps=list(range(1, 11)), values=at_top)]
    (pred,) = Surrogate.load().predict_final(
        runs, max_step=40, higher_is_better=True, lower_bound=0.0, upper_bound=1.0
    )
    assert pred.upper == 1.0 and pred.lower < pred.final <= 1.0


def test_a_threshold_a_hair_below_the_top_keeps_its_float64():
    """A run at 1.0 puts an atom on the top border: P(Y > 1 - 1e-9) is that atom's mass, which
    a threshold rounded to float32 (= 1.0) would read as 0."""
    sur = Surrogate.load()
    (pred,) = sur.predict(
        [Curve([0.5], t=[0.1, 0.2, 0.3, 0.4], y=[1.0] * 4)], [Curve([0.5], t=[1.0])]
    )
    atom = pred.pi(1 - 1e-9)
    assert atom[0] > 0.05
    np.testing.assert_allclose(atom, BarForecast(pred.logits, pred.distribution).pi(1 - 1e-9))
    assert pred.pi(1.0)[0] == 0.0 and pred.ei(np.float64(1 - 1e-9))[0] > 0
    with pytest.raises(ValueError, match=r"t must lie in \(0, 1\]"):
        sur.forecast_single([([0.1, np.nan], [0.5, 0.6])], [1.0])


def test_package_exports_the_inference_api():
    import pfn

    assert pfn.Curve is Curve and pfn.Surrogate is Surrogate and pfn.RawRun is RawRun


def _context_view_alone(sur: Surrogate, t: np.ndarray, y: np.ndarray) -> torch.Tensor:
    """(K,) probabilities of one curve at t = 1 read by the context view as a task of its own."""
    fc = sur.forecast(np.zeros((1, 0)), ctx_curve=np.zeros(t.size), ctx_t=t, ctx_y=y,
                      qry_curve=[0], qry_t=[1.0], single_weight=0.0)  # fmt: skip
    return fc.logits.softmax(-1)[0]


def test_single_curve_view_encodes_curves_in_one_task_and_caches(monkeypatch):
    sur = Surrogate(tiny_model(1), BarDistribution(uniform_borders(K)))
    seen = []
    encode = sur.model.encode

    def spy(inp, **kwargs):  # records the single-curve view's encodings
        if kwargs.get("isolated"):
            seen.append(tuple(inp.configs.shape[:2]) + (int(inp.ctx_mask.sum()),))  # (1, C, N)
        return encode(inp, **kwargs)

    monkeypatch.setattr(sur.model, "encode", spy)
    rng = np.random.default_rng(1)
    lengths = [1] * 60 + [0] * 3 + [40] * 4
    curves = [(np.sort(rng.random(k)) * 0.9 + 0.05, rng.random(k)) for k in lengths]

    def check(batched: torch.Tensor, rows=(0, 1, 60, 63, 66)) -> None:
        for i in rows:  # against the context view of each curve alone (no cache, no batching)
            expected = _context_view_alone(sur, *curves[i])
            torch.testing.assert_close(batched[i], expected, atol=1e-5, rtol=1e-5)

    first = sur.forecast_single(curves, np.ones(len(curves))).logits.softmax(-1)
    assert seen == [(1, 65, 220)]  # one task, no padding; the three empty curves share a row
    check(first)
    seen.clear()  # asked again: every encoding comes from the cache
    again = sur.forecast_single(curves, np.ones(len(curves))).logits.softmax(-1)
    assert seen == []
    torch.testing.assert_close(again, first)
    curves[1] = (curves[1][0], curves[1][1] * 0.5)  # one curve told a new value
    changed = sur.forecast_single(curves, np.ones(len(curves))).logits.softmax(-1)
    assert seen == [(1, 1, 1)]
    assert not torch.allclose(changed[1], first[1])
    check(changed)
    seen.clear()  # weights changed in place (a training step): nothing stale is reused
    with torch.no_grad():
        next(sur.model.layers.parameters()).add_(0.5)
    trained = sur.forecast_single(curves, np.ones(len(curves))).logits.softmax(-1)
    assert seen == [(1, 65, 220)]
    assert not torch.allclose(trained[63], changed[63])
    check(trained)
    seen.clear()  # a cap on the points of a task splits the curves over several
    monkeypatch.setattr("pfn.surrogate.SINGLE_PASS_POINTS", 30)
    sur.clear_cache()
    check(sur.forecast_single(curves, np.ones(len(curves))).logits.softmax(-1))
    assert sum(c for _, c, _ in seen) == 65 and sum(n for *_, n in seen) == 220 and len(seen) > 2
    assert all(n <= 30 or c == 1 for _, c, n in seen)  # within the cap, or one longer curve
    assert sorted(n for *_, n in seen if n > 30) == [40] * 4
    monkeypatch.setattr("pfn.surrogate.SINGLE_VIEW_CACHE_SIZE", 10)  # the cache stays bounded
    curves[0] = (curves[0][0], curves[0][1] * 0.5)
    check(sur.forecast_single(curves, np.ones(len(curves))).logits.softmax(-1))
    assert len(sur._single_cache) == 10


def test_single_view_cache_survives_pickling_and_tracks_the_weights():
    sur = Surrogate(tiny_model(2), BarDistribution(uniform_borders(K)))
    t, y = np.array([0.1, 0.2, 0.3]), np.array([0.2, 0.4, 0.5])

    def single() -> torch.Tensor:
        return sur.forecast_single([(t, y)], [1.0]).logits.softmax(-1)[0]

    before = single()
    assert len(sur._single_cache) == 1
    # pickled (a Ray Tune scheduler holding it) without its cache and lock; works on arrival
    copy = pickle.loads(pickle.dumps(sur))
    assert len(copy._single_cache) == 0
    torch.testing.assert_close(copy.forecast_single([(t, y)], [1.0]).logits.softmax(-1)[0], before)
    # a parameter replaced by a new one: not served from the cache
    lin = sur.model.embed_stats[0]  # reads the curve's statistics
    lin.weight = torch.nn.Parameter(lin.weight.detach() + 0.5)
    replaced = single()
    assert not torch.allclose(replaced, before)
    torch.testing.assert_close(replaced, _context_view_alone(sur, t, y), atol=1e-5, rtol=1e-5)
    # a write through .data is invisible to torch: clear_cache() is the documented way
    with torch.no_grad():
        lin.weight.data.add_(0.5)
    assert torch.equal(single(), replaced)  # stale, as documented
    sur.clear_cache()
    torch.testing.assert_close(single(), _context_view_alone(sur, t, y), atol=1e-5, rtol=1e-5)
    # training mode stores nothing; a network made under inference_mode is not cached
    sur.clear_cache()
    sur.model.train()
    single()
    assert len(sur._single_cache) == 0
    sur.model.eval()
    with torch.inference_mode():
        frozen = Surrogate(tiny_model(2), BarDistribution(uniform_borders(K)))
    frozen.forecast_single([(t, y)], [1.0])
    assert len(frozen._single_cache) == 0
    # points are keyed as float64: the same values given as float32 share one encoding
    sur.clear_cache()
    arrays = dict(ctx_curve=np.zeros(3), qry_curve=np.zeros(1), qry_t=np.ones(1))
    exact_t, exact_y = np.array([0.125, 0.25, 0.5]), np.array([0.25, 0.5, 0.75])  # float32-exact
    logits = torch.zeros(1, K)
    a = sur.mix_single_view(logits, 1.0, ctx_t=exact_t, ctx_y=exact_y, **arrays)
    b = sur.mix_single_view(logits, 1.0, ctx_t=exact_t.astype(np.float32),
                            ctx_y=exact_y.astype(np.float32), **arrays)  # fmt: skip
    assert len(sur._single_cache) == 1
    torch.testing.assert_close(a, b, atol=0, rtol=0)
