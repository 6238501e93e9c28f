"""Tests for pfn/cli.py: ``predict`` on a small CSV with a tiny random-weight checkpoint, the CSV
errors, and the ``pretrain`` wiring (with the training itself stubbed out)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest

from bo import cli as bo_cli
from pfn import cli
from pfn.surrogate import Surrogate
from pfn.train import PretrainResult

CSV = """run,step,value,lr,width
a,1,0.90,0.001,64
a,2,0.70,0.001,64
a,3,0.62,0.001,64
b,1,0.95,0.01,128
b,3,0.80,0.01,128
b,2,0.85,0.01,128
c,1,0.90,0.1,64
c,2,nan,0.1,64
"""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="curvepfn")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint_path) -> Path:
    return tiny_checkpoint_path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runs.csv"
    path.write_text(text)
    return path


def test_read_runs_sorts_and_normalises(tmp_path):
    runs, hps = cli.read_runs(write(tmp_path, CSV))
    assert list(runs) == ["a", "b", "c"] and hps == ["lr", "width"]
    np.testing.assert_array_equal(runs["b"].steps, [1, 2, 3])
    np.testing.assert_array_equal(runs["b"].values, [0.95, 0.85, 0.80])
    # lr: (x - 0.001) / 0.099; width: (x - 64) / 64.
    np.testing.assert_allclose(runs["a"].config, [0.0, 0.0])
    np.testing.assert_allclose(runs["b"].config, [0.009 / 0.099, 1.0])
    np.testing.assert_allclose(runs["c"].config, [1.0, 0.0])
    assert math.isnan(runs["c"].values[1])


def test_predict_prints_a_table_and_plots(tmp_path, checkpoint, capsys):
    png = tmp_path / "out" / "pred.png"
    args = parse(
        [
            "predict",
            "--curves",
            str(write(tmp_path, CSV)),
            "--checkpoint",
            str(checkpoint),
            "--lower-is-better",
            "--lower-bound",
            "0",
            "--max-step",
            "10",
            "--plot",
            str(png),
        ]
    )
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "run",
        "last",
        "step",
        "last",
        "value",
        "final",
        "@",
        "10",
        "90%",
        "interval",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:4]}
    assert set(rows) == {"a", "b", "c"}
    assert rows["a"][1:3] == ["3", "0.62"] and rows["c"][1:3] == ["2", "nan"]
    for row in rows.values():
        final = float(row[3])
        lower, upper = (float(x) for x in " ".join(row[4:]).strip("[]").split(","))
        assert 0 <= lower <= final <= upper
    # the flags reach predict_final: the printed numbers are its answer for a bounded loss
    expected = Surrogate.load(checkpoint).predict_final(
        cli.read_runs(write(tmp_path, CSV))[0], max_step=10, higher_is_better=False,
        lower_bound=0.0, interval=0.9,
    )  # fmt: skip
    for p in expected:
        assert rows[p.run][3] == f"{p.final:.4g}"
        assert " ".join(rows[p.run][4:]) == f"[{p.lower:.4g}, {p.upper:.4g}]"
    assert lines[4] == f"plot: {png}"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_predict_defaults_max_step_to_the_last_step(tmp_path, checkpoint, capsys):
    text = "run,step,value\nx,10,0.5\nx,20,0.6\ny,40,0.7\n"
    args = parse(
        [
            "predict",
            "--curves",
            str(write(tmp_path, text)),
            "--checkpoint",
            str(checkpoint),
            "--lower-bound",
            "0",
            "--upper-bound",
            "1",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "final @ 40" in out and "plot:" not in out


def test_predict_single_weight_sets_the_predictive(tmp_path, checkpoint, capsys):
    base = ["predict", "--curves", str(write(tmp_path, CSV)), "--checkpoint", str(checkpoint)]
    printed = {}
    for w in ("0", "1"):
        args = parse(base + ["--lower-is-better", "--single-weight", w])
        assert args.func(args) == 0
        printed[w] = capsys.readouterr().out
    assert parse(base).single_weight == 0.1  # the surrogate's default
    assert printed["0"] != printed["1"]  # run a: the context view, then its curve alone


def test_read_runs_takes_excel_csv_and_trailing_commas(tmp_path):
    plain = cli.read_runs(write(tmp_path, "run,step,value,lr\na,1,0.5,1\nb,1,0.7,3\n"))
    bom = tmp_path / "bom.csv"
    bom.write_bytes("run,step,value,lr\r\na,1,0.5,1\r\nb,1,0.7,3\r\n".encode("utf-8-sig"))
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("run,step,value,lr,\na,1,0.5,1,\nb,1,0.7,3,\n")
    for other in (cli.read_runs(bom), cli.read_runs(trailing)):
        assert other[1] == plain[1] == ["lr"]
        assert {k: (r.steps, r.values, r.config) for k, r in other[0].items()} == {
            k: (r.steps, r.values, r.config) for k, r in plain[0].items()
        }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("run,step\na,1\n", "missing column.*value"),
        ("run,step,value\na,1,abc\n", r"line 2: column 'value' holds 'abc', not a number"),
        ("run,step,value\na,one,0.5\n", r"column 'step' holds 'one'"),
        ("run,step,value,lr\na,1,0.5,x\n", r"column 'lr' holds 'x'"),
        ("run,step,value,lr\na,1,0.5,1\na,2,0.6,2\n", "changes its hyperparameters"),
        ("run,step,value\n", "no observations"),
        ("run,step,value\na,0,0.5\na,2,0.6\n", r"steps must lie in \(0, max_step"),
    ],
)
def test_predict_rejects_bad_csv(tmp_path, checkpoint, text, match):
    args = parse(
        ["predict", "--curves", str(write(tmp_path, text)), "--checkpoint", str(checkpoint)]
    )
    with pytest.raises(ValueError, match=match):
        args.func(args)


@pytest.mark.parametrize(
    ("flag", "match"), [("--tasks", "t1 given twice"), ("--context-sizes", "400 given twice")]
)
def test_list_flags_refuse_repeats(flag, match):
    value = {"--tasks": "t1,t2,t1", "--context-sizes": "400,800,400"}[flag]
    parser = argparse.ArgumentParser()
    parser.add_argument(flag, type=cli.name_list if flag == "--tasks" else cli._int_list)
    with pytest.raises(SystemExit):
        parser.parse_args([flag, value])
    with pytest.raises(argparse.ArgumentTypeError, match=match):
        (cli.name_list if flag == "--tasks" else cli._int_list)(value)
    with pytest.raises(argparse.ArgumentTypeError, match="expected comma-separated names"):
        cli.name_list(" , ")


def test_curvepfn_main_reports_bad_input(tmp_path, checkpoint, capsys):
    code = bo_cli.main(
        [
            "predict",
            "--curves",
            str(write(tmp_path, "run,step\na,1\n")),
            "--checkpoint",
            str(checkpoint),
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.startswith("curvepfn: error: ")


def test_pretrain_wiring(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_pretrain(
        config, out_dir, *, devices, accelerator, resume, progress=True, stop_at, time_budget_s
    ):
        seen.update(
            config=config,
            out=out_dir,
            devices=devices,
            accelerator=accelerator,
            resume=resume,
            stop_at=stop_at,
            time_budget_s=time_budget_s,
        )
        return PretrainResult(
            checkpoint=Path(out_dir) / "model.pt",
            steps=config.max_steps,
            wall_time_s=1.0,
            val_ll={"0.5": 1.25},
            max_steps=config.max_steps,
        )

    monkeypatch.setattr("pfn.train.pretrain", fake_pretrain)
    args = parse(
        [
            "pretrain",
            "--config",
            "tiny",
            "--max-steps",
            "7",
            "--stop-at",
            "5",
            "--seed",
            "3",
            "--out",
            str(tmp_path),
            "--no-resume",
            "--accelerator",
            "cpu",
        ]
    )
    assert args.func(args) == 0
    assert seen["config"].max_steps == 7 and seen["config"].seed == 3 and seen["stop_at"] == 5
    assert seen["config"].model.d_model == 32  # still the tiny config otherwise
    assert (seen["out"], seen["devices"], seen["accelerator"], seen["resume"]) == (
        tmp_path,
        1,
        "cpu",
        False,
    )
    out = capsys.readouterr().out
    assert f"checkpoint: {tmp_path / 'model.pt'}" in out and "1.250" in out
    assert seen["time_budget_s"] is None and seen["config"].batch_size == 4  # tiny's own


def test_pretrain_time_budget_and_batch_size_flags(monkeypatch, tmp_path, capsys):
    import pfn.train as train

    seen = {}

    def fake_pretrain(config, out_dir, *, time_budget_s, **kw):
        seen.update(config=config, budget=time_budget_s)
        plan = train.TimePlan(
            budget_s=time_budget_s, measured_s=2.0, train_step_s=0.5, validation_s=3.0,
            max_steps=100,
        )  # fmt: skip
        return PretrainResult(
            checkpoint=Path(out_dir) / "model.pt", steps=90, wall_time_s=50.0, val_ll={},
            max_steps=100, time_plan=plan, stopped_at_deadline=True,
        )  # fmt: skip

    monkeypatch.setattr("pfn.train.pretrain", fake_pretrain)
    base = ["pretrain", "--config", "tiny", "--out", str(tmp_path)]
    args = parse(base + ["--time-budget", "8m", "--batch-size", "32"])
    assert args.func(args) == 0
    assert seen["budget"] == 480.0 and seen["config"].batch_size == 32
    assert seen["config"].max_steps == cli._UNCAPPED_STEPS  # the budget alone sets the length
    out = capsys.readouterr().out
    assert "--max-steps 100" in out and "after 90 of 100 steps" in out
    args = parse(base + ["--time-budget", "1.5h", "--max-steps", "700"])
    args.func(args)
    assert seen["budget"] == 5400.0 and seen["config"].max_steps == 700  # a cap
    for text, seconds in (("600", 600.0), ("90s", 90.0), (" 2H ", 7200.0), ("0.5m", 30.0)):
        assert cli._duration(text) == seconds
    for bad in ("", "m", "-5m", "0", "nan", "infh", "10d", "5 min"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive time"):
            cli._duration(bad)


def test_pretrain_offers_every_train_config():
    from pfn.train import TRAIN_CONFIGS

    assert cli._TRAIN_CONFIGS == TRAIN_CONFIGS
    for name in TRAIN_CONFIGS:
        assert parse(["pretrain", "--config", name]).config == name
