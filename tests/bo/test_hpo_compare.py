"""Paired comparison of two `evaluate hpo` results (bo/hpo_compare.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bo.cli import main
from bo.hpo_compare import compare_regret, load_regrets


def _write(path, regrets: dict[str, list[float]], tables=("t0", "t1"), **fields) -> None:
    """A results.json with, per optimizer, one final regret per (table, seed), table-major, and
    any other top-level ``fields``."""
    runs = []
    for name, values in regrets.items():
        keys = [(t, s) for t in tables for s in range(len(values) // len(tables))]
        for (table, seed), v in zip(keys, values, strict=True):
            runs.append({"optimizer": name, "table": table, "seed": seed, "final_regret": v})
    path.mkdir(parents=True, exist_ok=True)
    payload = {"runs": runs[::-1], **fields}  # the order of the runs must not matter
    (path / "results.json").write_text(json.dumps(payload))


def test_paired_difference_of_two_results(tmp_path):
    a = [0.1, 0.2, 0.3, 0.0]
    b = [0.05, 0.2, 0.4, 0.0]
    _write(tmp_path / "a", {"freeze-thaw": a, "asha": [0.0] * 4})
    _write(tmp_path / "b", {"freeze-thaw": b})
    out = compare_regret(tmp_path / "a", tmp_path / "b" / "results.json")
    diff = np.subtract(b, a)
    assert out.n_runs == 4 and out.mean == pytest.approx(diff.mean())
    assert out.se == pytest.approx(diff.std(ddof=1) / 2)
    assert (out.n_b_better, out.n_b_worse, out.n_equal) == (1, 1, 2)
    # two optimizers of one result
    vs = compare_regret(tmp_path / "a", tmp_path / "a", optimizer_b="asha")
    assert vs.mean == pytest.approx(-np.mean(a)) and vs.n_b_better == 3 and vs.n_equal == 1


def test_refuses_results_of_other_runs_or_optimizers(tmp_path):
    _write(tmp_path / "a", {"freeze-thaw": [0.1, 0.2, 0.3, 0.4]})
    _write(tmp_path / "b", {"freeze-thaw": [0.1, 0.2]})  # one seed per table, not two
    with pytest.raises(ValueError, match="different \\(table, seed\\) runs"):
        compare_regret(tmp_path / "a", tmp_path / "b")
    with pytest.raises(ValueError, match="no runs of optimizer 'asha'.*freeze-thaw"):
        load_regrets(tmp_path / "a", "asha")
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a results.json"):
        load_regrets(tmp_path / "c.json", "freeze-thaw")


def test_refuses_other_budgets_or_files_and_names_other_settings(tmp_path, capsys):
    regrets = {"freeze-thaw": [0.1, 0.2, 0.3, 0.4]}
    _write(tmp_path / "a", regrets, budget=1000, data="../shared/data/x.h5")
    _write(tmp_path / "short", regrets, budget=300, data="../shared/data/x.h5")
    _write(tmp_path / "other", regrets, budget=1000, data="/elsewhere/y.h5")
    with pytest.raises(ValueError, match="budget 1000.*has 300: not comparable"):
        compare_regret(tmp_path / "a", tmp_path / "short")
    with pytest.raises(ValueError, match="data 'x.h5'.*'y.h5'"):
        compare_regret(tmp_path / "a", tmp_path / "other")
    base = {"checkpoint": None, "n_candidates": 1, "start_value": "best"}
    _write(tmp_path / "s1", regrets, budget=1000, data="/abs/x.h5",
           settings={"freeze-thaw": base})  # fmt: skip
    _write(tmp_path / "s8", regrets, budget=1000, data="x.h5",
           settings={"freeze-thaw": {**base, "n_candidates": 8}})  # fmt: skip
    _write(tmp_path / "sha1", regrets, budget=1000, data="x.h5", data_sha256="a" * 64)
    _write(tmp_path / "sha2", regrets, budget=1000, data="x.h5", data_sha256="b" * 64)
    with pytest.raises(ValueError, match="other contents"):
        compare_regret(tmp_path / "sha1", tmp_path / "sha2")
    assert compare_regret(tmp_path / "sha1", tmp_path / "a").n_runs == 4  # one side unknown
    out = compare_regret(tmp_path / "s1", tmp_path / "s8")  # same file name: comparable
    assert out.differing_settings == {"n_candidates": (1, 8)}
    assert compare_regret(tmp_path / "a", tmp_path / "s8").differing_settings == {
        k: (None, v) for k, v in {**base, "n_candidates": 8}.items() if v is not None
    }
    assert main(["evaluate", "hpo-compare", str(tmp_path / "s1"), str(tmp_path / "s8")]) == 0
    assert "  n_candidates: A 1, B 8" in capsys.readouterr().out


def test_command_line(tmp_path, capsys):
    _write(tmp_path / "a", {"freeze-thaw": [0.1, 0.2, 0.3, 0.4]})
    _write(tmp_path / "b", {"freeze-thaw": [0.0, 0.2, 0.3, 0.4]})
    assert main(["evaluate", "hpo-compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "B - A: -0.0250 ± 0.0250 over 4 runs (B better in 1, worse in 0, equal in 3)" in (
        capsys.readouterr().out
    )
