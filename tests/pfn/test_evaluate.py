"""The offline evaluation harness (pfn/evaluate.py) and ``curvepfn evaluate``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pfn.evaluate as evaluate_module
from bo.cli import main
from pfn.curve_table import read_curve_tables
from pfn.eval_tasks import NoTargets, build_eval_task
from pfn.evaluate import (
    PFNMethod,
    SurrogateEvalConfig,
    SurrogateEvalResult,
    TaskRecord,
    _aggregate,
    _inside_coverage,
    _score_task,
    evaluate_prior,
    evaluate_surrogate,
    make_method,
    markdown_table,
    write_report,
)
from pfn.forecast import GaussianForecast
from pfn.model import CurveSetInput
from pfn.surrogate import Surrogate

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def tiny(tiny_checkpoint_path) -> Surrogate:
    return Surrogate.load(tiny_checkpoint_path)


def test_score_task_by_hand():
    f = GaussianForecast(np.array([0.5, 0.5]), np.array([0.1, 0.1]))
    y = np.array([0.5, 0.9])
    ll, mse, covered = _score_task(f, y, 0.9)
    cover = covered.mean()
    assert mse == pytest.approx((0.0 + 0.16) / 2, abs=1e-9)
    assert cover == 0.5  # 0.9 is 4 sigma out
    assert ll == pytest.approx(f.log_prob(y).mean())
    # the interval's level counts: 1.8 sigma out is inside the 95% interval (1.96 sigma), not
    # inside the 90% one (1.645 sigma)
    edge = np.array([0.5 + 1.8 * 0.1])
    one = GaussianForecast(np.array([0.5]), np.array([0.1]))
    assert _score_task(one, edge, 0.95)[2].tolist() == [True]
    assert _score_task(one, edge, 0.9)[2].tolist() == [False]


def test_targets_on_a_bound_are_counted_apart():
    # a sure forecast near 1 still puts its 95% quantile below 1: the target at 1 is a miss
    f = GaussianForecast(np.array([0.5, 0.99, 0.5]), np.array([0.1, 0.01, 0.1]))
    y = np.array([0.5, 1.0, 0.0])
    covered = _score_task(f, y, 0.9)[2]
    assert covered.mean() == pytest.approx(1 / 3)
    assert _inside_coverage(covered, y) == (2, 1.0)
    n, inside = _inside_coverage(covered, np.array([1.0, 1.0, 0.0]))
    assert n == 3 and np.isnan(inside)


def test_aggregate_averages_the_share_on_bound_and_skips_tasks_without_inside_targets(tmp_path):
    config = SurrogateEvalConfig(context_sizes=(10,), seeds=2, methods=("last-value",))
    rec = dict(method="last-value", table="a", n_context=10, n_context_actual=10, ll=0.0, mse=0.0,
               time_s=0.0)  # fmt: skip
    records = [
        TaskRecord(**rec, seed=0, n_targets=4, coverage=0.5, n_on_bound=2, coverage_inside=1.0),
        TaskRecord(
            **rec, seed=1, n_targets=2, coverage=0.0, n_on_bound=2, coverage_inside=float("nan")
        ),
    ]
    (score,) = _aggregate(records, config)
    assert score.share_on_bound == pytest.approx((0.5 + 1.0) / 2)
    assert score.coverage_inside == 1.0 and score.coverage == 0.25
    table = markdown_table(SurrogateEvalResult("x.h5", "ckpt", config, [score], records))
    assert "| 10 | last-value |" in table and "| 0.250 | 1.000 |" in table
    nothing_inside = dataclasses.replace(score, coverage_inside=float("nan"))
    assert "| 0.250 | – |" in markdown_table(
        SurrogateEvalResult("x.h5", "ckpt", config, [nothing_inside], records)
    )
    assert "75.0%–75.0% of the targets" in table
    # NaN (no inside target) is written as null: results.json stays strict JSON
    write_report(SurrogateEvalResult("x.h5", "ckpt", config, [score], records), tmp_path)

    def refuse(token):
        raise ValueError(token)

    data = json.loads((tmp_path / "results.json").read_text(), parse_constant=refuse)
    assert data["records"][1]["coverage_inside"] is None
    plain = dataclasses.replace(score, share_on_bound=0.0)
    assert "of the targets" not in markdown_table(
        SurrogateEvalResult("x.h5", "ckpt", config, [plain], records)
    )


def test_pfn_modes_see_what_they_should(tiny, curve_file):
    table = read_curve_tables(curve_file, ["loss_task"])[0]
    task = build_eval_task(table, n_context=40, seed=0)
    full, no_hps, single = (PFNMethod(tiny, m) for m in ("pfn", "pfn-no-hps", "pfn-single"))
    shuffled = task.__class__(**{**task.__dict__, "configs": task.configs[::-1].copy()})
    # without hyperparameters, the configs do not matter; with them, they do
    np.testing.assert_allclose(no_hps.predict(task).mean(), no_hps.predict(shuffled).mean())
    assert not np.allclose(full.predict(task).mean(), full.predict(shuffled).mean())
    # single-curve: target i's forecast uses its own curve alone
    i = 1
    c = int(task.target_curve[i])
    t, y = task.curve_points(c)
    alone = tiny.forecast(np.zeros((1, 0)), ctx_curve=np.zeros(t.size), ctx_t=t, ctx_y=y,
                          qry_curve=[0], qry_t=[1.0], single_weight=0.0)  # fmt: skip
    assert single.predict(task).mean()[i] == pytest.approx(alone.mean()[0], abs=1e-5)
    # pfn-context: the context view alone; pfn: the surrogate's mixture of both views
    context = PFNMethod(tiny, "pfn-context").predict(task).logits.softmax(-1)
    both = single.predict(task).logits.softmax(-1)
    w = tiny.single_weight
    assert 0 < w < 1
    mixed = full.predict(task).logits.softmax(-1)
    np.testing.assert_allclose(mixed, (1 - w) * context + w * both, atol=1e-6)


def test_evaluate_surrogate_runs_every_method_and_writes_a_report(tiny, curve_file, tmp_path):
    config = SurrogateEvalConfig(
        context_sizes=(20, 40), seeds=2, methods=("pfn", "pfn-single", "last-value")
    )
    result = evaluate_surrogate(curve_file, surrogate=tiny, config=config, progress=False)
    assert len(result.records) == 2 * 2 * 2 * 3  # tables x sizes x seeds x methods
    for s in result.scores:
        assert s.n_tasks == 4 and np.isfinite(s.ll) and 0 <= s.coverage <= 1 and s.mse >= 0
    # the aggregate is the mean of the per-task records
    rs = [r for r in result.records if r.method == "last-value" and r.n_context == 40]
    mses = np.array([r.mse for r in rs])
    assert result.score("last-value", 40).mse == pytest.approx(mses.mean())
    assert result.score("last-value", 40).mse_se == pytest.approx(mses.std(ddof=1) / 2)
    # paired differences match the records task by task
    pfn = {(r.table, r.seed): r for r in result.records if r.method == "pfn" and r.n_context == 40}
    diff = np.array([r.ll - pfn[r.table, r.seed].ll for r in rs])
    paired = result.paired("last-value", "pfn", 40, "ll")
    assert paired.n_tasks == 4 and paired.mean == pytest.approx(diff.mean())
    assert paired.se == pytest.approx(diff.std(ddof=1) / 2)
    assert result.paired("pfn", "pfn", 20).mean == 0.0
    with pytest.raises(ValueError, match="metric"):
        result.paired("pfn", "last-value", 20, "coverage")
    with pytest.raises(ValueError, match="no task"):
        result.paired("pfn", "last-value", 30)
    assert sum(result.pit["pfn"]) == sum(r.n_targets for r in result.records if r.method == "pfn")
    paths = write_report(result, tmp_path / "rep", surrogate=tiny)
    assert {p.name for p in paths} == {
        "results.json",
        "results.md",
        "metrics.png",
        "calibration.png",
        "curves.png",
    }
    assert all(p.stat().st_size > 0 for p in paths)
    data = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert len(data["scores"]) == 6
    table = markdown_table(result)
    # rows of N = 20: 3 methods, then 2 paired against pfn (a cell elsewhere may read 20 too,
    # such as 20 ms per task, so rows are counted by their first cell)
    assert sum(line.startswith("| 20 |") for line in table.splitlines()) == 3 + 2
    assert "| 40 | pfn-single |" in table.split("Paired against")[1]
    assert "Paired" not in markdown_table(dataclasses.replace(result, config=dataclasses.replace(
        config, methods=("pfn",))))  # fmt: skip


def test_tasks_without_a_final_value_are_skipped_with_a_warning(curve_file, monkeypatch):
    # acc_task's row 0 stops early: a task of 3 points sometimes draws it alone (no target)
    config = SurrogateEvalConfig(context_sizes=(3, 40), seeds=30, methods=("last-value",))
    with pytest.warns(UserWarning, match=r"task\(s\) skipped: none of the curves drawn"):
        result = evaluate_surrogate(
            curve_file, surrogate=None, tables=["acc_task"], config=config, progress=False
        )
    small = result.score("last-value", 3)
    assert 0 < small.n_tasks < 30 and result.score("last-value", 40).n_tasks == 30

    def no_targets(table, *, n_context, **kwargs):
        if n_context == 3:
            raise NoTargets("nothing to score")
        return build_eval_task(table, n_context=n_context, **kwargs)

    monkeypatch.setattr(evaluate_module, "build_eval_task", no_targets)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"context size\(s\) \[3\]"):
        evaluate_surrogate(
            curve_file, surrogate=None, tables=["acc_task"], config=config, progress=False
        )


def test_bad_configuration_is_refused(tiny, curve_file):
    with pytest.raises(ValueError, match="unknown methods"):
        SurrogateEvalConfig(methods=("pfn", "oracle"))
    with pytest.raises(ValueError, match="needs a surrogate"):
        make_method("pfn")
    with pytest.raises(ValueError, match="seeds"):
        SurrogateEvalConfig(seeds=0)


def test_evaluate_prior_reports_every_share(tiny):
    r = evaluate_prior(tiny, prior="lcpfn", fractions=(0.2, 0.8), n_tasks=6, batch_size=4)
    assert set(r.ll) == {0.2, 0.8} and all(np.isfinite(v) for v in r.ll.values())


def test_evaluate_prior_scores_the_surrogates_predictive(tiny_checkpoint_path):
    def ll(prior: str, w: float) -> np.ndarray:
        sur = Surrogate.load(tiny_checkpoint_path, single_weight=w)
        r = evaluate_prior(sur, prior=prior, fractions=(0.2, 0.6), n_tasks=5, batch_size=3)
        return np.array(list(r.ll.values()))

    # one curve without hyperparameters: both views read the same input, so the mixture is inert
    np.testing.assert_allclose(ll("lcpfn", 0.5), ll("lcpfn", 0.0), atol=1e-5)
    # many curves: the single-curve view changes the predictive
    assert not np.allclose(ll("ftpfn", 0.3), ll("ftpfn", 0.0), atol=1e-3)
    # and each task is scored with its own predictive: Surrogate.forecast, task by task
    from priors.registry import make_prior

    sur = Surrogate.load(tiny_checkpoint_path, single_weight=0.3)
    r = evaluate_prior(sur, prior="ftpfn", fractions=(0.5,), n_tasks=3, batch_size=3, seed=7)
    p = make_prior("ftpfn", max_hps=sur.config.max_hps)
    probe = p.sample(3, generator=torch.Generator().manual_seed(7))
    batch = p.sample(3, generator=torch.Generator().manual_seed(7),
                     n_context=round(0.5 * probe.n_tokens))  # fmt: skip
    inp, target = CurveSetInput.from_batch(batch)
    per_task = []
    for i in range(3):
        configs = inp.configs[i][inp.curve_mask[i]][:, inp.hp_mask[i]]
        fc = sur.forecast(
            configs.numpy(),
            ctx_curve=inp.ctx_curve[i],
            ctx_t=inp.ctx_t[i],
            ctx_y=inp.ctx_y[i],
            qry_curve=inp.qry_curve[i],
            qry_t=inp.qry_t[i],
        )
        per_task.append(fc.log_prob(target[i].numpy()).mean())
    assert r.single_weight == 0.3
    assert r.ll[0.5] == pytest.approx(np.mean(per_task), abs=1e-4)


def test_cli_evaluate_surrogate(tiny_checkpoint_path, curve_file, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main([
        "evaluate", "surrogate", "--data", str(curve_file), "--context-sizes", "30",
        "--seeds", "1", "--methods", "pfn,last-value", "--checkpoint",
        str(tiny_checkpoint_path), "--out", str(out),
    ])  # fmt: skip
    assert code == 0 and (out / "results.md").is_file()
    printed = capsys.readouterr().out
    assert "| 30 | pfn |" in printed and "(single_weight 0.1)" in printed
    assert json.loads((out / "results.json").read_text())["single_weight"] == 0.1
    again = ["evaluate", "surrogate", "--data", str(curve_file), "--context-sizes", "30",
             "--seeds", "1", "--methods", "last-value", "--out", str(out)]  # fmt: skip
    assert main(again) == 2 and "already holds a result" in capsys.readouterr().err
    assert main(again + ["--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["methods"] == ["last-value"]
    code = main(["evaluate", "surrogate", "--data", str(curve_file), "--methods", "magic"])
    assert code == 2 and "unknown methods" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present (fresh clone)")
def test_shipped_model_beats_a_flat_density_on_real_curves():
    """On real curves the shipped surrogate's log-likelihood beats the uniform density (0)."""
    sur = Surrogate.load()
    for name in ("taskset_dev.h5", "lcdb_dev.h5"):
        table = read_curve_tables(SHARED / name)[0].name
        config = SurrogateEvalConfig(context_sizes=(400,), seeds=2, methods=("pfn",))
        result = evaluate_surrogate(
            SHARED / name, surrogate=sur, config=config, tables=[table], progress=False
        )
        assert result.score("pfn", 400).ll > 0.5, name


def test_cli_evaluate_prior(tiny_checkpoint_path, capsys):
    code = main(["evaluate", "prior", "--prior", "lcpfn", "--tasks", "4", "--checkpoint",
                 str(tiny_checkpoint_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "held-out lcpfn prior, 4 tasks, single_weight 0.1:" in out
    assert out.count("%:") == 4  # the four context shares
    code = main(["evaluate", "prior", "--prior", "ftpfn", "--tasks", "2", "--checkpoint",
                 str(tiny_checkpoint_path), "--single-weight", "0"])  # fmt: skip
    assert code == 0 and "single_weight 0:" in capsys.readouterr().out
