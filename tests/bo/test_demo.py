import contextlib
import io
import math

import numpy as np
import pytest
import torch

from bo.cli import build_parser, main
from bo.demo import Digits, DigitsMLP, digits_space, run_demo

CONFIG = {"lr": 0.01, "weight_decay": 1e-4, "width": 16, "dropout": 0.2, "optimizer": "sgd"}


@pytest.fixture(scope="module")
def digits() -> Digits:
    return Digits.load(seed=0)


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """The quick demo, run twice into two folders (the shipped surrogate): (result, stdout)."""
    out = []
    for name in ("a", "b"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            result = run_demo(tmp_path_factory.mktemp(name), quick=True, progress=False)
        out.append((result, buf.getvalue()))
    return out


def test_digits_split_is_fixed_and_standardised(digits):
    assert digits.x_train.shape == (1197, 64) and digits.x_val.shape == (600, 64)
    assert set(digits.y_val.tolist()) == set(range(10))
    assert digits.x_train.mean(0).abs().max() < 1e-4  # standardised with training statistics
    again, other = Digits.load(seed=0), Digits.load(seed=1)
    assert torch.equal(digits.y_val, again.y_val) and torch.equal(digits.x_val, again.x_val)
    assert not torch.equal(digits.y_val, other.y_val)


def test_freeze_then_thaw_continues_exactly_like_one_run(digits, tmp_path):
    objective = DigitsMLP(digits)
    (tmp_path / "paused").mkdir()
    (tmp_path / "straight").mkdir()
    rng_before = torch.get_rng_state()
    paused = objective(CONFIG, 0, 2, tmp_path / "paused")
    assert (tmp_path / "paused" / "state.pt").stat().st_size > 0
    paused += objective(CONFIG, 2, 4, tmp_path / "paused")
    straight = objective(CONFIG, 0, 4, tmp_path / "straight")
    assert len(paused) == 4 and paused == straight  # model, optimiser and RNG all restored
    assert all(0.0 <= v <= 1.0 for v in paused) and paused[-1] > 0.3  # it learns
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched


def test_a_diverged_run_reports_nan_for_every_asked_epoch(digits, tmp_path):
    values = DigitsMLP(digits)({**CONFIG, "lr": 1e30}, 0, 3, tmp_path)
    assert len(values) == 3 and all(math.isnan(v) for v in values)


def test_space_fits_the_shipped_surrogate_width():
    assert digits_space().dim == 6


def test_quick_demo_writes_plots_and_checkpoints(quick_runs):
    result, stdout = quick_runs[0]
    for plot in (result.freeze_thaw_plot, result.extrapolation_plot):
        assert plot.suffix == ".png" and plot.stat().st_size > 10_000
        assert str(plot) in stdout
    run_dirs = result.freeze_thaw_plot.parent / "runs"
    for run in result.search.runs:  # every run of part 1 was frozen on disk
        assert (run_dirs / str(run.id) / "state.pt").stat().st_size > 0


def test_quick_demo_numbers_are_consistent(quick_runs):
    result, stdout = quick_runs[0]
    search = result.search
    assert search.steps_spent == 12 and len(search.history) == 12
    told = [r.value for r in search.history if r.value is not None and math.isfinite(r.value)]
    assert result.best_accuracy == max(told)
    assert result.best_config == dict(search.best.config)
    assert f"best: accuracy {result.best_accuracy:.4f}" in stdout

    rows = result.rows
    assert len(rows) == 2  # budget 12 // 6 epochs: random search with the same budget
    assert "Same budget, 12 epochs: random search" in stdout
    for r in rows:
        assert len(r.curve) == 6 and r.seen_epochs == 2
        assert r.lower <= r.predicted <= r.upper
        assert 0.0 <= r.lower and r.upper <= 1.0
    table = [line for line in stdout.splitlines() if "predicted epoch 6" in line]
    assert len(table) == 1
    body = stdout.split(table[0])[1].splitlines()[2 : 2 + len(rows)]
    assert [line.split(" | ")[0] for line in body] == [f"| {i}" for i in range(len(rows))]

    best_random = max(v for r in rows for v in r.curve if math.isfinite(v))
    assert result.random_search_best == (best_random,)
    finite = [r for r in rows if math.isfinite(r.actual)]
    mae = np.mean([abs(r.predicted - r.actual) for r in finite])
    naive = np.mean([abs(r.last_seen - r.actual) for r in finite])
    assert result.prediction_mae == pytest.approx(mae) and result.last_value_mae == pytest.approx(
        naive
    )


def test_the_comparison_names_both_budgets_when_they_differ(tmp_path, capsys):
    run_demo(tmp_path, quick=True, progress=False, budget=10)  # 2 runs of 6 epochs: 12
    assert "Budgets 12 epochs (random search, whole runs) and 10 (search)" in (
        capsys.readouterr().out
    )


def test_part_two_reads_part_one_curves(quick_runs):
    from bo.demo import _search_curves
    from pfn.surrogate import RawRun, Surrogate

    result, _ = quick_runs[0]
    space = digits_space()
    context = _search_curves(result.search, space)
    # every told step of part 1, per run, in order (failures as NaN)
    assert sum(len(r.steps) for r in context) == len(result.search.history)
    for run, raw in zip((r for r in result.search.runs if r.steps), context, strict=True):
        told = [h for h in result.search.history if h.trial == run.id]
        assert list(raw.steps) == [h.step for h in told]
        np.testing.assert_array_equal(raw.config, space.encode(run.config))
    # the printed predictions are those of part 2's partial runs read with part 1's runs
    partial = [
        RawRun(np.arange(1, r.seen_epochs + 1), np.asarray(r.curve[: r.seen_epochs]),
               space.encode(r.config))
        for r in result.rows
    ]  # fmt: skip
    kw = dict(max_step=6, higher_is_better=True, lower_bound=0.0, upper_bound=1.0)
    surrogate = Surrogate.load()
    with_context = surrogate.predict_final(partial + context, **kw)[: len(partial)]
    alone = surrogate.predict_final(partial, **kw)
    assert [p.final for p in with_context] == pytest.approx([r.predicted for r in result.rows])
    assert [p.final for p in alone] != pytest.approx([r.predicted for r in result.rows])


def test_quick_demo_is_deterministic(quick_runs):
    (a, _), (b, _) = quick_runs
    assert a.search.history == b.search.history
    assert [dict(r.config) for r in a.search.runs] == [dict(r.config) for r in b.search.runs]
    assert [(r.curve, r.predicted, r.lower, r.upper) for r in a.rows] == [
        (r.curve, r.predicted, r.lower, r.upper) for r in b.rows
    ]


def test_demo_cli_options():
    args = build_parser().parse_args(
        ["demo", "--quick", "--budget", "30", "--out", "x", "--seed", "2"]
    )
    assert args.quick and args.budget == 30 and args.out == "x" and args.seed == 2
    default = build_parser().parse_args(["demo"])
    assert not default.quick and default.budget == 120 and default.out == "demo_out"
    assert default.seed == 0 and default.checkpoint is None


def test_demo_cli_passes_its_options_on(monkeypatch):
    import bo.demo

    calls = []
    monkeypatch.setattr(bo.demo, "run_demo", lambda out, **kw: calls.append((out, kw)))
    argv = ["demo", "--quick", "--budget", "30", "--out", "x", "--seed", "2"]
    assert main(argv + ["--checkpoint", "c"]) == 0
    assert calls == [("x", {"checkpoint": "c", "budget": 30, "quick": True, "seed": 2})]


def test_demo_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
