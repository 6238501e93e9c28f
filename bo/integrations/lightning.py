"""Freeze-thaw search over a Lightning training run, one step of the search = one epoch.

Freezing a Lightning run is saving a full checkpoint (weights, optimizer and scheduler states, the
loop counters); thawing it is ``trainer.fit(module, ckpt_path=...)`` with a larger ``max_epochs``:
Lightning restores everything and goes on from the saved epoch, so a run trained 3 epochs, frozen
and thawed to 6 ends where an uninterrupted 6-epoch run ends (exactly, when the epochs after the
thaw draw no random numbers, e.g. no shuffling from the global generator and no dropout; otherwise
up to the random draws, which Lightning does not checkpoint).

- :class:`FreezeThawCallback` records the monitored metric after every validation and, when the
  trainer stops, saves the checkpoint atomically: the freeze.
- :func:`lightning_objective` turns a factory of ``LightningModule`` s into the objective of
  :func:`bo.optimize.optimize`; one checkpoint per run, in the run's folder.
- :func:`tune_lightning` runs the whole search.

Example::

    from bo.integrations.lightning import tune_lightning
    from bo.space import Float, Int, Space

    def make_module(config):  # a fresh module per call; it logs "val_loss" in validation_step
        return MyModule(lr=config["lr"], width=config["width"])

    result = tune_lightning(
        make_module,
        Space({"lr": Float(1e-4, 1e-1, log=True), "width": Int(16, 256, log=True)}),
        max_epochs=20,  # the longest a run is trained
        budget=100,  # epochs to spend, summed over runs
        monitor="val_loss",
        datamodule=MyDataModule(),
        workdir="runs/search",  # runs/search/runs/<id>/freeze_thaw.ckpt, and a plot
        state_dir="runs/search/state",  # crash-safe: call again to continue
    )
    print(result.best.config, result.best.value, result.best.step)
    print(result.table())

Not supported: strategies that save a checkpoint as a folder (DeepSpeed, sharded FSDP), remote
checkpoint paths, and a monitored metric that is not validated after every epoch.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from bo.acquisition import DEFAULT_ACQUISITION
from bo.freeze_thaw import FreezeThawConfig
from bo.optimize import OptimizeResult, optimize
from bo.space import CandidateTable, Space
from pfn.surrogate import Surrogate

__all__ = [
    "CHECKPOINT_NAME",
    "FreezeThawCallback",
    "MissingMonitorError",
    "lightning_objective",
    "tune_lightning",
]

CHECKPOINT_NAME = "freeze_thaw.ckpt"  # the run's checkpoint, in the folder optimize gives it

ModuleFactory = Callable[[dict[str, Any]], L.LightningModule]
LightningObjective = Callable[[Mapping[str, Any], int, int, Path], list[float]]

# Set by the objective itself: one step is one epoch, and the freeze is its own checkpoint.
_RESERVED_TRAINER_KWARGS = ("max_epochs", "max_steps")
_TRAINER_DEFAULTS: dict[str, Any] = {
    "enable_checkpointing": False,  # the callback saves the one checkpoint a thaw needs
    "logger": False,
    "enable_progress_bar": False,  # optimize shows one bar for the whole search
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,  # would run again before every one-epoch trial
}


class MissingMonitorError(ValueError):
    """The monitored metric was not logged: a bug in the setup, not a failure of one run.

    :func:`tune_lightning` stops the search on it instead of failing run after run.
    """


class FreezeThawCallback(L.Callback):
    """Records ``monitor`` after every validation and saves a full checkpoint when training ends.

    ``values[e]`` is the metric after ``e`` completed training epochs (1-based, the step of
    freeze-thaw); with several validations in an epoch (``val_check_interval < 1``) the last wins.
    ``values`` is part of the checkpoint, so a thawed callback holds the whole curve of its run.

    The checkpoint (``trainer.save_checkpoint``: weights, optimizer and scheduler states, epoch
    and loop counters, callback states) is written to a temporary file, flushed to disk, then moved
    onto ``checkpoint_path`` with ``os.replace``: a crash mid-save leaves the previous checkpoint.
    Thaw with ``trainer.fit(module, ..., ckpt_path=checkpoint_path)`` and a larger ``max_epochs``.

    Args:
        monitor: the metric's name in ``trainer.callback_metrics`` (e.g. ``"val_loss"``, logged
            with ``self.log`` in ``validation_step`` or ``on_validation_epoch_end``).
        checkpoint_path: the checkpoint file (a local path); its folder is created if needed.
        save_on_train_end: False records values only (no freeze).

    Raises:
        ValueError: an empty ``monitor``.
        MissingMonitorError: (during fit) ``monitor`` is not among the logged metrics.
    """

    def __init__(
        self, *, monitor: str, checkpoint_path: str | Path, save_on_train_end: bool = True
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a non-empty metric name, got {monitor!r}")
        self.monitor = monitor
        self.checkpoint_path = Path(checkpoint_path)
        self.save_on_train_end = save_on_train_end
        self.values: dict[int, float] = {}  # completed epochs -> metric
        self.start_epoch: int | None = None  # epoch counter when the last fit began (restored)

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint (one per monitored metric)."""
        return self._generate_state_key(monitor=self.monitor)

    def state_dict(self) -> dict[str, Any]:
        """The recorded values, saved in the checkpoint."""
        return {"values": dict(self.values)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the values recorded before the freeze."""
        self.values = {int(k): float(v) for k, v in state_dict["values"].items()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Note the epoch training starts from (the checkpoint's on a thaw)."""
        self.start_epoch = trainer.current_epoch

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record the metric after the epoch (every metric of the validation is reduced now)."""
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise MissingMonitorError(
                f"FreezeThawCallback: monitor {self.monitor!r} is not among the logged metrics "
                f"{sorted(metrics)}; log it with self.log({self.monitor!r}, ...) in "
                "validation_step or on_validation_epoch_end"
            )
        # during the validation that ends epoch e (0-based), current_epoch is still e
        self.values[trainer.current_epoch + 1] = float(metrics[self.monitor])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Freeze: save the checkpoint (the trainer stopped, normally at ``max_epochs``)."""
        if self.save_on_train_end:
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        """Save ``trainer``'s full checkpoint to ``checkpoint_path`` atomically.

        Every rank must call it (a strategy may gather the state collectively); rank 0 writes.

        Raises:
            ValueError: the strategy saved a folder (DeepSpeed, sharded FSDP), not one file.
        """
        path = self.checkpoint_path
        tmp = path.with_name(f".{path.name}.tmp")
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            if not tmp.is_file():
                raise ValueError(
                    f"FreezeThawCallback saves single-file checkpoints; {type(trainer.strategy)}"
                    f" wrote {tmp} as a folder"
                )
            _fsync(tmp)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        trainer.strategy.barrier("FreezeThawCallback.save")


def lightning_objective(
    module_factory: ModuleFactory,
    *,
    monitor: str,
    datamodule: L.LightningDataModule | None = None,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = 0,
    quiet: bool = True,
) -> LightningObjective:
    """The objective of :func:`bo.optimize.optimize` for a Lightning run: one step = one epoch.

    ``objective(config, step_from, step_to, checkpoint_dir)`` builds ``module_factory(config)``
    and a fresh ``Trainer(max_epochs=step_to, ...)``, fits it (from
    ``checkpoint_dir / CHECKPOINT_NAME`` when ``step_from > 0``: Lightning restores the weights,
    optimizer and scheduler states and the epoch counter), saves the run's checkpoint there, and
    returns ``monitor`` after each epoch ``step_from + 1 .. step_to``. A call whose run is
    already frozen at ``step_to`` (the process died after the freeze and before the optimiser
    journalled the values; a resumed search asks again) returns the values saved with the
    checkpoint, without training.

    The Trainer gets ``enable_checkpointing=False``, ``logger=False``, no progress bar, no model
    summary, no sanity validation and ``default_root_dir=checkpoint_dir``; ``trainer_kwargs``
    overrides them and adds to them: ``callbacks`` join the freeze-thaw callback, each call getting
    fresh copies (their state, e.g. ``EarlyStopping``'s, is saved with the run's checkpoint and
    restored on a thaw); ``deterministic=True`` there makes GPU kernels bit-reproducible, at a
    cost in speed.

    Args:
        module_factory: a fresh ``LightningModule`` for a configuration (called on every call; a
            thaw overwrites its state with the checkpoint's).
        monitor: the metric, logged in validation after every epoch.
        datamodule: the data; or ``train_dataloaders`` / ``val_dataloaders``; or neither when the
            module defines its own dataloaders.
        train_dataloaders, val_dataloaders: as for ``Trainer.fit``.
        trainer_kwargs: more ``Trainer`` arguments (not ``max_epochs`` / ``max_steps``).
        seed: ``seed_everything(seed + step_from)`` before each call, so a new run's
            initialisation and each call's random draws are reproducible; None: no seeding.
        quiet: silence Lightning's informational log lines during each call (warnings remain).

    Raises:
        ValueError: both a datamodule and dataloaders, ``max_epochs`` / ``max_steps`` or
            non-callbacks in ``trainer_kwargs``, or an empty ``monitor``.

    The objective raises:
        ValueError: ``step_from`` / ``step_to`` out of order, or a factory that returns no
            ``LightningModule``.
        FileNotFoundError: a thaw (``step_from > 0``) without the run's checkpoint.
        MissingMonitorError: ``monitor`` not logged, or not after every epoch.
        RuntimeError: the checkpoint resumed at another epoch than ``step_from``, or training
            stopped before ``step_to`` (early stopping, ``max_time``, an interruption).
    """
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"monitor must be a non-empty metric name, got {monitor!r}")
    if datamodule is not None and (train_dataloaders is not None or val_dataloaders is not None):
        raise ValueError("give a datamodule or train/val dataloaders, not both")
    user_kwargs = dict(trainer_kwargs or {})
    reserved = [k for k in _RESERVED_TRAINER_KWARGS if k in user_kwargs]
    if reserved:
        raise ValueError(
            f"trainer_kwargs must not set {', '.join(reserved)}: one step of the search is one "
            "epoch, and the objective sets max_epochs to the trial's step"
        )
    user_callbacks = user_kwargs.pop("callbacks", None) or []
    if isinstance(user_callbacks, L.Callback):
        user_callbacks = [user_callbacks]
    if not isinstance(user_callbacks, Sequence) or not all(
        isinstance(c, L.Callback) for c in user_callbacks
    ):
        raise ValueError(
            f"trainer_kwargs['callbacks'] must be Lightning callbacks, got {user_callbacks!r}"
        )

    def objective(
        config: Mapping[str, Any], step_from: int, step_to: int, checkpoint_dir: Path
    ) -> list[float]:
        if not 0 <= step_from < step_to:
            raise ValueError(f"need 0 <= step_from < step_to, got {step_from}, {step_to}")
        ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME
        if step_from > 0 and not ckpt.is_file():
            raise FileNotFoundError(
                f"cannot thaw the run at epoch {step_from}: its checkpoint {ckpt} is missing"
            )
        callback = FreezeThawCallback(monitor=monitor, checkpoint_path=ckpt)
        with _quiet_lightning(quiet):
            if seed is not None:
                L.seed_everything(seed + step_from, workers=True, verbose=False)
            module = module_factory(dict(config))
            if not isinstance(module, L.LightningModule):
                raise ValueError(
                    f"module_factory must return a LightningModule, got {type(module).__name__}"
                )
            kwargs = {**_TRAINER_DEFAULTS, "default_root_dir": checkpoint_dir, **user_kwargs}
            # copies: a callback's state belongs to one run (a thaw restores it from the checkpoint)
            callbacks = [*copy.deepcopy(user_callbacks), callback]
            trainer = L.Trainer(**kwargs, max_epochs=step_to, callbacks=callbacks)
            trainer.fit(
                module,
                train_dataloaders=train_dataloaders,
                val_dataloaders=val_dataloaders,
                datamodule=datamodule,
                ckpt_path=ckpt if step_from > 0 else None,
            )
        epochs = range(step_from + 1, step_to + 1)
        if (
            callback.start_epoch is None
            and trainer.current_epoch == step_to
            and all(e in callback.values for e in epochs)
        ):  # already frozen at step_to: the process died after the freeze, before the optimiser
            return [callback.values[e] for e in epochs]  # heard of it; the values are restored
        if callback.start_epoch != step_from:
            raise RuntimeError(
                f"the checkpoint {ckpt} resumed at epoch {callback.start_epoch}, but the trial "
                f"thaws the run at epoch {step_from}"
            )
        if trainer.interrupted or trainer.current_epoch != step_to:
            raise RuntimeError(
                f"training stopped at epoch {trainer.current_epoch}, before max_epochs={step_to} "
                "(early stopping, max_time or an interruption)"
            )
        missing = [e for e in epochs if e not in callback.values]
        if missing:
            raise MissingMonitorError(
                f"no value of {monitor!r} was recorded after epoch(s) {missing}: validation must "
                "run after every epoch (check_val_every_n_epoch=1, limit_val_batches > 0, a "
                "validation dataloader)"
            )
        return [callback.values[e] for e in epochs]

    return objective


def tune_lightning(
    module_factory: ModuleFactory,
    space: Space,
    *,
    max_epochs: int,
    budget: int,
    monitor: str,
    mode: Literal["min", "max"] = "min",
    datamodule: L.LightningDataModule | None = None,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    workdir: str | Path,
    state_dir: str | Path | None = None,
    surrogate: Surrogate | None = None,
    seed: int = 0,
    progress: bool = True,
    trainer_kwargs: Mapping[str, Any] | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    acquisition: str = DEFAULT_ACQUISITION,
    config: FreezeThawConfig | None = None,
    candidates: CandidateTable | None = None,
    plot: bool = True,
    time_limit_s: float | None = None,
) -> OptimizeResult:
    """Freeze-thaw search over ``module_factory``'s configurations, spending ``budget`` epochs.

    :func:`bo.optimize.optimize` with :func:`lightning_objective`: each trial trains one run one
    epoch further (a new run from scratch, or a frozen one thawed from its checkpoint in
    ``workdir/runs/<id>/``) and reports ``monitor`` after it. A run whose training raises or whose
    metric is NaN fails (never resumed); a ``monitor`` that is not logged stops the search with
    :class:`MissingMonitorError`.

    Args:
        module_factory: a fresh ``LightningModule`` for a configuration (a dict of ``space``).
        space: the search space.
        max_epochs: the longest a run is trained.
        budget: epochs to spend, summed over runs.
        monitor: the validation metric to optimise.
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
        datamodule, train_dataloaders, val_dataloaders: the data, as for ``Trainer.fit``.
        workdir: run folders (``runs/<id>``, each with its checkpoint) and the plot.
        state_dir: journal folder: the search survives a crash; the same call again continues it.
        surrogate: the PFN (None: the shipped one).
        seed: seeds the search and each call's training (see :func:`lightning_objective`).
        progress: a progress bar with the current trial and the incumbent.
        trainer_kwargs: more ``Trainer`` arguments (``accelerator``, ``precision``, ...).
        lower_bound, upper_bound: known bounds of the metric (e.g. 0 for a loss).
        acquisition: see :data:`bo.acquisition.ACQUISITIONS`.
        config: the candidate pool's settings (None: the defaults).
        candidates: a fixed grid of configurations (None: sample new ones from ``space``).
        plot: write ``workdir/freeze_thaw.png``.
        time_limit_s: wall-clock seconds after which no new epoch starts (see
            :func:`bo.optimize.optimize`); None: no limit.

    Returns:
        The incumbent, per-run summaries and the history (values in ``monitor``'s units).

    Raises:
        ValueError: bad arguments (see :func:`lightning_objective` and
            :func:`bo.optimize.optimize`).
        MissingMonitorError: ``monitor`` is not logged after every epoch.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    objective = lightning_objective(
        module_factory,
        monitor=monitor,
        datamodule=datamodule,
        train_dataloaders=train_dataloaders,
        val_dataloaders=val_dataloaders,
        trainer_kwargs=trainer_kwargs,
        seed=seed,
    )

    def stop_on_setup_errors(
        config: Mapping[str, Any], step_from: int, step_to: int, checkpoint_dir: Path
    ) -> list[float]:
        try:
            return objective(config, step_from, step_to, checkpoint_dir)
        except MissingMonitorError as err:  # optimize would fail every run on it, one by one
            raise _StopSearch(err) from err

    try:
        return optimize(
            stop_on_setup_errors,
            space,
            max_steps=max_epochs,
            budget=budget,
            minimize=mode == "min",
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            surrogate=surrogate,
            acquisition=acquisition,
            seed=seed,
            workdir=workdir,
            state_dir=state_dir,
            config=config,
            candidates=candidates,
            progress=progress,
            plot=plot,
            time_limit_s=time_limit_s,
        )
    except _StopSearch as stop:
        raise stop.error from None


class _StopSearch(BaseException):
    """Carries a setup error through ``optimize``, which turns any ``Exception`` into a failed run.

    The trial stays pending in the journal: with ``state_dir``, the fixed call re-runs it.
    """

    def __init__(self, error: MissingMonitorError) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def _quiet_lightning(quiet: bool) -> Iterator[None]:
    """Lightning's INFO lines (devices, "max_epochs reached") silenced for the block; restored."""
    if not quiet:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
