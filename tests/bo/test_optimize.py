"""``bo.optimize`` end to end on a real (tiny) torch training loop with checkpoint resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bo.freeze_thaw import FreezeThawConfig
from bo.optimize import _plot_series, optimize
from bo.space import CandidateTable, Float, Space
from pfn.surrogate import Surrogate

SPACE = Space({"lr": Float(1e-3, 1.0, log=True)})


def make_objective(calls: list):
    """Linear regression trained by SGD, one epoch per step, state saved in checkpoint_dir."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(256, generator=gen)

    def objective(config, step_from: int, step_to: int, checkpoint_dir: Path) -> list[float]:
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
        state_file = checkpoint_dir / "state.pt"
        if step_from > 0:  # thaw: the run must find exactly its own frozen state
            state = torch.load(state_file, weights_only=True)
            assert state["epoch"] == step_from
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
        else:
            assert not state_file.exists()
            torch.manual_seed(0)
            model.reset_parameters()
        values = []
        for _ in range(step_from, step_to):
            for i in range(0, 256, 64):
                opt.zero_grad()
                loss = ((model(x[i : i + 64]).squeeze(1) - y[i : i + 64]) ** 2).mean()
                loss.backward()
                opt.step()
            with torch.no_grad():
                values.append(float(((model(x).squeeze(1) - y) ** 2).mean()))
        state = {"epoch": step_to, "model": model.state_dict(), "opt": opt.state_dict()}
        torch.save(state, state_file)
        calls.append((config["lr"], step_from, step_to))
        return values

    return objective


def test_optimize_trains_resumes_and_reports(tiny_checkpoint_path, tmp_path):
    calls: list = []
    settings = dict(
        max_steps=6,
        budget=30,
        minimize=True,
        lower_bound=0.0,
        surrogate=Surrogate.load(tiny_checkpoint_path),
        workdir=tmp_path / "work",
        state_dir=tmp_path / "state",
        config=FreezeThawConfig(n_candidates=32),
        # a grid of 5 configurations x 6 steps = the budget: runs must be thawed, whatever the
        # (random, tiny) surrogate prefers
        candidates=CandidateTable.from_configs(SPACE, SPACE.sample(5, seed=3)),
        progress=False,
    )
    result = optimize(make_objective(calls), SPACE, **settings)
    assert result.steps_spent == 30 == len(calls)
    assert any(step_from > 0 for _, step_from, _ in calls)  # some runs were thawed
    assert all(step_to == step_from + 1 for _, step_from, step_to in calls)
    finite = [r.value for r in result.history if r.value is not None and math.isfinite(r.value)]
    assert result.best.value == min(finite)
    assert sum(r.steps for r in result.runs) == 30
    assert result.plot is not None and result.plot.stat().st_size > 1000
    assert "| run | steps |" in result.table()
    # the same call again resumes from the journal: nothing new to spend
    again = optimize(make_objective(calls), SPACE, **settings, plot=False)
    assert again.history == result.history and len(calls) == 30


def test_a_crashing_objective_fails_its_run_only(tiny_checkpoint_path, tmp_path):
    calls: list = []

    def objective(config, step_from, step_to, checkpoint_dir):
        calls.append((config["lr"], step_to))
        if len(calls) % 4 == 0:
            raise RuntimeError("diverged")
        return [config["lr"]] * (step_to - step_from)

    with pytest.warns(UserWarning, match="failed at step"):
        result = optimize(
            objective,
            SPACE,
            max_steps=3,
            budget=40,
            seed=2,
            surrogate=Surrogate.load(tiny_checkpoint_path),
            workdir=tmp_path,
            config=FreezeThawConfig(n_candidates=16),
            progress=False,
            plot=False,
        )
    assert result.steps_spent == 40
    failed = [r for r in result.runs if r.failed]
    assert len(failed) == 10  # every 4th call
    for run in failed:  # never resumed after its failure
        assert max(step for lr, step in calls if lr == run.config["lr"]) == run.steps
    # the incumbent (maximised) is the best value told, failures never count
    told = [r.value for r in result.history if not r.failed]
    assert result.best.value == max(told)


@pytest.mark.parametrize(
    "kind", ["float", "np.float32", "0-d array", "0-d tensor", "list of np.float64"]
)
def test_an_objective_may_return_numpy_or_torch_numbers(tiny_checkpoint_path, tmp_path, kind):

    wrap = {
        "float": float,
        "np.float32": np.float32,
        "0-d array": np.asarray,
        "0-d tensor": torch.tensor,
        "list of np.float64": lambda v: [np.float64(v)],
    }[kind]

    def objective(config, step_from, step_to, checkpoint_dir):
        return wrap(config["lr"])  # one step per trial: one value

    result = optimize(
        objective, SPACE, max_steps=3, budget=5, seed=0,
        surrogate=Surrogate.load(tiny_checkpoint_path), workdir=tmp_path,
        config=FreezeThawConfig(n_candidates=8), progress=False, plot=False,
    )  # fmt: skip
    assert result.steps_spent == 5 and not any(r.failed for r in result.runs)
    assert result.best.value == pytest.approx(max(r.value for r in result.history), rel=1e-6)


def test_an_objective_returning_no_number_is_named(tiny_checkpoint_path, tmp_path):
    with pytest.raises(ValueError, match="expected a number"):
        optimize(
            lambda config, a, b, ckpt: "fast", SPACE, max_steps=3, budget=2,
            surrogate=Surrogate.load(tiny_checkpoint_path), workdir=tmp_path, progress=False,
            plot=False,
        )  # fmt: skip


def test_steps_the_objective_does_not_measure_are_spent_as_gaps(tiny_checkpoint_path, tmp_path):
    """None from the objective: the step was trained but not measured (here: evaluated every
    second step). It is spent, the run goes on, and the summaries report measured values only."""

    def objective(config, step_from, step_to, checkpoint_dir):
        return [config["lr"] * s if s % 2 else None for s in range(step_from + 1, step_to + 1)]

    result = optimize(  # two configurations, 4 steps each: both trained to the end
        objective, SPACE, max_steps=4, budget=8, seed=1,
        surrogate=Surrogate.load(tiny_checkpoint_path), workdir=tmp_path,
        candidates=CandidateTable.from_configs(SPACE, SPACE.sample(2, seed=3)), progress=False,
        plot=True,
    )  # fmt: skip
    assert result.steps_spent == 8 and not any(r.failed for r in result.runs)
    assert sorted(r.step for r in result.history if r.value is None) == [2, 2, 4, 4]
    skipped = [r for r in result.history if r.value is None]
    assert skipped and all(r.step % 2 == 0 and not r.failed for r in skipped)
    assert all(r.value is not None for r in result.history if r.step % 2 == 1)
    for run in result.runs:
        measured = [r for r in result.history if r.trial == run.id and r.value is not None]
        assert run.last == (measured[-1].value if measured else None)
        assert run.steps == max(r.step for r in result.history if r.trial == run.id)
    assert result.best.value == max(r.value for r in result.history if r.value is not None)
    assert result.plot is not None and result.plot.exists()
    incumbent, curves = _plot_series(result)  # what the plot draws
    assert incumbent.shape == (8,) and not np.isnan(incumbent[-1])
    assert incumbent[-1] == result.best.value
    for run in result.runs:  # each run's line: its measured (odd) steps, no point for the gaps
        steps, ys = curves[run.id]
        assert steps == [1, 3] and ys == [run.config["lr"] * 1, run.config["lr"] * 3]
    assert "| run |" in result.table()


class _Clock:
    """A stand-in for ``time.monotonic`` in ``bo.optimize``: one second passes per reading."""

    def __init__(self) -> None:
        self.now = -1.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def test_a_time_limit_stops_starting_trials_and_a_later_call_goes_on(
    tiny_checkpoint_path, tmp_path, monkeypatch
):
    import bo.optimize as optimize_module

    calls: list = []
    settings = dict(
        max_steps=6, budget=30, minimize=True, lower_bound=0.0,
        surrogate=Surrogate.load(tiny_checkpoint_path), workdir=tmp_path / "work",
        state_dir=tmp_path / "state", config=FreezeThawConfig(n_candidates=8),
        progress=False, plot=False,
    )  # fmt: skip
    # the call starts at 0 s and reads 1, 2, 3, ... s before each trial: 4 trials under 5 s
    monkeypatch.setattr(optimize_module, "time", _Clock())
    first = optimize(make_objective(calls), SPACE, **settings, time_limit_s=5)
    assert first.stopped_by_time and first.steps_spent == 4 == len(calls)
    assert len(first.history) == 4 and first.best is not None  # every trial run was told
    monkeypatch.setattr(optimize_module, "time", _Clock())  # the next call's own limit
    second = optimize(make_objective(calls), SPACE, **settings, time_limit_s=3.5)
    assert second.stopped_by_time and second.steps_spent == 4 + 3 == len(calls)
    assert second.history[:4] == first.history
    monkeypatch.setattr(optimize_module, "time", _Clock())
    rest = optimize(make_objective(calls), SPACE, **settings, time_limit_s=np.float32(1e6))
    assert not rest.stopped_by_time and rest.steps_spent == 30 == len(calls)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "60"])
def test_a_bad_time_limit_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="time_limit_s"):
        optimize(make_objective([]), SPACE, max_steps=3, budget=3, workdir=tmp_path,
                 progress=False, plot=False, time_limit_s=bad)  # fmt: skip
