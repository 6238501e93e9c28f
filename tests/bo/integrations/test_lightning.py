"""``bo.integrations.lightning``: freeze (checkpoint), thaw (resume), the objective, the search.

A 2-layer MLP regression on a fixed synthetic data set, Adam with a StepLR schedule (so the
optimizer's moments and the scheduler's step matter), unshuffled data loaders and no dropout: the
epochs after a thaw draw no random numbers, so a frozen and thawed run must match an uninterrupted
one bit for bit (CPU).
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from bo.freeze_thaw import FreezeThawConfig
from bo.integrations.lightning import (
    CHECKPOINT_NAME,
    FreezeThawCallback,
    MissingMonitorError,
    lightning_objective,
    tune_lightning,
)
from bo.space import CandidateTable, Float, Space
from pfn.surrogate import Surrogate

pytestmark = pytest.mark.filterwarnings(
    "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"
)

CPU = {"accelerator": "cpu", "devices": 1}


def _data() -> tuple[DataLoader, DataLoader]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(160, 4, generator=gen)
    y = torch.sin(x @ torch.tensor([1.0, -2.0, 0.5, 3.0])) + 0.1 * torch.randn(160, generator=gen)
    train = TensorDataset(x[:128], y[:128, None])
    val = TensorDataset(x[128:], y[128:, None])
    return DataLoader(train, batch_size=32, shuffle=False), DataLoader(val, batch_size=32)


TRAIN, VAL = _data()


class Regressor(L.LightningModule):
    """4 -> 16 -> 1 MLP; Adam + StepLR; logs ``val_loss``; notes the epoch each fit starts at."""

    def __init__(self, lr: float = 1e-2, starts: list[int] | None = None) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
        )
        self.lr = lr
        self.starts = starts

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)}

    def on_train_start(self) -> None:
        if self.starts is not None:
            self.starts.append(self.trainer.current_epoch)


def _fit(
    module: L.LightningModule, epochs: int, callback: L.Callback, ckpt_path: Path | None = None
) -> L.Trainer:
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback], enable_checkpointing=False,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        **CPU)  # fmt: skip
    trainer.fit(module, TRAIN, VAL, ckpt_path=ckpt_path)
    return trainer


def _assert_same_state(a: object, b: object) -> None:
    """Nested optimizer / scheduler state dicts are identical (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            _assert_same_state(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same_state(x, y)
    else:
        assert a == b


def test_frozen_and_thawed_run_equals_an_uninterrupted_run(tmp_path):
    L.seed_everything(0, verbose=False)
    full = Regressor()
    full_cb = FreezeThawCallback(monitor="val_loss", checkpoint_path=tmp_path / "full.ckpt")
    full_trainer = _fit(full, 6, full_cb)
    assert sorted(full_cb.values) == [1, 2, 3, 4, 5, 6]

    L.seed_everything(0, verbose=False)  # the same initial weights as `full`
    frozen_path = tmp_path / "frozen.ckpt"
    first_cb = FreezeThawCallback(monitor="val_loss", checkpoint_path=frozen_path)
    _fit(Regressor(), 3, first_cb)
    assert first_cb.values == {e: full_cb.values[e] for e in (1, 2, 3)}
    assert frozen_path.is_file() and not list(tmp_path.glob(".*.tmp"))  # the temp file moved
    assert torch.load(frozen_path, weights_only=True)["epoch"] == 3

    # Thaw in a fresh Trainer and a fresh module whose own initial weights differ.
    L.seed_everything(123, verbose=False)
    thawed = Regressor()
    assert not torch.equal(thawed.net[0].weight, full_trainer.model.net[0].weight)
    thaw_cb = FreezeThawCallback(monitor="val_loss", checkpoint_path=tmp_path / "thawed.ckpt")
    thaw_trainer = _fit(thawed, 6, thaw_cb, ckpt_path=frozen_path)
    assert thaw_cb.start_epoch == 3  # the epoch counter was restored
    for (name, p), q in zip(full.named_parameters(), thawed.parameters(), strict=True):
        assert torch.equal(p, q), name
    _assert_same_state(full_trainer.optimizers[0].state_dict(),
                       thaw_trainer.optimizers[0].state_dict())  # fmt: skip
    full_sched = full_trainer.lr_scheduler_configs[0].scheduler.state_dict()
    thaw_sched = thaw_trainer.lr_scheduler_configs[0].scheduler.state_dict()
    assert full_sched == thaw_sched and full_sched["last_epoch"] == 6
    for epoch in (4, 5, 6):
        assert thaw_cb.values[epoch] == full_cb.values[epoch]
    assert thaw_cb.values == full_cb.values  # epochs 1-3 come back with the checkpoint

    # Control: the same weights with a fresh optimizer and scheduler do not end at the same
    # place, so the checks above do see the optimizer and scheduler state.
    weights_only = Regressor()
    weights_only.load_state_dict(torch.load(frozen_path, weights_only=True)["state_dict"])
    control_cb = FreezeThawCallback(monitor="val_loss", checkpoint_path=tmp_path / "c.ckpt")
    _fit(weights_only, 3, control_cb)
    assert not torch.equal(weights_only.net[0].weight, full.net[0].weight)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "run.ckpt"
    path.write_bytes(b"the previous freeze")

    class CrashingTrainer:
        is_global_zero = True

        def save_checkpoint(self, filepath):
            Path(filepath).write_bytes(b"half a chec")
            raise OSError("disk full")

    callback = FreezeThawCallback(monitor="val_loss", checkpoint_path=path)
    with pytest.raises(OSError, match="disk full"):
        callback.on_train_end(CrashingTrainer(), None)  # type: ignore[arg-type]
    assert path.read_bytes() == b"the previous freeze"


class _Spy(L.Callback):
    used: list[L.Callback] = []  # the instances that saw a fit (class-level: copies share it)

    def on_train_start(self, trainer, pl_module) -> None:
        _Spy.used.append(self)


def test_objective_resumes_each_run_from_its_own_checkpoint(tmp_path):
    starts: list[int] = []
    spy = _Spy()
    _Spy.used.clear()
    objective = lightning_objective(
        lambda config: Regressor(lr=config["lr"], starts=starts),
        monitor="val_loss",
        train_dataloaders=TRAIN,
        val_dataloaders=VAL,
        trainer_kwargs={**CPU, "callbacks": [spy]},
    )
    run, other = tmp_path / "run", tmp_path / "other"
    a = objective({"lr": 1e-2}, 0, 1, run)
    objective({"lr": 3e-2}, 0, 2, other)  # another run in between must not leak into `run`
    b = objective({"lr": 1e-2}, 1, 2, run)
    c = objective({"lr": 1e-2}, 2, 5, run)
    assert (len(a), len(b), len(c)) == (1, 1, 3)
    assert starts == [0, 0, 1, 2]  # each thaw started at the epoch its run was frozen at
    assert len({id(c) for c in _Spy.used}) == 4 and spy not in _Spy.used  # a copy per call
    assert torch.load(run / CHECKPOINT_NAME, weights_only=True)["epoch"] == 5
    uninterrupted = objective({"lr": 1e-2}, 0, 5, tmp_path / "whole")
    assert a + b + c == uninterrupted
    assert all(math.isfinite(v) for v in uninterrupted) and uninterrupted[-1] < uninterrupted[0]

    with pytest.raises(FileNotFoundError, match="checkpoint"):
        objective({"lr": 1e-2}, 2, 3, tmp_path / "never_trained")
    with pytest.raises(ValueError, match="max_epochs"):
        lightning_objective(Regressor, monitor="val_loss", trainer_kwargs={"max_epochs": 3})
    every_other = lightning_objective(
        lambda config: Regressor(), monitor="val_loss", train_dataloaders=TRAIN,
        val_dataloaders=VAL, trainer_kwargs={**CPU, "check_val_every_n_epoch": 2},
    )  # fmt: skip
    with pytest.raises(MissingMonitorError, match=r"after epoch\(s\) \[1\]"):
        every_other({}, 0, 1, tmp_path / "every_other")


def test_a_trial_frozen_before_its_tell_returns_its_values_again(tmp_path):
    # the process died after the objective froze the run at step 3 and before the optimiser
    # journalled the tell: a resumed optimize() asks for the same trial (2 -> 3) again
    starts: list[int] = []
    objective = lightning_objective(
        lambda config: Regressor(starts=starts), monitor="val_loss", train_dataloaders=TRAIN,
        val_dataloaders=VAL, trainer_kwargs=CPU,
    )  # fmt: skip
    run = tmp_path / "run"
    objective({}, 0, 2, run)
    values = objective({}, 2, 3, run)
    again = objective({}, 2, 3, run)
    assert again == values and starts == [0, 2]  # nothing trained again
    assert torch.load(run / CHECKPOINT_NAME, weights_only=True)["epoch"] == 3
    assert objective({}, 3, 4, run) and starts == [0, 2, 3]  # and the run thaws on as usual
    with pytest.raises(RuntimeError, match="resumed at epoch 4"):
        objective({}, 1, 5, run)  # a checkpoint at neither end of the trial is still refused


def test_a_missing_monitor_names_the_logged_metrics(tmp_path):
    callback = FreezeThawCallback(monitor="val_acc", checkpoint_path=tmp_path / "x.ckpt")
    with pytest.raises(MissingMonitorError, match=r"'val_acc'.*\['val_loss'\]"):
        _fit(Regressor(), 1, callback)
    assert not (tmp_path / "x.ckpt").exists()
    with pytest.raises(ValueError, match="monitor"):
        FreezeThawCallback(monitor="", checkpoint_path=tmp_path / "x.ckpt")


def test_tune_lightning_spends_the_budget_and_thaws_runs(tiny_checkpoint_path, tmp_path):
    starts: list[int] = []
    built: list[float] = []

    def factory(config):
        built.append(config["lr"])
        return Regressor(lr=config["lr"], starts=starts)

    space = Space({"lr": Float(1e-3, 1e-1, log=True)})
    result = tune_lightning(
        factory,
        space,
        max_epochs=4,
        budget=10,
        monitor="val_loss",
        train_dataloaders=TRAIN,
        val_dataloaders=VAL,
        workdir=tmp_path / "work",
        state_dir=tmp_path / "state",
        surrogate=Surrogate.load(tiny_checkpoint_path),
        progress=False,
        trainer_kwargs=CPU,
        config=FreezeThawConfig(n_candidates=32),
        # 3 configurations x 4 epochs >= the budget of 10: some run must be thawed
        candidates=CandidateTable.from_configs(space, [{"lr": 1e-3}, {"lr": 1e-2}, {"lr": 1e-1}]),
        plot=False,
    )
    assert result.steps_spent == 10 == len(built) == len(starts)
    assert sum(r.steps for r in result.runs) == 10
    assert any(start > 0 for start in starts)  # some run was thawed from its checkpoint
    assert not any(r.failed for r in result.runs)
    for r in result.runs:
        ckpt = torch.load(tmp_path / "work" / "runs" / str(r.id) / CHECKPOINT_NAME,
                          weights_only=True)  # fmt: skip
        assert ckpt["epoch"] == r.steps
    told = [rec.value for rec in result.history]
    assert result.best is not None and result.best.value == min(told)
    by_run: dict[int, list[float]] = {}
    for rec in result.history:
        by_run.setdefault(rec.trial, []).append(rec.value)
    # training on after a thaw lowered a run's loss
    assert any(len(v) > 1 and min(v[1:]) < v[0] for v in by_run.values())


def test_tune_lightning_stops_on_a_missing_monitor(tiny_checkpoint_path, tmp_path):
    built: list[float] = []

    def factory(config):
        built.append(config["lr"])
        return Regressor(lr=config["lr"])

    with pytest.raises(MissingMonitorError, match="val_acc"):
        tune_lightning(
            factory,
            Space({"lr": Float(1e-3, 1e-1, log=True)}),
            max_epochs=4,
            budget=10,
            monitor="val_acc",
            train_dataloaders=TRAIN,
            val_dataloaders=VAL,
            workdir=tmp_path,
            surrogate=Surrogate.load(tiny_checkpoint_path),
            progress=False,
            trainer_kwargs=CPU,
            plot=False,
        )
    assert len(built) == 1  # not one failed run after another
    with pytest.raises(ValueError, match="mode"):
        tune_lightning(factory, Space({"lr": Float(1e-3, 1e-1)}), max_epochs=2, budget=2,
                       monitor="val_loss", mode="minimum", workdir=tmp_path)  # fmt: skip


def test_tune_lightning_passes_the_time_limit_on(monkeypatch, tmp_path):
    import bo.integrations.lightning as lightning_module

    seen = {}
    monkeypatch.setattr(lightning_module, "optimize", lambda *a, **kw: seen.update(kw))
    tune_lightning(lambda config: Regressor(lr=config["lr"]), Space({"lr": Float(1e-3, 1e-1)}),
                   max_epochs=2, budget=2, monitor="val_loss", workdir=tmp_path,
                   time_limit_s=90.0)  # fmt: skip
    assert seen["time_limit_s"] == 90.0
