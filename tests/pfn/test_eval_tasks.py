"""Evaluation tasks drawn from recorded curves (pfn/eval_tasks.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pfn.curve_table import read_curve_tables
from pfn.eval_tasks import build_eval_task, unseen_rows


@pytest.fixture
def loss_table(curve_file):
    return read_curve_tables(curve_file, ["loss_task"])[0]


def test_context_size_prefixes_and_targets(loss_table):
    task = build_eval_task(loss_table, n_context=60, seed=3)
    assert task.n_context == 60 == task.ctx_t.size
    times = loss_table.times()
    recorded = ~np.isnan(loss_table.curves)
    for c, row in enumerate(task.rows):
        t, _ = task.curve_points(c)
        cols = np.searchsorted(times, t)
        # a prefix of the curve's recorded steps, never its final step
        np.testing.assert_array_equal(cols, np.flatnonzero(recorded[row])[: cols.size])
        assert t.max() < 1.0
    # targets: exactly the curves whose final value was recorded, at t = 1
    expected = [c for c, row in enumerate(task.rows) if recorded[row, -1]]
    np.testing.assert_array_equal(task.target_curve, expected)
    np.testing.assert_array_equal(task.target_t, 1.0)
    assert 4 not in task.rows[task.target_curve]  # row 4 stopped early: context only
    assert 5 not in task.rows  # row 5 has nothing after step 0
    assert ((task.ctx_y >= 0) & (task.ctx_y <= 1)).all()
    assert ((task.target_y >= 0) & (task.target_y <= 1)).all()


def test_scores_use_a_scaler_fitted_on_the_context_only(loss_table):
    task = build_eval_task(loss_table, n_context=60, seed=3)
    # changing every final value leaves the context and its scaler alone
    curves = loss_table.curves.copy()
    curves[:, -1] = 0.01
    other = build_eval_task(replace(loss_table, curves=curves), n_context=60, seed=3)
    assert other.scaler == task.scaler
    np.testing.assert_array_equal(other.ctx_y, task.ctx_y)
    raw_final = loss_table.curves[task.rows[task.target_curve], -1]
    np.testing.assert_allclose(task.target_y, task.scaler.to_score(raw_final))
    # a loss: lower raw values score higher
    order = np.argsort(raw_final)
    assert (np.diff(task.target_y[order]) <= 0).all()


def test_deterministic_capped_and_hidden(loss_table):
    a = build_eval_task(loss_table, n_context=50, seed=1)
    b = build_eval_task(loss_table, n_context=50, seed=1)
    c = build_eval_task(loss_table, n_context=50, seed=2)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.ctx_y, b.ctx_y)
    assert not np.array_equal(a.rows, c.rows)
    big = build_eval_task(loss_table, n_context=10_000, seed=0)
    assert big.n_context < 10_000 and big.n_context == big.ctx_t.size  # all it has
    hidden = a.hidden()
    assert np.isnan(hidden.target_y).all() and not np.isnan(a.target_y).any()


def test_bad_arguments(loss_table):
    with pytest.raises(ValueError, match="n_context"):
        build_eval_task(loss_table, n_context=0, seed=0)
    one_step = replace(loss_table, curves=loss_table.curves[:, :1], steps=loss_table.steps[:1])
    with pytest.raises(ValueError, match="at least 2"):
        build_eval_task(one_step, n_context=10, seed=0)
    no_final = loss_table.curves.copy()
    no_final[:, -1] = np.nan
    with pytest.raises(ValueError, match="final value"):
        build_eval_task(replace(loss_table, curves=no_final), n_context=10, seed=0)


def test_unseen_rows_and_unseen_configurations(curve_file, loss_table):
    task = build_eval_task(loss_table, n_context=60, seed=3)
    free = unseen_rows(loss_table, task)
    np.testing.assert_array_equal(
        free, sorted(set(range(loss_table.n_curves)) - set(task.rows.tolist()))
    )
    acc = read_curve_tables(curve_file, ["acc_task"])[0]  # 3 learners x 4 seeds
    learner = acc.raw_configs[:, 0]
    for seed in range(4):  # tasks of 1 or 2 curves: 1 or 2 of the 3 learners seen
        task = build_eval_task(acc, n_context=3, seed=seed)
        rows, new = unseen_rows(acc, task), unseen_rows(acc, task, new_configs=True)
        assert rows.size == acc.n_curves - task.n_curves
        # other seeds of a learner in the task are unseen rows but not unseen configurations
        expected = [r for r in rows if learner[r] not in learner[task.rows]]
        assert len(expected) >= 4
        np.testing.assert_array_equal(new, expected)
