"""Tests of bo.integrations.ray_tune: the freeze-thaw trial scheduler for Ray Tune.

The unit tests drive the scheduler's hooks with fake trials and a fake controller (no Ray
runtime); the end-to-end tests run Tune on a local 2-CPU Ray instance with the random-weight tiny
surrogate (they check bookkeeping and checkpoints, not the quality of the decisions).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray import tune  # noqa: E402
from ray.tune.experiment import Trial  # noqa: E402
from ray.tune.schedulers import TrialScheduler  # noqa: E402

import bo.integrations.ray_tune as ray_tune  # noqa: E402
from bo.acquisition import DEFAULT_ACQUISITION, acquisition_values, draw_lookahead  # noqa: E402
from bo.integrations.ray_tune import FreezeThawScheduler  # noqa: E402
from bo.space import Categorical, Float, Space  # noqa: E402
from pfn.scaling import MetricScaler  # noqa: E402
from pfn.surrogate import Surrogate  # noqa: E402

SPACE = Space({"lr": Float(1e-4, 1e-1, log=True), "opt": Categorical(["sgd", "adam"])})
PAUSE, STOP = TrialScheduler.PAUSE, TrialScheduler.STOP


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint_path) -> Surrogate:
    """The random-weight tiny model: decides nothing sensible, but runs the whole path."""
    return Surrogate.load(tiny_checkpoint_path)


class FakeTrial:
    """What the scheduler reads of a Tune trial."""

    def __init__(self, trial_id, config, status=Trial.PENDING, cpus=1.0):
        self.trial_id, self.config, self.status = trial_id, config, status
        self.last_result: dict = {}
        self.checkpoint = object()  # "has a checkpoint"
        self.placement_group_factory = type("PGF", (), {"required_resources": {"CPU": cpus}})


class FakeController:
    """The whitelisted part of Tune's controller that the scheduler uses."""

    def __init__(self, scheduler, trials):
        self.scheduler, self.trials = scheduler, list(trials)
        for t in self.trials:
            scheduler.on_trial_add(self, t)

    def get_trials(self):
        return self.trials

    def _set_trial_status(self, trial, status):
        trial.status = status

    def stop_trial(self, trial):
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
        elif trial.status == Trial.RUNNING:
            self.scheduler.on_trial_complete(self, trial, trial.last_result)
        trial.status = Trial.TERMINATED

    # -- helpers of the tests, not of Tune --

    def choose(self):
        """Ask the scheduler as Tune does: its choice becomes PENDING, waiting for an actor."""
        trial = self.scheduler.choose_trial_to_run(self)
        if trial is not None:
            trial.status = Trial.PENDING
        return trial

    def run(self, trial):
        """Start ``trial`` as Tune does with the scheduler's choice."""
        trial.status = Trial.RUNNING

    def report(self, trial, value, step=None):
        """One result of a running trial; returns the scheduler's decision (and applies it)."""
        step = step if step is not None else len(self.scheduler.runs[trial.trial_id].steps) + 1
        result = {"training_iteration": step, "loss": value}
        decision = self.scheduler.on_trial_result(self, trial, result)
        trial.last_result = result
        if decision == PAUSE:
            trial.status = Trial.PAUSED
        elif decision == STOP:
            self.stop_trial(trial)
        return decision


def trial(i, lr=1e-3, opt="adam", status=Trial.PENDING):
    return FakeTrial(f"t{i}", {"lr": lr, "opt": opt, "batch": 32}, status)


def scheduler(surrogate, **kw):
    kw.setdefault("metric", "loss")
    kw.setdefault("mode", "min")
    kw.setdefault("max_steps", 10)
    return FreezeThawScheduler(SPACE, surrogate=surrogate, **kw)


def played(sched, curves):
    """A controller whose trials t0, t1, ... have reported ``curves`` (losses) and are PAUSED."""
    ctl = FakeController(sched, [trial(i, lr=10.0 ** -(1 + i)) for i in range(len(curves))])
    for t, curve in zip(ctl.trials, curves, strict=True):
        ctl.run(t)
        for v in curve:
            assert ctl.report(t, v) == PAUSE
    return ctl


@pytest.fixture
def calls(tiny, monkeypatch) -> list[dict]:
    """Records every forecast of ``tiny`` (its arguments) during the test (``forecast`` goes
    through ``forecast_views``)."""
    recorded: list[dict] = []
    forecast = tiny.forecast_views

    def spy(configs, **kw):
        recorded.append({"configs": np.asarray(configs), **kw})
        return forecast(configs, **kw)

    monkeypatch.setattr(tiny, "forecast_views", spy)
    return recorded


# ---- bookkeeping ---------------------------------------------------------------------------------


def test_every_result_pauses_and_max_steps_stops(tiny):
    sched = scheduler(tiny, max_steps=3)
    ctl = FakeController(sched, [trial(0)])
    t = ctl.trials[0]
    ctl.run(t)
    assert [ctl.report(t, v) for v in (0.9, 0.8)] == [PAUSE, PAUSE]
    ctl.run(t)
    assert ctl.report(t, 0.7) == STOP
    run = sched.runs["t0"]
    assert run.steps == (1, 2, 3) and run.values == (0.9, 0.8, 0.7)
    assert run.finished and not run.failed and t.status == Trial.TERMINATED
    # Tune repeats the last result when a trainable returns: no new point, and the trial stops
    sched2 = scheduler(tiny, max_steps=3)
    ctl2 = FakeController(sched2, [trial(0)])
    t2 = ctl2.trials[0]
    ctl2.run(t2)
    assert ctl2.report(t2, 0.9) == PAUSE
    t2.status = Trial.RUNNING
    assert sched2.on_trial_result(ctl2, t2, {"training_iteration": 1, "loss": 0.9}) == STOP
    assert sched2.runs["t0"].steps == (1,)


def test_first_choice_takes_the_first_trial_and_holds_the_others(tiny):
    sched = scheduler(tiny)
    ctl = FakeController(sched, [trial(i) for i in range(3)])
    first = ctl.choose()
    assert first is ctl.trials[0]
    assert sched.last_decision.trial_id == "t0" and sched.last_decision.horizon is None
    # the others are held PAUSED: Tune would start PENDING trials by itself
    assert [t.status for t in ctl.trials] == [Trial.PENDING, Trial.PAUSED, Trial.PAUSED]
    # idempotent while the choice waits for resources: no new decision
    assert ctl.choose() is first and len(sched.decisions) == 1
    ctl.run(first)
    second = ctl.choose()  # nothing observed yet: the first waiting one
    assert second is ctl.trials[1] and len(sched.decisions) == 2


def test_decision_scores_paused_at_b_plus_h_and_new_at_h_in_one_forecast(tiny, calls):
    sched = scheduler(tiny, max_steps=10, budget=8, seed=3)
    assert sched.acquisition == DEFAULT_ACQUISITION
    ctl = played(sched, [[0.9, 0.7, 0.6], [2.0]])  # t0 at step 3, t1 at step 1 (a loss of 2)
    ctl.choose().status = Trial.PAUSED  # an earlier decision, not run
    new = trial(9, lr=0.05)
    ctl.trials.append(new)
    sched.on_trial_add(ctl, new)
    n_before = len(sched.decisions)
    pick = ctl.choose()
    assert len(calls) == 2  # one forecast per decision
    call, dec = calls[1], sched.last_decision
    assert "single_weight" not in call  # the surrogate's own predictive (its single_weight)
    # the draws of decision k come from (seed, k); remaining = budget - steps spent
    rng = np.random.default_rng([3, n_before])
    scaler = MetricScaler.fit_runs([[0.9, 0.7, 0.6], [2.0]], higher_is_better=False)
    scores = scaler.to_score(np.array([0.9, 0.7, 0.6, 2.0]))
    look = draw_lookahead(rng, remaining=8 - 4, max_steps=10, f_best=scores.max())
    assert (dec.horizon, dec.threshold) == (look.horizon, look.threshold)
    np.testing.assert_array_equal(call["ctx_curve"], [0, 0, 0, 1])
    np.testing.assert_allclose(call["ctx_t"], [0.1, 0.2, 0.3, 0.1])
    np.testing.assert_allclose(call["ctx_y"], scores)
    assert call["ctx_y"][2] > call["ctx_y"][0] > call["ctx_y"][3]  # lower loss, higher score
    h = look.horizon
    np.testing.assert_array_equal(call["qry_curve"], [0, 1, 2])
    np.testing.assert_allclose(
        call["qry_t"], [min(3 + h, 10) / 10, min(1 + h, 10) / 10, min(h, 10) / 10]
    )
    np.testing.assert_allclose(call["configs"][2], SPACE.encode({"lr": 0.05, "opt": "adam"}))
    # the pick is the argmax of the acquisition over this forecast
    fc = tiny.forecast_views(call["configs"], **{k: v for k, v in call.items() if k != "configs"})
    values = acquisition_values(sched.acquisition, fc, look.threshold)
    k = ctl.trials.index(pick)
    assert values[k] == values.max() == pytest.approx(dec.value)
    assert dec.trial_id == pick.trial_id and dec.step == [4, 2, 1][k] and dec.n_candidates == 3


@pytest.mark.parametrize("best", [0, 1, 2])
def test_the_argmax_is_resumed_or_started(tiny, monkeypatch, best):
    sched = scheduler(tiny)
    ctl = played(sched, [[0.9, 0.8], [0.7]])
    ctl.trials.append(trial(2, lr=0.02))
    sched.on_trial_add(ctl, ctl.trials[2])
    values = np.full(3, 0.1)
    values[best] = 0.5
    monkeypatch.setattr(ray_tune, "acquisition_values", lambda name, fc, thr: values)
    pick = ctl.choose()
    assert pick is ctl.trials[best]
    assert sched.last_decision.step == [3, 2, 1][best]
    assert sched.last_decision.value == 0.5 and sched.last_decision.n_candidates == 3


def test_a_crash_scores_worst_and_is_never_resumed(tiny, calls):
    sched = scheduler(tiny)
    ctl = played(sched, [[0.5], [0.9]])
    crashed = ctl.trials[0]
    ctl.run(crashed)
    sched.on_trial_error(ctl, crashed)
    crashed.status = Trial.ERROR
    run = sched.runs["t0"]
    assert run.failed and run.steps == (1, 2) and run.values == (0.5, math.inf)
    for _ in range(5):  # never chosen; its failure point scores 0
        pick = ctl.choose()
        assert pick is ctl.trials[1]
        assert calls[-1]["ctx_y"][1] == 0.0
        assert list(calls[-1]["qry_curve"]) == [1]
        pick.status = Trial.PAUSED
    # a failed trial Tune still lists as waiting is stopped, not resumed
    crashed.status = Trial.PAUSED
    assert ctl.choose() is ctl.trials[1]
    assert crashed.status == Trial.TERMINATED


def test_a_retried_crash_is_forgotten(tiny):
    sched = scheduler(tiny)
    ctl = played(sched, [[0.5]])
    t = ctl.trials[0]
    ctl.run(t)
    sched.on_trial_error(ctl, t)  # Tune with max_failures > 0: error, then re-added PENDING
    assert sched.runs["t0"].failed
    t.status = Trial.PENDING
    sched.on_trial_add(ctl, t)
    assert not sched.runs["t0"].failed and sched.runs["t0"].steps == (1,)
    assert ctl.choose() is t


def test_nan_is_a_failure_and_inf_a_diverged_value(tiny, calls):
    sched = scheduler(tiny)
    ctl = played(sched, [[0.5], [0.6]])
    a, b = ctl.trials
    ctl.run(a)
    assert ctl.report(a, math.nan) == STOP
    assert sched.runs["t0"].failed and sched.runs["t0"].values == (0.5, math.inf)
    ctl.run(b)
    assert ctl.report(b, math.inf) == PAUSE  # diverged: recorded, may still be resumed
    assert not sched.runs["t1"].failed and sched.runs["t1"].values == (0.6, math.inf)
    assert ctl.choose() is b
    np.testing.assert_array_equal(np.asarray(calls[-1]["ctx_y"])[[1, 3]], [0.0, 0.0])
    assert "best loss=0.5 (trial t0, step 1)" in sched.debug_string()
    ctl.run(b)
    with pytest.raises(ValueError, match="not a number"):
        sched.on_trial_result(ctl, b, {"training_iteration": 3, "loss": "oops"})


def test_mode_max_scores_higher_values_higher(tiny, calls):
    sched = scheduler(tiny, mode="max", lower_bound=0.0, upper_bound=1.0)
    sched.choose_trial_to_run(played(sched, [[0.2], [0.9]]))
    np.testing.assert_allclose(calls[-1]["ctx_y"], [0.2, 0.9])  # bounds [0, 1]: identity


def test_the_budget_stops_every_waiting_trial(tiny):
    sched = scheduler(tiny, budget=3)
    ctl = played(sched, [[0.5], [0.6]])
    extra = trial(5)
    ctl.trials.append(extra)
    sched.on_trial_add(ctl, extra)
    a, b = ctl.trials[:2]
    ctl.run(a)
    assert ctl.choose() is None  # 2 spent + 1 running: nothing more starts
    assert [t.status for t in ctl.trials] == [Trial.RUNNING, Trial.TERMINATED, Trial.TERMINATED]
    assert sched.runs["t1"].finished and sched.runs["t5"].finished
    assert ctl.report(a, 0.4) == STOP and sched.steps_spent == 3
    assert "3/3 steps" in sched.debug_string()


def test_a_paused_trial_without_a_checkpoint_is_stopped_not_resumed(tiny, caplog):
    sched = scheduler(tiny)
    ctl = played(sched, [[0.5, 0.4], [0.6]])
    lost, kept = ctl.trials
    lost.checkpoint = None  # the trainable reported no checkpoint: Tune cannot thaw it
    with caplog.at_level("WARNING"):
        chosen = ctl.choose()
    assert chosen is not lost and lost.status == Trial.TERMINATED
    assert sched.runs["t0"].finished and sched.runs["t0"].values == (0.5, 0.4)  # still counts
    assert "cannot resume where it stopped" in caplog.text and "t0" in caplog.text
    assert sched.steps_spent == 3  # its two steps stay spent
    new = trial(7)  # a fresh trial needs no checkpoint
    new.checkpoint = None
    ctl.trials.append(new)
    sched.on_trial_add(ctl, new)
    assert new.status != Trial.TERMINATED and kept.status != Trial.TERMINATED


def test_waits_for_free_resources(tiny, monkeypatch):
    sched = scheduler(tiny, budget=6)
    ctl = played(sched, [[0.5], [0.6], [0.7]])
    monkeypatch.setattr(ray_tune.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray_tune.ray, "cluster_resources", lambda: {"CPU": 2.0, "memory": 1e9})
    ctl.run(ctl.trials[0])
    ctl.run(ctl.trials[1])
    n = len(sched.decisions)
    assert ctl.choose() is None and len(sched.decisions) == n  # no free CPU
    ctl.trials[1].status = Trial.PAUSED
    assert ctl.choose() in ctl.trials[1:]  # one CPU free: a decision
    assert len(sched.decisions) == n + 1
    # 3 steps spent and 1 running of 6: the horizon is drawn from U{1..2}
    assert sched.last_decision.horizon == np.random.default_rng([0, n]).integers(1, 3) == 2


def test_settings_are_checked(tiny, tmp_path):
    with pytest.raises(ValueError, match="mode"):
        scheduler(tiny, mode="minimize")
    with pytest.raises(ValueError, match="max_steps"):
        scheduler(tiny, max_steps=0)
    with pytest.raises(ValueError, match="acquisition"):
        scheduler(tiny, acquisition="ei")
    with pytest.raises(ValueError, match="budget"):
        scheduler(tiny, budget=0)
    with pytest.raises(ValueError, match="lower_bound"):
        scheduler(tiny, lower_bound=1.0, upper_bound=0.0)
    sched = scheduler(tiny)
    assert sched.metric == "loss" and sched.mode == "min"
    assert sched.set_search_properties(None, None) and sched.set_search_properties("loss", "min")
    assert not sched.set_search_properties("acc", "max")
    with pytest.raises(ValueError, match="lacks the space's parameter 'opt'"):
        sched.on_trial_add(None, FakeTrial("x", {"lr": 1e-3}))
    wide = Space({f"x{i}": Float(0, 1) for i in range(tiny.config.max_hps + 1)})
    with pytest.raises(ValueError, match="max_hps"):
        FreezeThawScheduler(wide, metric="loss", mode="min", max_steps=5, surrogate=tiny)


# ---- state ---------------------------------------------------------------------------------------


def test_save_restore_round_trip(tiny, tmp_path):
    sched = scheduler(tiny, seed=7)
    ctl = played(sched, [[0.9, 0.7], [math.inf], [0.5]])
    ctl.run(ctl.trials[2])
    sched.on_trial_error(ctl, ctl.trials[2])
    ctl.trials[2].status = Trial.ERROR
    ctl.choose()
    ctl.trials[0].status = ctl.trials[1].status = Trial.PAUSED  # before the choice was run
    sched.save(tmp_path / "state.json")
    json.loads((tmp_path / "state.json").read_text())  # plain JSON (no NaN / Infinity)
    assert "Infinity" not in (tmp_path / "state.json").read_text()
    other = scheduler(tiny, seed=7)
    other.restore(tmp_path / "state.json")
    assert other.runs == sched.runs and other.steps_spent == sched.steps_spent == 5
    # the same state, the same next decision
    a, b = ctl.choose(), other.choose_trial_to_run(ctl)
    assert a is b and sched.last_decision == other.last_decision
    with pytest.raises(ValueError, match="other settings"):
        scheduler(tiny, max_steps=11).restore(tmp_path / "state.json")
    with pytest.raises(ValueError, match="other settings"):
        scheduler(tiny, mode="max").restore(tmp_path / "state.json")
    state = json.loads((tmp_path / "state.json").read_text())
    state["format_version"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="format_version"):
        other.restore(tmp_path / "bad.json")


def test_state_path_survives_tunes_pickle(tiny_checkpoint_path, tmp_path):
    """Tune pickles the scheduler when the Tuner is built; Tuner.restore unpickles that copy."""
    path = tmp_path / "ft.json"
    sched = scheduler(tiny_checkpoint_path, state_path=path)
    ctl = played(sched, [[0.9], [0.7]])
    frozen = pickle.dumps(sched)  # a stale copy
    for t in ctl.trials:
        ctl.run(t)
        assert ctl.report(t, 0.5) == PAUSE
    ctl.choose()
    assert sched._surrogate is not None  # loaded from the path for the decision
    assert len(pickle.dumps(sched)) < 20_000  # ... and not pickled with the scheduler
    thawed = pickle.loads(frozen)
    assert thawed.runs["t0"].steps == (1,)
    for t in ctl.trials:  # Tuner.restore adds the trials again: the state file is read
        thawed.on_trial_add(None, t)
    assert thawed.runs == sched.runs and thawed.runs["t0"].steps == (1, 2)
    assert thawed.choose_trial_to_run(ctl) is not None
    # without state_path a restored trial keeps only its last result
    bare = scheduler(tiny_checkpoint_path)
    bare.on_trial_add(None, ctl.trials[0])
    assert bare.runs["t0"].steps == (2,) and bare.runs["t0"].values == (0.5,)


# ---- end to end on a local Ray instance ----------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance: 2 CPUs, loopback only, no dashboard, no usage reports."""
    saved = {k: os.environ.get(k) for k in ("RAY_USAGE_STATS_ENABLED",)}
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def make_trainable(log_dir: Path):
    """A toy trainable whose state (step, config value, running sum) lives in its checkpoint.

    Step s adds x / s to the sum and reports loss = 1 - sum / 3. Every start and report is
    logged to ``log_dir/<trial id>.jsonl`` with what the checkpoint held.
    """

    def trainable(config):
        trial_id = tune.get_context().get_trial_id()
        log = log_dir / f"{trial_id}.jsonl"
        state = {"trial": trial_id, "x": config["x"], "step": 0, "sum": 0.0}
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                state = json.loads((Path(d) / "state.json").read_text())
        with open(log, "a") as f:
            f.write(json.dumps({"event": "start", "ckpt": None if ckpt is None else state}) + "\n")
        while True:
            state["step"] += 1
            state["sum"] += config["x"] / state["step"]
            with tempfile.TemporaryDirectory() as d:
                (Path(d) / "state.json").write_text(json.dumps(state))
                with open(log, "a") as f:
                    f.write(json.dumps({"event": "report", **state}) + "\n")
                tune.report(
                    {"loss": 1.0 - state["sum"] / 3},
                    checkpoint=tune.Checkpoint.from_directory(d),
                )

    return trainable


def run_tune(tmp_path, sched, num_samples):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    tuner = tune.Tuner(
        make_trainable(log_dir),
        param_space={"x": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(scheduler=sched, num_samples=num_samples, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "results"), name="ft", verbose=0),
    )
    results = tuner.fit()
    events = {
        p.stem: [json.loads(line) for line in p.read_text().splitlines()]
        for p in sorted(log_dir.glob("*.jsonl"))
    }
    return results, events


def test_tune_resumes_every_trial_from_its_own_checkpoint(
    local_ray, tmp_path, tiny_checkpoint_path
):
    """8 trials x 4 steps: 8 starts and 24 pause/resume cycles, all to completion."""
    max_steps, n_trials = 4, 8
    sched = FreezeThawScheduler(
        Space({"x": Float(0.0, 1.0)}),
        metric="loss",
        mode="min",
        max_steps=max_steps,
        surrogate=tiny_checkpoint_path,
    )
    start = time.perf_counter()
    results, events = run_tune(tmp_path, sched, n_trials)
    print(f"Tune run: {time.perf_counter() - start:.1f} s")
    assert not results.errors and len(results) == n_trials == len(events)
    resumes = 0
    for result in results:
        trial_id, x = result.metrics["trial_id"], result.config["x"]
        log = events[trial_id]
        reports = [e for e in log if e["event"] == "report"]
        assert [e["step"] for e in reports] == list(range(1, max_steps + 1))
        assert log[0] == {"event": "start", "ckpt": None}
        last = None
        for e in log:
            if e["event"] == "start" and last is not None:  # a resume: exactly its last state
                assert e["ckpt"] == {k: last[k] for k in ("trial", "x", "step", "sum")}
                assert e["ckpt"]["trial"] == trial_id and e["ckpt"]["x"] == x
                resumes += 1
            elif e["event"] == "report":
                last = e
        # the final value is the closed form only if no step was lost or repeated
        harmonic = sum(1 / s for s in range(1, max_steps + 1))
        assert result.metrics["loss"] == pytest.approx(1 - x * harmonic / 3)
        assert result.metrics["training_iteration"] == max_steps
        run = sched.runs[trial_id]
        assert run.steps == (1, 2, 3, 4) and run.finished and not run.failed
    pauses = n_trials * (max_steps - 1)
    assert resumes == pauses >= 20
    # every start and resume was the scheduler's choice: Tune started nothing on its own
    starts = Counter()
    for trial_id, log in events.items():
        for e, nxt in zip(log, log[1:], strict=False):
            if e["event"] == "start":
                starts[(trial_id, nxt["step"])] += 1
    assert starts == Counter((d.trial_id, d.step) for d in sched.decisions)
    assert sum(d.horizon is not None for d in sched.decisions) >= 24  # model-based decisions


def test_tune_budget_leaves_unchosen_trials_unstarted(local_ray, tmp_path, tiny_checkpoint_path):
    """6 trials, a budget of 4 steps: at most 4 trials start, the others end unstarted."""
    sched = FreezeThawScheduler(
        Space({"x": Float(0.0, 1.0)}),
        metric="loss",
        mode="min",
        max_steps=3,
        budget=4,
        surrogate=tiny_checkpoint_path,
        seed=1,
    )
    results, events = run_tune(tmp_path, sched, 6)
    assert not results.errors and len(results) == 6
    reports = [e for log in events.values() for e in log if e["event"] == "report"]
    assert len(reports) == sched.steps_spent == 4
    assert len(events) <= 4  # the held trials never ran
    assert all(r.finished for r in sched.runs.values())
    assert len(sched.decisions) == 4
