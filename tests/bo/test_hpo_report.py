"""Result files of simulated HPO: written, loaded back, selected, merged (bo/hpo_report.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bo.cli import main
from bo.hpo_benchmark import RandomSearch, TabularOptimizer, evaluate_hpo
from bo.hpo_compare import compare_regret, load_regrets
from bo.hpo_report import load_result, merge_results, select, write_hpo_report
from pfn.checkpoint import file_sha256


class TrainRow(TabularOptimizer):
    """Trains one row to its end, then the next, from ``first`` on."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.name = f"rows{first}"

    def run(self, objective, *, seed):
        row = self.first
        while not objective.exhausted and row < objective.n_rows:
            objective.start(row)
            while not objective.finished(row) and not objective.exhausted:
                objective.advance(row)
            row += 1


def _run(curve_file, optimizers, *, seeds=2, budget=40, tables=None):
    return evaluate_hpo(
        curve_file,
        optimizers=optimizers,
        seeds=seeds,
        budget=budget,
        tables=tables,
        report_budgets=(10, 25),
        progress=False,
    )


def _same(a, b) -> None:
    """Two results hold the same optimizers, curves, ranks, summary and run records."""
    assert (a.optimizers, a.tables, a.seeds, a.budget) == (
        b.optimizers,
        b.tables,
        b.seeds,
        b.budget,
    )
    assert a.report_budgets == b.report_budgets
    for name in ("scores", "regret", "rank"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.summary == b.summary
    strip = [dataclasses.replace(r, wall_time_s=0.0) for r in a.runs]  # timings differ
    assert strip == [dataclasses.replace(r, wall_time_s=0.0) for r in b.runs]
    assert a.settings == b.settings


@pytest.fixture(scope="module")
def together(curve_file):
    return _run(curve_file, [RandomSearch(), TrainRow(0), TrainRow(3)])


def test_a_written_result_loads_back(curve_file, together, tmp_path):
    paths = write_hpo_report(together, tmp_path / "r")
    assert [p.name for p in paths] == [
        "results.json", "curves.npz", "results.md", "regret.png", "rank.png"
    ]  # fmt: skip
    loaded = load_result(tmp_path / "r")
    _same(loaded, together)
    assert loaded.data_sha256 == together.data_sha256 == file_sha256(curve_file)
    _same(load_result(tmp_path / "r" / "results.json"), together)


def test_merged_parts_equal_the_optimizers_run_together(curve_file, together):
    # every run is seeded by its table and seed alone, so optimizers simulated apart and merged
    # give the result of simulating them together: the same curves, ranks among all three, summary
    first = _run(curve_file, [RandomSearch()])
    second = _run(curve_file, [TrainRow(0), TrainRow(3)])
    assert not np.array_equal(first.rank, together.rank[:1])  # ranked alone: all 1
    _same(merge_results([first, second]), together)
    # the tables in another order are put in the first result's order
    reordered = _run(curve_file, [TrainRow(0), TrainRow(3)], tables=["loss_task", "acc_task"])
    _same(merge_results([first, reordered]), together)


def test_select_keeps_some_optimizers_ranked_among_themselves(curve_file, together):
    picked = select(together, ["rows3", "random"])
    _same(picked, _run(curve_file, [TrainRow(3), RandomSearch()]))
    with pytest.raises(ValueError, match="choose optimizers of the result"):
        select(together, ["asha"])
    with pytest.raises(ValueError, match="choose optimizers of the result"):
        select(together, ["random", "random"])


def test_merge_refuses_other_runs_and_names_given_twice(curve_file, together):
    with pytest.raises(ValueError, match="rows0 in more than one result.*RESULT:OPTIMIZERS"):
        merge_results([together, _run(curve_file, [TrainRow(0)])])
    for other, what in (
        (_run(curve_file, [TrainRow(5)], seeds=1), "seeds"),
        (_run(curve_file, [TrainRow(5)], budget=30), "budget"),
        (_run(curve_file, [TrainRow(5)], tables=["acc_task"]), "tables"),
    ):
        with pytest.raises(ValueError, match=f"other {what}"):
            merge_results([together, other])
    with pytest.raises(ValueError, match="at least one"):
        merge_results([])
    # a curve file of the same name but other contents (regenerated, say)
    other = dataclasses.replace(_run(curve_file, [TrainRow(5)]), data_sha256="0" * 64)
    with pytest.raises(ValueError, match="other curve file contents"):
        merge_results([together, other])
    older = dataclasses.replace(other, data_sha256=None)  # written before it was recorded
    assert merge_results([together, older]).data_sha256 == together.data_sha256


def test_labels_rename_so_that_two_settings_of_one_optimizer_merge(curve_file, together):
    pool = select(together, ["rows0"], ["ft-a"])
    other = select(_run(curve_file, [TrainRow(0)]), ["rows0"], ["ft-b"])
    merged = merge_results([pool, other])
    assert merged.optimizers == ("ft-a", "ft-b")
    assert {r.optimizer for r in merged.runs} == {"ft-a", "ft-b"}
    assert set(merged.settings) <= {"ft-a", "ft-b"}
    np.testing.assert_array_equal(merged.regret[0], merged.regret[1])  # the same optimizer
    np.testing.assert_array_equal(merged.rank, 1.5)  # tied everywhere
    with pytest.raises(ValueError, match="one distinct label per optimizer"):
        select(together, ["rows0", "rows3"], ["x", "x"])


def test_load_refuses_results_without_curves_or_of_another_shape(together, tmp_path, monkeypatch):
    write_hpo_report(together, tmp_path / "r")
    (tmp_path / "r" / "curves.npz").unlink()
    with pytest.raises(ValueError, match="no curves.npz.*without --budget"):
        load_result(tmp_path / "r")
    write_hpo_report(together, tmp_path / "s")
    np.savez(tmp_path / "s" / "curves.npz", scores=together.scores[:2], regret=together.regret)
    with pytest.raises(ValueError, match="shape"):
        load_result(tmp_path / "s")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "results.json").write_text(json.dumps({"runs": []}))
    with pytest.raises(ValueError, match="not a result"):
        load_result(tmp_path / "t")
    with pytest.raises(FileNotFoundError):
        load_result(tmp_path / "nothing")
    monkeypatch.chdir(tmp_path / "s")  # a mistyped folder beside a result is not that result
    with pytest.raises(FileNotFoundError, match="no result at"):
        load_result("no_such_folder")


def test_load_refuses_curves_of_another_run_or_unreadable(together, tmp_path):
    write_hpo_report(together, tmp_path / "r")
    swapped = dict(scores=together.scores[::-1], regret=together.regret[::-1])  # same shape
    np.savez(tmp_path / "r" / "curves.npz", **swapped)
    with pytest.raises(ValueError, match="not of one result"):
        load_result(tmp_path / "r")
    np.savez(tmp_path / "r" / "curves.npz", scores=together.scores)
    with pytest.raises(ValueError, match="unreadable"):
        load_result(tmp_path / "r")
    (tmp_path / "r" / "curves.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="unreadable"):
        load_result(tmp_path / "r")
    write_hpo_report(together, tmp_path / "q")
    payload = json.loads((tmp_path / "q" / "results.json").read_text())
    (tmp_path / "q" / "results.json").write_text(json.dumps({**payload, "report_budgets": [99]}))
    with pytest.raises(ValueError, match="report budgets"):
        load_result(tmp_path / "q")
    runs = payload["runs"][:-1]  # a run's record lost
    (tmp_path / "q" / "results.json").write_text(json.dumps({**payload, "runs": runs}))
    with pytest.raises(ValueError, match="no record"):
        load_result(tmp_path / "q")


def test_regrets_at_an_earlier_budget_come_from_the_curves(together, tmp_path):
    write_hpo_report(together, tmp_path / "r")
    at = load_regrets(tmp_path / "r", "rows3", 10)
    keys = [(t, s) for t in together.tables for s in range(together.seeds)]
    assert at == {k: together.regret[2, r, 9] for r, k in enumerate(keys)}
    assert load_regrets(tmp_path / "r", "rows3") == {
        k: together.regret[2, r, -1] for r, k in enumerate(keys)
    }
    paired = compare_regret(
        tmp_path / "r", tmp_path / "r", optimizer_a="random", optimizer_b="rows0", budget=25
    )
    diff = together.regret[1, :, 24] - together.regret[0, :, 24]
    assert paired.budget == 25 and paired.mean == pytest.approx(diff.mean())
    with pytest.raises(ValueError, match="budget must lie in 1 .. 40"):
        load_regrets(tmp_path / "r", "rows3", 41)
    (tmp_path / "r" / "curves.npz").unlink()  # an older result: the final regret only
    assert load_regrets(tmp_path / "r", "rows3", 40) == load_regrets(tmp_path / "r", "rows3")
    with pytest.raises(ValueError, match="no curves.npz"):
        load_regrets(tmp_path / "r", "rows3", 10)


def test_cli_merges_chosen_optimizers_and_compares_at_a_budget(
    curve_file, together, tmp_path, capsys
):
    write_hpo_report(together, tmp_path / "base")
    write_hpo_report(_run(curve_file, [TrainRow(0), RandomSearch()]), tmp_path / "new")
    out = tmp_path / "merged"
    args = [
        "evaluate",
        "hpo-merge",
        f"{tmp_path / 'new'}:rows0",
        f"{tmp_path / 'base'}:random,rows3",
    ]
    assert main(args + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| rows0 |" in printed and "| rows3 |" in printed and "wrote" in printed
    merged = load_result(out)
    assert merged.optimizers == ("rows0", "random", "rows3")
    np.testing.assert_array_equal(merged.rank, select(together, ["rows0", "random", "rows3"]).rank)
    assert main(args + ["--out", str(out)]) == 2  # refuses to write over a result
    assert "already holds a result" in capsys.readouterr().err
    assert main(["evaluate", "hpo-merge", str(tmp_path / "base"), str(tmp_path / "new")]) == 2
    assert "in more than one result" in capsys.readouterr().err
    for bad in ("base:", "base:random,random"):
        assert main(["evaluate", "hpo-merge", str(tmp_path / bad), "--out", str(out)]) == 2
        assert f"{bad}: " in capsys.readouterr().err
    labelled = [f"{tmp_path / 'new'}:rows0=new-rows0", f"{tmp_path / 'base'}:rows0"]
    assert main(["evaluate", "hpo-merge", *labelled, "--out", str(tmp_path / "two")]) == 0
    assert "| new-rows0 |" in capsys.readouterr().out
    assert load_result(tmp_path / "two").optimizers == ("new-rows0", "rows0")
    compare = ["evaluate", "hpo-compare", str(tmp_path / "base"), str(out), "--optimizer", "random"]
    compare += ["--against", "rows3"]
    assert main(compare + ["--budget", "10"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    diff = together.regret[2, :, 9] - together.regret[0, :, 9]
    assert line.startswith("regret after 10 steps, B - A:") and f"{diff.mean():+.4f}" in line
