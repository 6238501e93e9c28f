import numpy as np

from bo.cli import main
from bo.demo import N_RUNS, N_STEPS, held_out_task, run_demo


def test_held_out_task_is_seeded_and_valid():
    configs, t, y = held_out_task(3)
    assert configs.shape == (N_RUNS, 3) and t.shape == (N_STEPS,) and y.shape == (N_RUNS, N_STEPS)
    assert ((0 <= y) & (y <= 1)).all() and t[-1] == 1.0
    np.testing.assert_array_equal(y, held_out_task(3)[2])
    assert not np.array_equal(y, held_out_task(4)[2])


def test_demo_writes_both_plots_and_reports(tmp_path, tiny_checkpoint_path, capsys):
    result = run_demo(tmp_path, checkpoint=tiny_checkpoint_path)
    for plot in (result.prior_plot, result.extrapolation_plot):
        assert plot.stat().st_size > 10_000
    assert result.predicted_final.shape == (N_RUNS,)
    assert ((0 <= result.predicted_final) & (result.predicted_final <= 1)).all()
    out = capsys.readouterr().out
    assert "90% intervals cover" in out and str(result.extrapolation_plot) in out


def test_demo_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
