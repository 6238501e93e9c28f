"""The freeze-thaw optimiser (bo/freeze_thaw.py): ask/tell semantics, failures, resume."""

from __future__ import annotations

import inspect
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from bo.freeze_thaw import FreezeThaw, FreezeThawConfig, Record, Trial
from bo.journal import JournalInUse
from bo.space import CandidateTable, Categorical, Float, Int, Space
from pfn.surrogate import DEFAULT_SINGLE_WEIGHT, Surrogate

SPACE = Space(
    {"lr": Float(1e-4, 1e-1, log=True), "depth": Int(1, 4), "act": Categorical(["a", "b"])}
)
SMALL_POOL = FreezeThawConfig(n_candidates=64)


@pytest.fixture
def tiny(tiny_checkpoint_path) -> Surrogate:
    """A random-weight network: these tests check the loop's bookkeeping, not its choices."""
    return Surrogate.load(tiny_checkpoint_path)


def loss(config, step: int) -> float:
    """A toy loss: best at lr = 1e-2, decreasing in step."""
    q = math.exp(-((math.log10(config["lr"]) + 2) ** 2))
    return 1.0 - 0.5 * q * (1 - math.exp(-step / 3)) + 0.01 * config["depth"]


def make(tiny, **kw) -> FreezeThaw:
    kw.setdefault("max_steps", 5)
    kw.setdefault("minimize", True)
    return FreezeThaw(SPACE, surrogate=tiny, config=SMALL_POOL, **kw)


def test_trials_start_resume_and_finish(tiny):
    ft = make(tiny)
    first = ft.ask()
    assert (first.id, first.step, first.resume_from) == (0, 1, 0)
    assert SPACE.contains(dict(first.config))
    ft.tell(first, loss(first.config, 1))
    seen: dict[int, int] = {0: 1}
    for _ in range(30):
        trial = ft.ask()
        # a run resumes exactly where it was frozen; a new run starts at step 1
        assert trial.resume_from == seen.get(trial.id, 0) and trial.step == trial.resume_from + 1
        assert trial.step <= 5
        ft.tell(trial, loss(trial.config, trial.step))
        seen[trial.id] = trial.step
    assert ft.steps_spent == 31 == len(ft.history)
    best = ft.best()
    told = [(r.value, r.trial, r.step) for r in ft.history]
    assert (best.value, best.trial, best.step) == min(told)


def test_parallel_asks_are_distinct_and_fantasised(tiny):
    ft = make(tiny)
    t0 = ft.ask()
    ft.tell(t0, 0.9)
    pending = [ft.ask() for _ in range(4)]
    assert len({t.id for t in pending}) == 4  # a pending run is never handed out twice
    assert set(ft.pending) == set(pending)
    for t in pending:
        ft.tell(t, 0.8)
    assert ft.pending == ()


def test_a_pending_run_enters_the_decision_as_its_predicted_median(tiny, monkeypatch):
    ft = make(tiny)
    for v in (0.9, 0.8):
        ft.tell(ft.ask(), v)
    pending = ft.ask()
    fantasies, contexts = [], []
    forecast, views = tiny.forecast, tiny.forecast_views

    def spy_forecast(configs, **kw):
        fc = forecast(configs, **kw)
        fantasies.append((kw["qry_curve"], kw["qry_t"], fc.quantile(0.5)))
        return fc

    def spy_views(configs, **kw):
        contexts.append(kw)
        return views(configs, **kw)

    monkeypatch.setattr(tiny, "forecast", spy_forecast)
    monkeypatch.setattr(tiny, "forecast_views", spy_views)
    ft.ask()
    ((curves, times, median),) = fantasies  # one fantasy: the pending run's next step
    assert list(curves) == [pending.id] and list(times) == [pending.step / 5]
    ctx = contexts[0]
    assert (ctx["ctx_curve"][-1], ctx["ctx_t"][-1]) == (pending.id, pending.step / 5)
    assert ctx["ctx_y"][-1] == pytest.approx(median[0])  # read as a point of its curve
    assert len(ctx["ctx_curve"]) == 3  # the two told points and the fantasy


def test_bad_tells_are_refused(tiny):
    ft = make(tiny)
    t = ft.ask()
    with pytest.raises(ValueError, match="tell_failure"):
        ft.tell(t, float("nan"))
    with pytest.raises(ValueError, match="number"):
        ft.tell(t, "low")
    with pytest.raises(ValueError, match="unknown trial"):
        ft.tell(Trial(id=7, config={}, step=1, resume_from=0), 0.5)
    ft.tell(t, 0.5)
    with pytest.raises(ValueError, match="not pending"):
        ft.tell(t, 0.4)  # already told
    with pytest.raises(ValueError, match="not pending"):
        ft.tell_failure(t)


def test_failures_and_infinities_never_win(tiny):
    ft = make(tiny, max_steps=3)
    a = ft.ask()
    ft.tell(a, 0.7)
    b = ft.ask()
    ft.tell_failure(b)
    c = ft.ask()
    ft.tell(c, -math.inf)  # a diverged value: recorded, never the incumbent
    d = ft.ask()
    ft.tell(d, 1e34)
    assert ft.best().value == 0.7 and ft.best().trial == a.id
    failed = b.id
    for _ in range(12):  # a failed run is never resumed
        t = ft.ask()
        assert t.id != failed
        ft.tell(t, 0.8)
    assert [r.failed for r in ft.history if r.trial == failed] == [True]


def test_a_skipped_step_is_spent_without_a_value_and_the_run_goes_on(tiny, tmp_path):
    """tell_skipped: the step counts, the run resumes after it (before anything is measured, in
    preference to a new run), the surrogate reads no point for it, it is journalled and
    replayed, and the trial cannot be told again."""
    rows = CandidateTable.from_encoded(np.random.default_rng(0).random((2, 3)))

    def make_table() -> FreezeThaw:  # two rows, 4 steps each
        return FreezeThaw(None, candidates=rows, max_steps=4, surrogate=tiny, seed=2,
                          state_dir=tmp_path)  # fmt: skip

    ft = make_table()
    a = ft.ask()
    ft.tell_skipped(a)  # the first step of the first run: not measured
    with pytest.raises(ValueError, match="not pending"):
        ft.tell(a, 0.5)
    assert ft.history[-1] == Record(a.id, 1, None, False) and ft.steps_spent == 1
    assert ft.best() is None
    b = ft.ask()  # nothing measured yet: the skipped run goes on, no new run is started
    assert (b.id, b.step, b.resume_from) == (a.id, 2, 1)
    ft.tell(b, 0.6)
    contexts = []
    forecast_views = ft.surrogate.forecast_views

    def spy(configs, **kw):
        contexts.append((list(kw["ctx_curve"]), list(kw["ctx_t"])))
        return forecast_views(configs, **kw)

    ft.surrogate.forecast_views = spy  # type: ignore[method-assign]
    try:
        for _ in range(5):  # 6 steps left (2 of run 0, 4 of run 1): one stays
            t = ft.ask()
            ft.tell(t, 0.7)
    finally:
        del ft.surrogate.forecast_views
    assert contexts[0] == ([a.id], [2 / 4])  # run 0's measured step only, not the skipped one
    history = ft.history
    assert ft.steps_spent == 7
    ft.close()
    with make_table() as again:
        assert again.history == history
        last = again.ask()  # the one step left, counted after the replayed skip
        assert (last.step, last.resume_from) == (4, 3)


def test_before_any_measurement_the_furthest_skipped_run_goes_on(tiny):
    """Evaluated every few steps, the first run is trained until it is measured; a pending run
    is not handed out twice (a parallel worker starts a new one)."""
    ft = make(tiny, max_steps=6)
    a = ft.ask()
    ft.tell_skipped(a)
    b = ft.ask()
    c = ft.ask()  # b (run 0) is pending: a new run
    assert (b.id, b.step) == (a.id, 2) and (c.id, c.step) == (a.id + 1, 1)
    ft.tell_skipped(c)
    ft.tell_skipped(b)
    d = ft.ask()  # run 0 is further (step 2) than run 1 (step 1)
    assert (d.id, d.step) == (a.id, 3)


def test_candidate_table_rows_are_started_once(tiny):
    encoded = np.random.default_rng(0).random((6, 3))
    ft = FreezeThaw(None, candidates=CandidateTable.from_encoded(encoded), max_steps=2,
                    surrogate=tiny, seed=1)  # fmt: skip
    starts = []
    for _ in range(12):
        t = ft.ask()
        if t.resume_from == 0:
            starts.append(t.candidate)
        ft.tell(t, float(encoded[t.candidate].sum()))
    assert sorted(starts) == list(range(6))  # every row started exactly once: 6 x 2 steps
    with pytest.raises(RuntimeError, match="nothing to ask"):
        ft.ask()


def _table_starts(tiny, encoded: np.ndarray, config: FreezeThawConfig, seed: int) -> list[int]:
    """The rows a FreezeThaw over ``encoded`` starts, in order, until every row has run."""
    ft = FreezeThaw(None, candidates=CandidateTable.from_encoded(encoded), max_steps=1,
                    surrogate=tiny, seed=seed, config=config)  # fmt: skip
    starts = []
    for _ in range(len(encoded)):  # max_steps=1: every ask starts a row
        t = ft.ask()
        starts.append(t.candidate)
        ft.tell(t, float(encoded[t.candidate].sum()))
    return starts


@pytest.mark.parametrize("n_candidates", [1, 3])
def test_untried_configurations_come_before_repeats(tiny, n_candidates):
    # a table as LCDB's: configuration 0 repeated 6 times (seeds), configurations 1 and 2 once
    distinct = np.random.default_rng(0).random((3, 3))
    encoded = distinct[[0, 0, 1, 0, 0, 2, 0, 0]]
    key = {tuple(c): i for i, c in enumerate(distinct)}
    repeats_allowed = 0
    for seed in range(6):
        config = FreezeThawConfig(n_candidates=n_candidates)
        starts = _table_starts(tiny, encoded, config, seed)
        assert sorted(starts) == list(range(8))  # then every repeat is still run
        first = [key[tuple(encoded[r])] for r in starts[:3]]
        assert sorted(first) == [0, 1, 2]  # every configuration before any repeat
        again = _table_starts(tiny, encoded, FreezeThawConfig(n_candidates=n_candidates,
                                                               repeat_configs=True), seed)
        repeats_allowed += len({key[tuple(encoded[r])] for r in again[:3]}) < 3
    assert repeats_allowed >= 3  # 6 of 8 rows repeat one configuration: repeats come early


@pytest.mark.parametrize("n_candidates", [1, 3])
def test_a_repeat_waits_until_no_run_can_go_on(tiny, n_candidates):
    # configuration 0 in three rows (seeds), 1 and 2 once; runs of 3 steps
    distinct = np.random.default_rng(1).random((3, 3))
    encoded = distinct[[0, 1, 0, 2, 0]]
    key = {tuple(c): i for i, c in enumerate(distinct)}
    for seed in range(3):
        for repeat_configs in (False, True):
            ft = FreezeThaw(None, candidates=CandidateTable.from_encoded(encoded), max_steps=3,
                            surrogate=tiny, seed=seed,
                            config=FreezeThawConfig(n_candidates=n_candidates,
                                                    repeat_configs=repeat_configs))  # fmt: skip
            log = []  # (steps spent before the ask, configuration of a new run or None)
            for spent in range(15):  # five rows of three steps: the whole table
                t = ft.ask()
                new = key[tuple(encoded[t.candidate])] if t.resume_from == 0 else None
                log.append((spent, new))
                ft.tell(t, float(encoded[t.candidate].sum()))
            starts = [(spent, c) for spent, c in log if c is not None]
            assert len(starts) == 5  # every row ran in the end
            if not repeat_configs:
                assert sorted(c for _, c in starts[:3]) == [0, 1, 2]
                assert all(spent >= 9 for spent, _ in starts[3:])  # after 3 runs x 3 steps
    with pytest.raises(RuntimeError, match="nothing to ask"):
        ft.ask()


@pytest.mark.parametrize(
    "n, sobol, local", [(3, 0.5, 0.5), (5, 0.7, 0.3), (1, 0.5, 0.5), (8, 0, 1)]
)
def test_the_pool_has_its_size_whatever_the_shares_round_to(tiny, n, sobol, local):
    config = FreezeThawConfig(n_candidates=n, share_sobol=sobol, share_local=local)
    ft = FreezeThaw(SPACE, max_steps=5, surrogate=tiny, config=config)
    ft.tell(ft.ask(), 0.3)  # an incumbent: the local share is drawn
    pool, rows = ft._candidate_pool(np.random.default_rng(0), hold_repeats=True)
    assert pool.shape == (n, SPACE.dim) and rows is None
    ft.tell(ft.ask(), 0.2)  # and a decision goes through


def test_a_discrete_space_is_not_repeated_while_untried_configurations_remain(tiny):
    space = Space({"a": Categorical(["x", "y", "z"]), "b": Int(1, 2)})  # 6 configurations
    for n_candidates, seed in [(1, 0), (1, 1), (8, 0), (8, 1)]:
        ft = FreezeThaw(space, max_steps=1, surrogate=tiny, seed=seed,
                        config=FreezeThawConfig(n_candidates=n_candidates))  # fmt: skip
        pending = [ft.ask() for _ in range(2)]  # both random starts, before any tell
        for t in pending:
            ft.tell(t, 0.5)
        starts = [tuple(t.config.values()) for t in pending]
        for _ in range(4):
            t = ft.ask()
            starts.append(tuple(t.config.values()))
            ft.tell(t, 0.5)
        assert len(set(starts)) == 6  # the six configurations, none twice
        t = ft.ask()  # the space is exhausted: a repeat, not an error
        assert tuple(t.config.values()) in set(starts)
    ft = FreezeThaw(space, max_steps=2, surrogate=tiny, seed=0,
                    config=FreezeThawConfig(n_candidates=4))  # fmt: skip
    new = []
    for spent in range(14):  # 6 configurations x 2 steps, then repeats
        t = ft.ask()
        if t.resume_from == 0:
            new.append((spent, tuple(t.config.values())))
        ft.tell(t, 0.5)
    assert len({c for _, c in new[:6]}) == 6 and all(spent >= 12 for spent, _ in new[6:])
    assert len(new) == 7  # one repeat, once every run had finished
    assert "repeat_configs" not in ft._settings()["config"]  # old journals resume


def test_default_acquisition_is_mfei_everywhere(tiny):
    from bo.acquisition import DEFAULT_ACQUISITION
    from bo.hpo_benchmark import FreezeThawOptimizer
    from bo.optimize import optimize

    assert DEFAULT_ACQUISITION == "mfei-random"
    assert make(tiny).acquisition == DEFAULT_ACQUISITION
    for fn in (optimize, FreezeThawOptimizer.__init__):
        default = inspect.signature(fn).parameters["acquisition"].default
        assert default == DEFAULT_ACQUISITION


@pytest.mark.parametrize("acquisition", ["mfpi-random", "mfei-random", "ucb-random"])
def test_a_decision_mixes_the_views_only_where_it_must(tiny, monkeypatch, acquisition):
    # MFPI and MFEI are mixed from each view's scores: no (M, K) mixture is built for them;
    # UCB's quantile needs it
    from pfn.forecast import ViewMixture

    built = []
    mixed = ViewMixture.mixed

    def spy(self):
        built.append(self.single is not None)
        return mixed(self)

    monkeypatch.setattr(ViewMixture, "mixed", spy)
    ft = FreezeThaw(SPACE, max_steps=5, minimize=True, surrogate=tiny, acquisition=acquisition,
                    config=FreezeThawConfig(n_candidates=8, single_weight=0.3))  # fmt: skip
    for v in (0.9, 0.8, 0.7):
        ft.tell(ft.ask(), v)
    assert built == ([True] * 2 if acquisition == "ucb-random" else [])  # the 2nd and 3rd asks


def test_new_configurations_are_scored_on_the_context_view(tiny, monkeypatch):
    # a new configuration has no points to read alone: only the paused runs' queries mix in the
    # single-curve view
    decisions = []
    forecast_views = type(tiny).forecast_views

    def spy(self, configs, **arrays):
        views = forecast_views(self, configs, **arrays)
        decisions.append((arrays["qry_curve"], arrays["ctx_curve"], views))
        return views

    monkeypatch.setattr(type(tiny), "forecast_views", spy)
    ft = FreezeThaw(SPACE, max_steps=5, minimize=True, surrogate=tiny,
                    config=FreezeThawConfig(n_candidates=8, single_weight=0.3))  # fmt: skip
    for v in (0.9, 0.8, 0.7):
        ft.tell(ft.ask(), v)
    assert len(decisions) == 2  # the first ask starts a random configuration
    for qry_curve, ctx_curve, views in decisions:
        has_points = np.isin(qry_curve, ctx_curve)
        assert has_points.any() and not has_points.all()
        np.testing.assert_array_equal(views.single_index >= 0, has_points)


MIXED = Space({"lr": Float(1e-4, 1e-1, log=True), "act": Categorical(["a", "b", "c", "d"]),
               "depth": Int(1, 4)})  # fmt: skip


@pytest.mark.parametrize("permutations", [0, 1, 3])
def test_decisions_average_random_orders_of_the_parameters(tiny, monkeypatch, permutations):
    # each decision scores its queries under `permutations` random orders of the encoded dims
    # (0: the encoding's order) and averages the acquisition values
    import bo.freeze_thaw as ftm

    calls, orders, picked = [], [], []
    forecast_views = type(tiny).forecast_views
    random_order = ftm.random_order

    def spy(self, configs, **arrays):
        calls.append((np.asarray(configs), np.asarray(arrays["qry_curve"])))
        return forecast_views(self, configs, **arrays)

    def slot_zero(acquisition, fc, threshold):  # a network that prefers what sits in slot 0
        configs, qry = calls[-1]
        return configs[qry, 0]

    def record(values, rng):  # start the last new configuration: every trial a new run
        picked.append(np.array(values))
        return len(values) - 1

    monkeypatch.setattr(type(tiny), "forecast_views", spy)
    def recorded_order(groups, rng):
        orders.append(random_order(groups, rng))
        return orders[-1]

    monkeypatch.setattr(ftm, "random_order", recorded_order)
    monkeypatch.setattr(ftm, "acquisition_values", slot_zero)
    monkeypatch.setattr(ftm, "pick_argmax", record)
    ft = FreezeThaw(MIXED, max_steps=5, minimize=True, surrogate=tiny, seed=3,
                    config=FreezeThawConfig(n_candidates=6, permutations=permutations))  # fmt: skip
    trials = []
    for v in (0.9, 0.8, 0.7, 0.6, 0.5):
        trials.append(ft.ask())
        ft.tell(trials[-1], v)
    k = max(permutations, 1)
    assert len(calls) == 4 * k == len(picked) * k and len(orders) == 4 * permutations
    assert len({t.id for t in trials}) == 5
    for d, values in enumerate(picked):  # decision d follows the first d + 1 runs
        runs = MIXED.encode_many([dict(t.config) for t in trials[: d + 1]])
        group = calls[d * k : (d + 1) * k]
        for i, (configs, qry) in enumerate(group):
            order = orders[d * k + i] if permutations else np.arange(MIXED.dim)
            np.testing.assert_allclose(configs[: d + 1], runs[:, order], atol=1e-6)
            assert np.array_equal(qry, group[0][1])
        np.testing.assert_allclose(values, np.mean([c[q, 0] for c, q in group], axis=0))
    if permutations:
        assert len({tuple(o) for o in orders}) > 1  # a fresh order every time


@pytest.mark.parametrize("start_value", ["best", "random"])
def test_start_value_decides_whether_the_pool_best_starts(tiny, monkeypatch, start_value):
    # the paused run is worth 0.5, each new row its coordinate: "best" starts the best row
    # whenever it beats 0.5; "random" lets a random row's value decide, and starts the best row
    import bo.freeze_thaw as ftm

    rows = np.linspace(0.0, 1.0, 8)[:, None]  # rows 5, 6, 7 beat 0.5
    calls = []
    forecast_views = type(tiny).forecast_views

    def spy(self, configs, **arrays):
        calls.append((np.asarray(configs), np.asarray(arrays["qry_curve"])))
        return forecast_views(self, configs, **arrays)

    def values(acquisition, fc, threshold):
        configs, qry = calls[-1]
        return np.where(qry < 1, 0.5, configs[qry, 0])  # query 0: the paused run

    monkeypatch.setattr(type(tiny), "forecast_views", spy)
    monkeypatch.setattr(ftm, "acquisition_values", values)
    started = []
    for seed in range(40):
        config = FreezeThawConfig(n_candidates=8, start_value=start_value)
        table = CandidateTable.from_encoded(rows)
        ft = FreezeThaw(None, candidates=table, max_steps=5, surrogate=tiny, seed=seed,
                        config=config)  # fmt: skip
        first = ft.ask()
        ft.tell(first, 0.3)
        second = ft.ask()
        if first.candidate != 7:
            started.append(second.candidate if second.resume_from == 0 else None)
    new = [c for c in started if c is not None]
    assert set(new) == {7}  # whenever a new run starts, it is the best row
    if start_value == "best":
        assert len(new) == len(started)
    else:  # 3 of the 7 free rows (2 when row 5 or 6 was first) beat the paused run
        assert 0.15 * len(started) < len(new) < 0.7 * len(started)


def test_a_random_order_keeps_each_parameter_together():
    from bo.space import random_order

    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        order = random_order(MIXED.groups, rng)
        assert sorted(order.tolist()) == list(range(6))
        where = np.flatnonzero(np.isin(order, [1, 2, 3, 4]))  # the one-hot dims of "act"
        assert where.max() - where.min() == 3  # stay adjacent
        seen.add(tuple(order.tolist()))
    assert len(seen) > 72  # of 3! orders of the parameters x 4! of the choices = 144


def test_the_adapter_keeps_a_categorical_together(curve_file, tiny_checkpoint_path, monkeypatch):
    from bo.hpo_benchmark import FreezeThawOptimizer, simulate
    from pfn.curve_table import read_curve_tables

    built = []
    init = FreezeThaw.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self.candidates.groups)

    monkeypatch.setattr(FreezeThaw, "__init__", spy)
    table = read_curve_tables(curve_file, ["acc_task"])[0]
    opt = FreezeThawOptimizer(checkpoint=str(tiny_checkpoint_path),
                              config=FreezeThawConfig(permutations=1))  # fmt: skip
    simulate(opt, table, budget=10, seed=0)
    assert built == [((0, 1, 2),)]


def test_bad_settings(tiny):
    with pytest.raises(ValueError, match="start_value must be one of"):
        FreezeThawConfig(start_value="max")
    with pytest.raises(ValueError, match="permutations must be >= 0"):
        FreezeThawConfig(permutations=-1)
    with pytest.raises(ValueError, match="max_steps"):
        make(tiny, max_steps=0)
    with pytest.raises(ValueError, match="acquisition"):
        make(tiny, acquisition="greedy")
    with pytest.raises(ValueError, match="space, a candidate table"):
        FreezeThaw(None, max_steps=3, surrogate=tiny)
    wide = Space({f"x{i}": Float(0, 1) for i in range(40)})
    with pytest.raises(ValueError, match="max_hps"):
        FreezeThaw(wide, max_steps=3, surrogate=tiny)
    for bad in (1.5, "3", True):
        with pytest.raises(ValueError, match="seed must be an integer"):
            make(tiny, seed=bad)
        with pytest.raises(ValueError, match="budget must be an integer"):
            make(tiny, budget=bad)


def test_numpy_integers_are_plain_settings(tiny, tmp_path):
    with make(tiny, seed=np.int64(3), budget=np.int32(50), state_dir=tmp_path) as ft:
        assert type(ft.seed) is int and type(ft.budget) is int
        ft.tell(ft.ask(), 0.5)
    with make(tiny, seed=3, budget=50, state_dir=tmp_path) as again:  # the same settings
        assert len(again.history) == 1


def test_an_ask_that_cannot_be_journalled_changes_nothing(tiny, tmp_path, monkeypatch):
    ft = make(tiny, seed=2, state_dir=tmp_path)
    ft.tell(ft.ask(), 0.9)
    journal = ft._journal
    append = journal.append

    def full_disk(kind, **fields):
        if kind == "ask":
            raise sqlite3.OperationalError("database or disk is full")
        append(kind, **fields)

    monkeypatch.setattr(journal, "append", full_disk)
    for _ in range(3):  # the first ask after the tell starts a new run (or resumes run 0)
        with pytest.raises(sqlite3.OperationalError):
            ft.ask()
        assert ft.pending == () and set(ft.configs()) == {0}
    monkeypatch.setattr(journal, "append", append)
    trials = [ft.ask() for _ in range(3)]
    for t in trials:
        ft.tell(t, 0.5)
    ft.close()
    with make(tiny, seed=2, state_dir=tmp_path) as again:  # the journal replays
        assert again.history == ft.history and again.configs() == ft.configs()
    reference = make(tiny, seed=2)  # and the failed asks did not change the decisions
    reference.tell(reference.ask(), 0.9)
    assert [(t.id, t.step) for t in (reference.ask() for _ in range(3))] == [
        (t.id, t.step) for t in trials
    ]


def test_workers_may_ask_and_tell_from_threads(tiny, tmp_path):
    with make(tiny, state_dir=tmp_path) as ft:
        ft.tell(ft.ask(), 0.9)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(3):
                    t = ft.ask()
                    ft.tell(t, loss(t.config, t.step))
            except BaseException as err:  # noqa: BLE001 (reported below)
                errors.append(err)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == [] and len(ft.history) == 13 and ft.pending == ()
        steps = [(r.trial, r.step) for r in ft.history]
        assert len(set(steps)) == 13  # no run step handed out twice


def test_score_range_from_bounds_or_from_the_data(tiny, tmp_path):
    with pytest.raises(ValueError, match="score_range"):
        FreezeThawConfig(score_range="auto")
    values = [0.9, 0.7, 0.62, 0.6, 0.75]  # losses; the best, 0.6, is far from the bound 0
    scalers = {}
    for mode in ("bounds", "data"):
        ft = FreezeThaw(SPACE, max_steps=5, minimize=True, lower_bound=0.0, surrogate=tiny,
                        config=FreezeThawConfig(n_candidates=4, score_range=mode))  # fmt: skip
        for v in values:
            trial = ft.ask()
            ft.tell(trial, v)
        scalers[mode] = ft._scaler()
    by_bounds, by_data = (scalers[m].to_score(np.array([0.0, 0.6, 0.9])) for m in scalers)
    assert by_bounds[0] == pytest.approx(1.0)  # the bound is the score-1 end
    assert by_bounds[1] < 0.9  # so the best run sits well below it
    assert by_data[1] == pytest.approx(0.9)  # the best run is the soft best end
    assert by_data[0] < 1.0  # the bound is only squashed into the top tail
    # the runs' range covers more of [0, 1]
    assert by_data[1] - by_data[2] > by_bounds[1] - by_bounds[2]
    # a journal remembers the setting
    assert FreezeThawConfig().score_range == "data"  # the default
    FreezeThaw(SPACE, max_steps=5, minimize=True, surrogate=tiny, state_dir=tmp_path,
               config=FreezeThawConfig(n_candidates=4, score_range="bounds")).close()  # fmt: skip
    with pytest.raises(ValueError, match="other settings"):
        FreezeThaw(SPACE, max_steps=5, minimize=True, surrogate=tiny, state_dir=tmp_path,
                   config=FreezeThawConfig(n_candidates=4))  # fmt: skip


def test_single_weight_reaches_the_surrogate_and_the_journal(tiny, tmp_path, monkeypatch):
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="single_weight"):
            FreezeThawConfig(single_weight=bad)
    assert FreezeThawConfig().single_weight == DEFAULT_SINGLE_WEIGHT  # the surrogate's default
    assert type(FreezeThawConfig(single_weight=np.float32(0.25)).single_weight) is float
    weights = []
    forecast = tiny.forecast_views  # forecast goes through it

    def spy(*args, **kwargs):
        weights.append(kwargs.get("single_weight"))
        return forecast(*args, **kwargs)

    monkeypatch.setattr(tiny, "forecast_views", spy)
    for w in (0.0, 0.4):
        weights.clear()
        ft = FreezeThaw(SPACE, max_steps=5, minimize=True, surrogate=tiny,
                        config=FreezeThawConfig(n_candidates=4, single_weight=w))  # fmt: skip
        for v in (0.9, 0.8, 0.7):
            ft.tell(ft.ask(), v)
        calls = len(weights)
        ft.ask()
        ft.ask()  # decided with the first one pending: a fantasy, then the scores
        assert calls >= 2 and len(weights) >= calls + 3 and set(weights) == {w}
    # weight 0 is journalled without the setting, as journals before it existed (all with the
    # context view alone): they resume with weight 0; another weight is other settings
    old = FreezeThaw(SPACE, max_steps=5, minimize=True, surrogate=tiny, state_dir=tmp_path,
                     config=FreezeThawConfig(n_candidates=4, single_weight=0.0))  # fmt: skip
    assert "single_weight" not in old._settings()["config"]
    old.close()
    FreezeThaw(SPACE, max_steps=5, minimize=True, surrogate=tiny, state_dir=tmp_path,
               config=FreezeThawConfig(n_candidates=4, single_weight=0.0)).close()  # fmt: skip
    for other in (
        FreezeThawConfig(n_candidates=4),
        FreezeThawConfig(n_candidates=4, single_weight=0.2),
    ):
        with pytest.raises(ValueError, match=r"differing: config.single_weight.*single_weight=0"):
            FreezeThaw(SPACE, max_steps=5, minimize=True, surrogate=tiny, state_dir=tmp_path,
                       config=other)  # fmt: skip


def test_state_dir_resumes_exactly(tiny, tmp_path):
    def run(ft: FreezeThaw, n: int) -> list[Trial]:
        out = []
        for _ in range(n):
            t = ft.ask()
            ft.tell(t, loss(t.config, t.step))
            out.append(t)
        return out

    straight = make(tiny, seed=3)
    reference = run(straight, 12)
    first = make(tiny, seed=3, state_dir=tmp_path)
    run(first, 7)
    pending = first.ask()  # handed out, then the process "dies"
    first.close()
    again = make(tiny, seed=3, state_dir=tmp_path)
    assert again.history == straight.history[:7]
    assert again.pending == (pending,)
    again.tell(pending, loss(pending.config, pending.step))
    rest = run(again, 4)
    assert [(t.id, t.step) for t in [pending, *rest]] == [(t.id, t.step) for t in reference[7:]]
    assert again.best() == straight.best()
    with pytest.raises(JournalInUse, match="open in another optimiser"):
        make(tiny, seed=3, state_dir=tmp_path)  # while `again` holds the folder
    again.close()
    with pytest.raises(ValueError, match="other settings"):
        make(tiny, seed=4, state_dir=tmp_path)
    with make(tiny, seed=3, state_dir=tmp_path) as last:  # a failed open released the folder
        assert last.history == again.history


def test_release_returns_a_pending_trial(tiny, tmp_path):
    ft = make(tiny, state_dir=tmp_path)
    t = ft.ask()
    ft.release(t)
    assert ft.pending == ()
    with pytest.raises(ValueError, match="not pending"):
        ft.tell(t, 0.3)
    ft.close()
    assert make(tiny, state_dir=tmp_path).pending == ()


CHILD = textwrap.dedent(
    """
    from bo.freeze_thaw import FreezeThaw, FreezeThawConfig
    from bo.space import Float, Space
    from pfn.surrogate import Surrogate

    space = Space({{"x": Float(0.0, 1.0)}})
    ft = FreezeThaw(space, max_steps=4, minimize=True, surrogate=Surrogate.load({ckpt!r}),
                    state_dir={state!r}, config=FreezeThawConfig(n_candidates=16))
    while True:
        t = ft.ask()
        value = (t.config["x"] - 0.3) ** 2 + 1.0 / t.step
        ft.tell(t, value)
        print(t.id, t.step, repr(value), flush=True)
    """
)


def test_sigkill_mid_run_loses_nothing(tmp_path, tiny_checkpoint_path):
    """A worker killed by SIGKILL: the resumed optimiser holds every value it had told."""
    state = tmp_path / "state"
    code = CHILD.format(ckpt=str(tiny_checkpoint_path), state=str(state))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    told = []
    for line in proc.stdout:
        run, step, value = line.split()
        told.append((int(run), int(step), float(value)))
        if len(told) == 25:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ft = FreezeThaw(Space({"x": Float(0.0, 1.0)}), max_steps=4, minimize=True,
                    surrogate=Surrogate.load(tiny_checkpoint_path), state_dir=state,
                    config=FreezeThawConfig(n_candidates=16))  # fmt: skip
    history = [(r.trial, r.step, r.value) for r in ft.history]
    # every value whose tell returned is there (one more may have been told before the kill)
    assert history[: len(told)] == told and len(history) <= len(told) + 1
    assert ft.best().value == min(v for _, _, v in history)
    assert len(ft.pending) <= 1  # a trial asked but not told when the signal came
    # and the optimiser goes on
    t = ft.pending[0] if ft.pending else ft.ask()
    ft.tell(t, 0.5)
