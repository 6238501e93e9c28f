import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bo import hpo_benchmark as hb
from bo.cli import main
from bo.freeze_thaw import FreezeThawConfig
from bo.hpo_benchmark import (
    OPTIMIZERS,
    BudgetExhausted,
    FreezeThawOptimizer,
    OptunaPrunerOptimizer,
    RandomSearch,
    RegretScale,
    TableObjective,
    TabularOptimizer,
    evaluate_hpo,
    rank_optimizers,
    simulate,
)
from pfn.curve_table import CurveTable, read_curve_tables

nan = np.nan


def hand_table(curves, *, higher_is_better=True, lower=0.0, upper=1.0) -> CurveTable:
    curves = np.asarray(curves, dtype=np.float64)
    c, t = curves.shape
    return CurveTable(
        name="hand",
        curves=curves,
        steps=np.arange(1.0, t + 1),
        configs=np.linspace(0, 1, c)[:, None],
        raw_configs=np.arange(c, dtype=np.float64)[:, None],
        hp_names=("x",),
        metric="metric",
        higher_is_better=higher_is_better,
        lower_bound=lower,
        upper_bound=upper,
        x_axis="step",
    )


class FirstRow(TabularOptimizer):
    """Trains row 0 to its end, then stops."""

    name = "row0"

    def run(self, objective, *, seed):
        objective.start(0)
        while not objective.finished(0) and not objective.exhausted:
            objective.advance(0)


class Scripted(TabularOptimizer):
    """Plays a fixed list of ("start" | "advance", row) moves."""

    name = "scripted"

    def __init__(self, moves):
        self.moves = moves

    def run(self, objective, *, seed):
        for op, row in self.moves:
            getattr(objective, op)(row)


@pytest.fixture(scope="module")
def loss_task(curve_file) -> CurveTable:
    return read_curve_tables(curve_file, ["loss_task"])[0]


def test_objective_charges_every_step_and_resumes_without_repaying():
    tab = hand_table([[0.1, 0.2, 0.3], [0.5, nan, 0.6], [0.4, nan, nan]])
    obj = TableObjective(tab, budget=8)
    assert not hasattr(obj, "curves")
    with pytest.raises(ValueError, match="not started"):
        obj.advance(0)
    assert obj.spent == 0
    assert obj.start(0) == 0.1 and obj.advance(0) == 0.2 and obj.spent == 2
    np.testing.assert_array_equal(obj.observed(0), [0.1, 0.2])
    assert obj.start(1) == 0.5
    assert obj.advance(0) == 0.3  # resumes at step 3, steps 1-2 not paid again
    assert obj.spent == 4 and obj.finished(0)
    with pytest.raises(ValueError, match="finished"):
        obj.advance(0)
    assert np.isnan(obj.advance(1)) and not obj.finished(1)  # a gap; row 1 goes on
    assert obj.start(0) == 0.1 and obj.progress(0) == 1  # a fresh start pays step 1 again
    assert obj.start(2) == 0.4 and np.isnan(obj.advance(2))
    assert obj.finished(2)  # nothing recorded after step 2: the run crashed
    assert obj.exhausted
    with pytest.raises(BudgetExhausted):
        obj.start(1)
    with pytest.raises(BudgetExhausted):
        obj.advance(1)
    traj = obj.trajectory()
    np.testing.assert_array_equal(traj.rows, [0, 0, 1, 0, 1, 0, 2, 2])
    np.testing.assert_array_equal(traj.steps, [1, 2, 1, 3, 2, 1, 1, 2])
    np.testing.assert_allclose(traj.incumbent, [0.1, 0.2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert (traj.spent, traj.n_starts, traj.n_restarts, traj.n_resumes) == (8, 4, 1, 2)
    assert traj.n_configs == 3


def test_incumbent_of_a_loss_ignores_nan_and_inf_and_keeps_the_smallest():
    tab = hand_table(
        [[nan, 0.9, 0.4], [0.7, 0.8, nan], [-np.inf, 1.0, 1.0]], higher_is_better=False, upper=None
    )
    moves = [("start", 0), ("advance", 0), ("start", 1), ("advance", 1), ("start", 2)]
    traj = simulate(Scripted(moves + [("advance", 0)]), tab, budget=7, seed=0)
    np.testing.assert_allclose(traj.incumbent, [nan, 0.9, 0.7, 0.7, 0.7, 0.4, 0.4])
    assert traj.spent == 6 and traj.rows[-1] == -1


def test_an_optimizer_overspending_is_stopped_at_the_budget(loss_task):
    class Greedy(TabularOptimizer):
        name = "greedy"

        def run(self, objective, *, seed):
            for row in range(objective.n_rows):
                objective.start(row)

    traj = simulate(Greedy(), loss_task, budget=7, seed=0)
    assert traj.spent == 7 and traj.n_starts == 7


@pytest.mark.parametrize("name", ["random", "hyperband", "asha"])
def test_baselines_pay_for_every_value_and_spend_the_budget(name, loss_task):
    if name != "random":
        pytest.importorskip("optuna")
    budget = 150  # < 30 rows x 11 steps
    traj = simulate(OPTIMIZERS[name](), loss_task, budget=budget, seed=1)
    assert traj.spent == budget and traj.incumbent.shape == (budget,)
    last_step = {}
    for row, step in zip(traj.rows, traj.steps, strict=True):
        assert step == 1 or last_step.get(row) == step - 1  # step s only after steps 1..s-1
        last_step[row] = step
    values = loss_task.curves[traj.rows, traj.steps - 1]
    expected = np.fmin.accumulate(np.where(np.isfinite(values), values, np.inf))
    expected[np.isinf(expected)] = nan
    np.testing.assert_allclose(traj.incumbent, expected)
    assert (np.diff(traj.incumbent[~np.isnan(traj.incumbent)]) <= 0).all()


def test_random_search_is_seeded_and_trains_rows_to_the_end(loss_task):
    a = simulate(RandomSearch(), loss_task, budget=200, seed=3)
    b = simulate(RandomSearch(), loss_task, budget=200, seed=3)
    c = simulate(RandomSearch(), loss_task, budget=200, seed=4)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.incumbent, b.incumbent)
    assert not np.array_equal(a.rows, c.rows)
    assert a.n_resumes == a.n_restarts == 0 and a.n_configs == a.n_starts
    paid = {4: 8, 5: 1}  # row 4 crashes at step 8 (NaN, nothing after), row 5 at step 1
    for row in np.unique(a.rows):
        if row != a.rows[-1]:  # the last row may be cut by the budget
            assert (a.rows == row).sum() == paid.get(row, loss_task.n_steps)


def test_random_search_stops_when_every_row_is_finished():
    tab = hand_table([[0.1, 0.2], [0.3, nan], [0.2, 0.4]])
    traj = simulate(RandomSearch(), tab, budget=10, seed=0)
    assert traj.spent == 6 and traj.n_configs == 3 and traj.incumbent[-1] == 0.4  # 3 x 2 steps


@pytest.mark.parametrize("name", ["hyperband", "asha"])
def test_pruners_start_more_configs_than_random_search(name, loss_task):
    pytest.importorskip("optuna")
    rand = simulate(RandomSearch(), loss_task, budget=150, seed=2)
    traj = simulate(OPTIMIZERS[name](), loss_task, budget=150, seed=2)
    assert traj.spent == 150 and traj.n_starts > rand.n_starts
    assert traj.n_resumes == 0  # Optuna never resumes a trial
    again = simulate(OPTIMIZERS[name](), loss_task, budget=150, seed=2)
    np.testing.assert_array_equal(traj.rows, again.rows)
    # common random numbers: the same rows, in the same order, as random search
    starts = traj.rows[traj.steps == 1]
    np.testing.assert_array_equal(starts[: rand.n_starts], rand.rows[rand.steps == 1])


@pytest.mark.parametrize("name", ["hyperband", "asha"])
def test_pruners_stop_runs_at_the_rungs(name, loss_task):
    pytest.importorskip("optuna")
    traj = simulate(OPTIMIZERS[name](), loss_task, budget=300, seed=0)
    starts = np.flatnonzero(traj.steps == 1)
    lengths = np.diff(np.r_[starts, traj.spent])[:-1]  # the last run may be cut by the budget
    crashed = {1, 8}  # rows 5 and 4 end there (NaN)
    # min_resource 1, reduction factor 3, T = 11: rungs at steps 1, 3, 9
    assert set(lengths) - crashed <= {1, 3, 9, 11}
    assert {1, 3, 9} <= set(lengths) and 11 in lengths


def test_pruners_need_optuna(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r"pip install curvepfn\[hpo\]"):
        OptunaPrunerOptimizer("asha")


def test_regret_by_hand_for_an_accuracy():
    tab = hand_table([[0.2, 0.5, 0.6], [0.1, 0.3, 0.9], [0.4, 0.8, nan]])
    scale = RegretScale.fit(tab)
    # bounds [0, 1]: scores are the values; best 0.9, worst *final* 0.6 (row 2's NaN skipped)
    assert scale.best == pytest.approx(0.9) and scale.worst == pytest.approx(0.6)
    moves = [("start", 2), ("advance", 2), ("start", 0), ("advance", 0), ("advance", 0)]
    moves += [("start", 1), ("advance", 1), ("advance", 1)]
    traj = simulate(Scripted(moves), tab, budget=9, seed=0)
    np.testing.assert_allclose(
        scale.regret(traj.incumbent), [1, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 0, 0]
    )
    assert scale.regret(np.array([nan]))[0] == 1.0


def test_regret_by_hand_for_a_loss():
    tab = hand_table([[1.0, 0.5], [1.5, 1.8]], higher_is_better=False, lower=0.0, upper=2.0)
    scale = RegretScale.fit(tab)  # score = (2 - loss) / 2: best 0.75, worst final 0.1
    assert (scale.best, scale.worst) == pytest.approx((0.75, 0.1))
    np.testing.assert_allclose(
        scale.regret(np.array([nan, 1.8, 1.0, 0.5, 1.9])), [1, 1, 0.25 / 0.65, 0, 1]
    )


def test_regret_is_robust_to_diverged_losses(loss_task):
    scale = RegretScale.fit(loss_task)  # row 3 ends at 1e30
    assert 0 < scale.worst < 0.05 < scale.best
    finals = loss_task.curves[:, -1]
    reg = scale.regret(finals)
    assert reg[3] == 1.0 and np.isnan(finals[4]) and reg[4] == 1.0
    good = np.isfinite(finals) & (finals < 1)
    assert 0 < np.median(reg[good]) < 0.9  # 1e30 does not squeeze the others to 0


def test_rank_with_ties_by_hand():
    scores = np.array(
        [
            [nan, 0.5, 0.5, 0.9],
            [nan, nan, 0.5, 0.2],
            [0.1, 0.3, 0.7, 0.2],
        ]
    )
    np.testing.assert_allclose(
        rank_optimizers(scores),
        [[2.5, 1, 2.5, 1], [2.5, 3, 2.5, 2.5], [1, 2, 1, 2.5]],
    )


def test_evaluate_hpo_takes_registered_and_given_optimizers(curve_file, monkeypatch):
    monkeypatch.setitem(OPTIMIZERS, "row0", FirstRow)
    result = evaluate_hpo(
        curve_file, optimizers=["random", "row0"], seeds=2, budget=40, progress=False
    )
    assert result.optimizers == ("random", "row0") and len(result.tables) == 2
    assert result.regret.shape == result.rank.shape == (2, 4, 40)
    assert ((result.regret >= 0) & (result.regret <= 1)).all()
    assert (np.diff(result.regret, axis=2) <= 1e-12).all()
    np.testing.assert_allclose(result.rank.sum(axis=0), 3.0)  # two optimizers: ranks 1 + 2
    assert result.report_budgets == (40,)
    s = result.summary_for("random", 40)
    assert s.regret == pytest.approx(result.regret[0, :, -1].mean()) and s.n_runs == 4
    # row 0 of acc_task stops after 4 steps (the 5th is paid and NaN); loss_task's has 11
    assert len(result.runs) == 8
    assert {r.spent for r in result.runs if r.optimizer == "row0"} == {5, 11}
    again = evaluate_hpo(
        curve_file, optimizers=[FirstRow(), RandomSearch()], seeds=2, budget=40, progress=False
    )
    np.testing.assert_array_equal(again.regret[::-1], result.regret)  # seeded, any order
    with pytest.raises(ValueError, match="random, hyperband, asha"):
        evaluate_hpo(curve_file, optimizers=["nope"], seeds=1, budget=5, progress=False)


def test_worker_processes_give_the_same_result(curve_file):
    pytest.importorskip("optuna")
    kw = dict(optimizers=["random", "asha"], seeds=2, budget=60, progress=False)
    one = evaluate_hpo(curve_file, **kw)
    two = evaluate_hpo(curve_file, workers=2, **kw)
    np.testing.assert_array_equal(two.regret, one.regret)
    np.testing.assert_array_equal(two.rank, one.rank)
    strip = lambda runs: [(r.optimizer, r.table, r.seed, r.spent, r.final_regret) for r in runs]  # noqa: E731
    assert strip(two.runs) == strip(one.runs)
    with pytest.raises(ValueError, match="workers"):
        evaluate_hpo(curve_file, workers=0, **kw)


class ThreadProbe(FirstRow):
    """FirstRow that records the torch thread count its job ran with."""

    seen: list[int] = []

    def run(self, objective, *, seed):
        import torch

        ThreadProbe.seen.append(torch.get_num_threads())
        super().run(objective, seed=seed)


def test_jobs_run_on_one_thread_in_process_too(curve_file):
    """Float results depend on the thread count, so workers=1 runs its jobs as a worker process
    does (one thread), and gives the caller back its own count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ThreadProbe.seen.clear()
        evaluate_hpo(curve_file, optimizers=[ThreadProbe()], seeds=2, budget=10, progress=False)
        assert ThreadProbe.seen and set(ThreadProbe.seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_worker_processes_exit_with_a_killed_parent(curve_file, tiny_checkpoint_path):
    # a parent killed without cleanup (SIGKILL) must not leave its workers behind
    code = (
        "from bo.hpo_benchmark import FreezeThawOptimizer, evaluate_hpo\n"
        f"opt = FreezeThawOptimizer(checkpoint={str(tiny_checkpoint_path)!r})\n"
        f"evaluate_hpo({str(curve_file)!r}, optimizers=[opt], seeds=200, budget=300, "
        "workers=2, progress=False)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 120
        workers: list[int] = []
        while time.time() < deadline and parent.poll() is None:
            workers = [p for p in _children(parent.pid) if "spawn_main" in _cmdline(p)]
            if len(workers) == 2:
                break
            time.sleep(0.2)
        assert len(workers) == 2, "the workers did not start"
        time.sleep(1.0)  # let them take a job
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in workers):
        time.sleep(0.2)
    alive = [p for p in workers if os.path.exists(f"/proc/{p}")]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert not alive, "workers outlived their killed parent"


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    except OSError:
        return ""


def test_cli_writes_the_report(curve_file, tmp_path, capsys):
    pytest.importorskip("optuna")
    out = tmp_path / "hpo"
    args = ["evaluate", "hpo", "--data", str(curve_file), "--seeds", "2", "--budget", "120"]
    args += ["--optimizers", "random,hyperband,asha"]
    assert main(args + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| hyperband |" in printed and "regret @100" in printed and "**" in printed
    assert "wrote" in printed
    for name in ("results.json", "curves.npz", "results.md", "regret.png", "rank.png"):
        assert (out / name).stat().st_size > 100
    payload = json.loads((out / "results.json").read_text())
    assert payload["optimizers"] == ["random", "hyperband", "asha"]
    assert {s["budget"] for s in payload["summary"]} == {100, 120}
    assert len(payload["mean_regret"]["asha"]) == 120
    # Hyperband restarts configurations: more runs started than configurations run
    row = next(line for line in printed.splitlines() if line.startswith("| hyperband |"))
    started, configurations = (float(c) for c in row.strip(" |").split(" | ")[-2:])
    hb = [r for r in payload["runs"] if r["optimizer"] == "hyperband"]
    assert started == pytest.approx(np.mean([r["n_starts"] for r in hb]), abs=0.051)
    assert configurations == pytest.approx(np.mean([r["n_configs"] for r in hb]), abs=0.051)
    assert started > configurations


def test_cli_runs_freeze_thaw_with_a_given_checkpoint(
    curve_file, tiny_checkpoint_path, tmp_path, capsys
):
    out = tmp_path / "hpo"
    args = ["evaluate", "hpo", "--data", str(curve_file), "--seeds", "1", "--budget", "30"]
    args += ["--optimizers", "freeze-thaw", "--checkpoint", str(tiny_checkpoint_path)]
    assert main(args + ["--out", str(out)]) == 0
    payload = json.loads((out / "results.json").read_text())
    assert payload["optimizers"] == ["freeze-thaw"]
    settings = payload["settings"]["freeze-thaw"]  # what a later comparison needs to know
    assert settings["checkpoint"] == str(tiny_checkpoint_path)
    assert settings["n_candidates"] == 8 and settings["start_value"] == "best"
    assert "| runs started | configurations |" in (out / "results.md").read_text()
    assert main(args[:-1] + [str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    again = tmp_path / "again"  # deterministic: the same search again
    assert main(args + ["--out", str(again)]) == 0
    assert _search(json.loads((again / "results.json").read_text())) == _search(payload)
    before = (again / "results.json").read_text()
    assert main(args + ["--out", str(again)]) == 2  # a result is never replaced unasked
    assert "already holds a result" in capsys.readouterr().err
    assert (again / "results.json").read_text() == before
    assert main(args + ["--out", str(again), "--overwrite"]) == 0
    with pytest.raises(SystemExit):
        main(args + ["--acquisition", "bogus", "--out", str(out)])
    assert main(args + ["--single-weight", "2", "--out", str(out)]) == 2
    assert "single_weight must lie in [0, 1]" in capsys.readouterr().err
    assert main(args + ["--candidates", "0", "--out", str(out)]) == 2
    assert "n_candidates must be >= 1" in capsys.readouterr().err
    assert main(args + ["--permutations", "-1", "--out", str(out)]) == 2
    assert "permutations must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], ("mfei-random", FreezeThawConfig())),
        (["--acquisition", "ucb-random"], ("ucb-random", FreezeThawConfig())),
        (["--score-range", "bounds"], ("mfei-random", FreezeThawConfig(score_range="bounds"))),
        (["--single-weight", "1"], ("mfei-random", FreezeThawConfig(single_weight=1.0))),
        (["--candidates", "8"], ("mfei-random", FreezeThawConfig(n_candidates=8))),
        (["--repeat-configs"], ("mfei-random", FreezeThawConfig(repeat_configs=True))),
        (["--permutations", "2"], ("mfei-random", FreezeThawConfig(permutations=2))),
        (["--start-value", "random"], ("mfei-random", FreezeThawConfig(start_value="random"))),
    ],
)
def test_cli_settings_reach_freeze_thaw(curve_file, tmp_path, capsys, monkeypatch, flags,
                                        expected):  # fmt: skip
    """Each flag sets the FreezeThawOptimizer that evaluate_hpo is given (and nothing else)."""
    given = []

    def spy(path, *, optimizers, **kwargs):
        given.extend(optimizers)
        raise ValueError("stopped by the test")

    monkeypatch.setattr(hb, "evaluate_hpo", spy)
    args = ["evaluate", "hpo", "--data", str(curve_file), "--optimizers", "freeze-thaw,random"]
    assert main(args + flags + ["--out", str(tmp_path)]) == 2
    assert "stopped by the test" in capsys.readouterr().err
    ft, other = given
    assert other == "random" and isinstance(ft, FreezeThawOptimizer)
    assert (ft.acquisition, ft.config) == expected


def _search(payload: dict) -> list[tuple]:
    """What a search did, run by run (not its wall time, which differs between equal runs)."""
    return [
        (r["table"], r["seed"], r["n_starts"], r["n_resumes"], r["n_configs"], r["final_regret"])
        for r in payload["runs"]
    ] + [payload["mean_regret"]]


def test_cli_rejects_an_unknown_optimizer(curve_file, tmp_path, capsys):
    args = ["evaluate", "hpo", "--data", str(curve_file), "--optimizers", "random,bogus"]
    assert main(args + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'bogus'" in err and "hyperband" in err
    assert hb.REPORT_BUDGETS == (100, 300, 1000)


def test_freeze_thaw_adapter_passes_its_config(curve_file, tiny_checkpoint_path):
    # acc_task: 3 learners x 4 seeds, rows 4 apart; the adapter's FreezeThaw gets its config
    table = read_curve_tables(curve_file, ["acc_task"])[0]
    first_three = {}
    for repeats in (False, True):
        opt = FreezeThawOptimizer(checkpoint=str(tiny_checkpoint_path),
                                  config=FreezeThawConfig(repeat_configs=repeats))  # fmt: skip
        learners = []
        for seed in range(4):
            rows = simulate(opt, table, budget=40, seed=seed).rows
            started = list(dict.fromkeys(rows[rows >= 0].tolist()))
            learners.append(len({int(table.configs[r].argmax()) for r in started[:3]}))
        first_three[repeats] = learners
    assert first_three[False] == [3, 3, 3, 3]  # the three learners before any second seed
    assert min(first_three[True]) < 3  # with repeats allowed, a second seed comes earlier


def test_freeze_thaw_adapter_spends_the_budget_honestly(curve_file, tiny_checkpoint_path):
    from bo.hpo_benchmark import FreezeThawOptimizer, simulate

    table = read_curve_tables(curve_file, ["loss_task"])[0]
    opt = FreezeThawOptimizer(checkpoint=str(tiny_checkpoint_path))
    traj = simulate(opt, table, budget=60, seed=0)
    assert traj.spent == 60 and traj.n_restarts == 0  # freeze-thaw resumes, never restarts
    # the incumbent is the running best of what was paid for
    paid = table.curves[traj.rows, traj.steps - 1]
    finite = np.where(np.isfinite(paid), paid, np.inf)
    np.testing.assert_allclose(traj.incumbent, np.minimum.accumulate(finite))
    whole = simulate(opt, table, budget=400, seed=0)  # more than the table holds
    # every row trained to its end: 30 x 11 steps, less the 3 after row 4 stopped (it crashed at
    # step 8) and the 10 after row 5's failed first step
    assert whole.spent == 30 * 11 - 3 - 10 and whole.n_configs == 30


def test_freeze_thaw_adapter_skips_gaps_and_fails_crashed_runs(tiny_checkpoint_path, monkeypatch):
    """A NaN where the run goes on (at its start or inside) is a step trained but not measured
    (tell_skipped), as the Optuna baselines skip it; a NaN after which nothing is recorded ends
    the run (tell_failure); every other value is told as it is."""
    from bo.freeze_thaw import FreezeThaw

    table = hand_table([[nan, 0.5, 0.6], [0.6, nan, 0.7], [0.7, nan, nan]])
    told = []
    for kind in ("tell", "tell_skipped", "tell_failure"):
        method = getattr(FreezeThaw, kind)

        def spy(self, trial, *value, _method=method, _kind=kind):
            told.append((int(trial.candidate), trial.step, _kind, *value))
            return _method(self, trial, *value)

        monkeypatch.setattr(FreezeThaw, kind, spy)
    opt = FreezeThawOptimizer(checkpoint=str(tiny_checkpoint_path))
    traj = simulate(opt, table, budget=20, seed=0)
    assert traj.spent == 3 + 3 + 2  # every row to its end; row 2 crashed at step 2
    assert sorted(told) == [
        (0, 1, "tell_skipped"), (0, 2, "tell", 0.5), (0, 3, "tell", 0.6),
        (1, 1, "tell", 0.6), (1, 2, "tell_skipped"), (1, 3, "tell", 0.7),
        (2, 1, "tell", 0.7), (2, 2, "tell_failure"),
    ]  # fmt: skip
