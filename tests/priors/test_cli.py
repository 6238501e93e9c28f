"""Tests of priors/cli.py, run through the ``curvepfn`` entry point ``bo.cli.main``."""

from __future__ import annotations

import pytest
import torch

import priors.cli
from bo.cli import main
from priors.lcpfn import LCPFNPriorConfig
from priors.store import CurveTaskDataset


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse rejects bad arguments by exiting
        return int(exit_.code)


def test_sample_then_read_back(tmp_path, capsys):
    out = tmp_path / "deep" / "prior.h5"
    argv = ["prior", "sample", "--tasks", "10", "--out", str(out), "--prior", "lcpfn"]
    assert main([*argv, "--seed", "3", "--batch-size", "4", "--max-hps", "6"]) == 0
    assert "wrote 10 tasks" in capsys.readouterr().out
    dataset = CurveTaskDataset(out)
    assert len(dataset) == 10 and dataset.info.n_groups == 3
    assert dataset.info.prior_name == "lcpfn" and dataset.info.seed == 3
    assert dataset.info.prior_config["config"]["max_hps"] == 6
    batch = dataset.group_batch(0)
    assert batch.configs.shape == (4, 1, 6) and batch.n_tokens == LCPFNPriorConfig().n_steps
    assert bool(((batch.y >= 0) & (batch.y <= 1)).all())


def test_sample_with_threads_is_seeded_and_matches_the_threaded_prior(tmp_path, capsys):
    import torch

    from priors.registry import make_prior
    from priors.threaded import ThreadedPrior

    files = [tmp_path / f"{k}.h5" for k in range(3)]
    base = ["prior", "sample", "--tasks", "6", "--prior", "ftpfn", "--batch-size", "6"]
    for path, workers in zip(files, ("2", "2", "1"), strict=True):
        assert main([*base, "--out", str(path), "--workers", workers]) == 0
    a, b, plain = (CurveTaskDataset(p).group_batch(0) for p in files)
    assert torch.equal(a.y, b.y) and not torch.equal(a.y, plain.y)  # seeded; other streams
    assert CurveTaskDataset(files[0]).info.prior_name == "ftpfn"
    with ThreadedPrior(make_prior("ftpfn"), 2) as prior:
        direct = prior.sample(6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.y, direct.y)


def test_plot_writes_a_png(tmp_path):
    out = tmp_path / "plots" / "curves.png"
    assert main(["prior", "plot", "--out", str(out), "--prior", "lcpfn", "--tasks", "3"]) == 0
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_plot_through_priors_cli_main_as_the_demo_does(tmp_path):
    out = tmp_path / "c.png"
    assert priors.cli.main(["plot", "--out", str(out), "--prior", "lcpfn", "--tasks", "1"]) == 0
    assert out.stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        (["--tasks", "-3"], "--tasks"),
        (["--tasks", "many"], "--tasks"),
        (["--tasks", "2", "--batch-size", "0"], "--batch-size"),
        (["--tasks", "2", "--max-hps", "-1"], "--max-hps"),
        (["--tasks", "2", "--prior", "gp"], "--prior"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(tmp_path, capsys, extra, name):
    code = _exit_code(["prior", "sample", "--out", str(tmp_path / "x.h5"), *extra])
    assert code == 2
    assert name in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_bad_plot_arguments(tmp_path, capsys):
    assert _exit_code(["prior", "plot", "--out", str(tmp_path / "p.png"), "--tasks", "0"]) == 2
    assert "--tasks" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    argv = ["prior", "sample", "--tasks", "2", "--out", str(tmp_path / "x.h5"), "--device", "cuda"]
    assert main(argv) == 2
    assert "curvepfn: error: --device cuda" in capsys.readouterr().err
