"""A Lightning callback that stops a run the PFN deems hopeless (the LC-PFN rule).

:class:`PFNEarlyStopping` reads the monitored metric after every validation epoch as a partial
learning curve and stops training once, at every later epoch up to ``max_epochs``, the surrogate
gives the run at most ``threshold`` probability of beating a reference: the best final value of
earlier runs (``history``) or a value you give (``reference``). The rule is LC-PFN's
(:mod:`bo.pruning`); the earlier runs' curves are the surrogate's context too, as in FT-PFN.
Unlike Lightning's ``EarlyStopping``, which waits for a plateau, it stops a run that is still
improving when its curve cannot catch up.

Example (a sequence of runs; each later run is judged against the earlier ones)::

    import lightning as L

    from bo.integrations.early_stopping import PFNEarlyStopping

    history = []  # each finished or stopped run's validation losses, epoch 1, 2, ...
    for lr in (1e-3, 3e-3, 1e-2, 3e-2):
        stopper = PFNEarlyStopping("val_loss", max_epochs=20, history=history, lower_bound=0.0)
        trainer = L.Trainer(max_epochs=20, callbacks=[stopper])
        trainer.fit(MyModule(lr=lr), datamodule=data)
        history.append(stopper.values)
        print(lr, stopper.stopped_epoch, stopper.last_decision)

With hyperparameters (``config`` and ``history_configs``, encoded by a :class:`bo.space.Space`, or
already in [0, 1]), the surrogate reads which earlier runs resemble this one, as FT-PFN does: a run
is then judged by its own curve *and* by how runs of similar configurations ended. On TaskSet's
recorded curves that kept the best run in 6 of 7 studies instead of 5, with 2 wrong stops instead
of 5 (``benchmarks/early_stopping.py --callback --use-params``). On short curves like LCDB's (12-18
points) the rule is not safe either way (README, "Evaluating on recorded curves")::

    from bo.space import Float, Space

    space = Space({"lr": Float(1e-4, 1e-1, log=True)})
    history, configs = [], []
    for lr in (1e-3, 3e-3, 1e-2, 3e-2):
        stopper = PFNEarlyStopping(
            "val_loss", max_epochs=20, history=history, lower_bound=0.0,
            space=space, config={"lr": lr}, history_configs=configs,
        )
        ...  # fit as above
        history.append(stopper.values)
        configs.append({"lr": lr})

Epochs are counted from 1 (the value after the first epoch is at step 1). The callback acts
while fitting only (not in ``trainer.validate``) and decides once per epoch, at its end, on the
epoch's last validated value (``val_check_interval`` below 1 validates more often); an epoch
without a validation (``check_val_every_n_epoch`` above 1) is a gap in the curve. A NaN or ±inf
value counts as diverged: the worst value. A run that trained all ``max_epochs`` epochs is
finished, and its final value is its last validated one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import numpy as np
from lightning.pytorch.trainer.states import TrainerFn

from bo.pruning import beat_probabilities, check_rule
from bo.space import Space, is_number
from pfn.surrogate import Surrogate

__all__ = ["PFNEarlyStopping", "StopDecision"]

Reason = Literal["min_epochs", "no_reference", "last_epoch", "forecast"]


@dataclass(frozen=True, eq=False)
class StopDecision:
    """What :class:`PFNEarlyStopping` concluded after one validation epoch.

    ``reason``: ``"min_epochs"`` (too few values yet), ``"no_reference"`` (neither ``reference``
    nor a finished run with a finite final value in ``history``), ``"last_epoch"`` (nothing left
    to save) or ``"forecast"`` (the surrogate was asked; only then are ``epochs`` and
    ``probabilities`` non-empty).
    """

    epoch: int  # the epoch just validated (from 1)
    stop: bool
    reason: Reason
    reference: float | None  # the value to beat
    epochs: np.ndarray  # (L,) later epochs queried: epoch + 1 .. max_epochs
    probabilities: np.ndarray  # (L,) P(the value there beats the reference)

    @property
    def max_probability(self) -> float:
        """The largest probability of beating the reference later (NaN without a forecast)."""
        return float(self.probabilities.max()) if self.probabilities.size else math.nan


class PFNEarlyStopping(L.Callback):
    """Stop training once the PFN gives the run at most ``threshold`` chance of beating the
    reference at any later epoch (see the module docstring).

    Args:
        monitor: the validation metric logged every epoch (e.g. ``"val_loss"``).
        max_epochs: the epochs a full run trains (the curve's last step).
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
        history: earlier runs' values of ``monitor``, one sequence per run, epoch 1 first (NaN:
            not measured, ±inf: diverged), e.g. earlier instances' :attr:`values`. They are the
            surrogate's context; a run of ``max_epochs`` epochs is finished, and the best of
            the finished runs' last finite values is the reference.
        reference: the value to beat instead (e.g. a known baseline's); None: from ``history``.
        threshold: stop when no later epoch beats the reference with a probability above this,
            in [0, 1).
        min_epochs: never stop before this many values are measured.
        surrogate: the network; None loads the shipped one at the first decision that needs it
            (with ``config``: when fitting starts, to check the hyperparameters' width).
        lower_bound, upper_bound: known bounds of the metric (0 for a loss, 0 and 1 for an
            accuracy); None for an unbounded side.
        config: this run's hyperparameters: a mapping ``space`` encodes, or without ``space``
            a sequence of D numbers in [0, 1] (already encoded; one-hot for a categorical).
            None: the surrogate reads no hyperparameters.
        history_configs: the ``history`` runs' hyperparameters, one per run, in the form of
            ``config``; needed with ``config`` whenever ``history`` is not empty.
        space: the search space that encodes mappings (:class:`bo.space.Space`).

    Attributes:
        values: this run's values, epoch 1 first, one per epoch trained (NaN: not validated;
            a diverged value is stored as the worst, +inf for ``"min"``): append them to the
            next run's ``history``. Reset when a fit starts (restored when it resumes from a
            checkpoint).
        last_decision: the :class:`StopDecision` of the latest validation (None before).
        stopped_epoch: the epoch after which it stopped the run (None: it did not).
        configs: (1 + len(history), D) the encoded configurations, this run's first, in [0, 1];
            None without ``config``.

    Raises:
        ValueError: an argument is out of range or of the wrong type.
    """

    def __init__(
        self,
        monitor: str,
        *,
        max_epochs: int,
        mode: Literal["min", "max"] = "min",
        history: Sequence[Sequence[float]] = (),
        reference: float | None = None,
        threshold: float = 0.05,
        min_epochs: int = 1,
        surrogate: Surrogate | None = None,
        lower_bound: float | None = None,
        upper_bound: float | None = None,
        config: Mapping[str, Any] | Sequence[float] | None = None,
        history_configs: Sequence[Mapping[str, Any] | Sequence[float]] | None = None,
        space: Space | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a metric's name, got {monitor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        rule = check_rule(
            max_step=max_epochs,
            min_steps=min_epochs,
            threshold=threshold,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            surrogate=surrogate,
            names=("max_epochs", "min_epochs"),
        )
        if reference is not None and not (is_number(reference) and math.isfinite(reference)):
            raise ValueError(f"reference must be a finite number or None, got {reference!r}")
        self.monitor, self.mode, self.max_epochs = monitor, mode, rule.max_step
        self.history = [self._check_run(i, run) for i, run in enumerate(history)]
        self.configs = _encode_configs(config, history_configs, len(self.history), space)
        self.reference = None if reference is None else float(reference)
        self.threshold, self.min_epochs = rule.threshold, rule.min_steps
        self.lower_bound, self.upper_bound = rule.lower_bound, rule.upper_bound
        self._surrogate = surrogate
        self.values: list[float] = []
        self.last_decision: StopDecision | None = None
        self.stopped_epoch: int | None = None
        self._validated = False  # a value was recorded since the last decision

    @property
    def state_key(self) -> str:
        """Tells instances apart in a checkpoint (several may watch other metrics)."""
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    @property
    def _worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def _check_run(self, index: int, run: Sequence[float]) -> np.ndarray:
        values = np.asarray(run, dtype=np.float64).reshape(-1)
        if values.size > self.max_epochs:
            raise ValueError(
                f"history run {index} has {values.size} values, more than max_epochs="
                f"{self.max_epochs}"
            )
        return values

    def _check_width(self) -> None:
        """Refuse more encoded hyperparameters than the surrogate reads (before training)."""
        if self.configs is not None and self.configs.shape[1] > self.surrogate.config.max_hps:
            raise ValueError(
                f"the configurations have {self.configs.shape[1]} encoded dimensions, the "
                f"surrogate reads at most {self.surrogate.config.max_hps}"
            )

    @property
    def surrogate(self) -> Surrogate:
        """The network, loaded on first access when none was given."""
        if self._surrogate is None:
            self._surrogate = Surrogate.load()
        return self._surrogate

    def best_reference(self) -> float | None:
        """The value to beat: ``reference``, else the best final value of the finished runs of
        ``history`` (those of ``max_epochs`` epochs; their last finite value); None: none yet."""
        if self.reference is not None:
            return self.reference
        finals = []
        for v in self.history:
            finite = v[np.isfinite(v)]
            if v.size == self.max_epochs and finite.size:
                finals.append(float(finite[-1]))
        if not finals:
            return None
        return min(finals) if self.mode == "min" else max(finals)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """A fit starts: check the trainer's epochs and start a new curve (a checkpoint being
        resumed restores its own afterwards)."""
        if stage != TrainerFn.FITTING:
            return
        epochs = trainer.max_epochs
        if epochs is None or epochs < 0 or epochs > self.max_epochs:  # -1: no end
            raise ValueError(
                f"the trainer runs up to {epochs} epochs, the callback's max_epochs is "
                f"{self.max_epochs}: give both the same"
            )
        self._check_width()
        self.values, self.stopped_epoch, self.last_decision = [], None, None
        self._validated = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record this validation's value as the epoch's (the epoch's last one counts)."""
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if self.monitor not in trainer.callback_metrics:
            logged = sorted(trainer.callback_metrics)
            raise ValueError(
                f"PFNEarlyStopping monitors {self.monitor!r}, which is not logged; logged: {logged}"
            )
        epoch = trainer.current_epoch + 1
        value = float(trainer.callback_metrics[self.monitor])
        self._pad(epoch)
        self.values[epoch - 1] = value if math.isfinite(value) else self._worst
        self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Decide on the epoch's value, once per validated epoch, and stop a hopeless run."""
        if not self._validated:
            return
        self._validated = False
        epoch = trainer.current_epoch + 1
        decision = self.decide(epoch)
        self.last_decision = decision
        if trainer.strategy.reduce_boolean_decision(decision.stop, all=False):
            trainer.should_stop = True
            self.stopped_epoch = epoch

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """One value per epoch trained: the epochs after the last validation are gaps."""
        self._pad(trainer.current_epoch)

    def _pad(self, epochs: int) -> None:
        if len(self.values) < epochs:
            self.values += [math.nan] * (epochs - len(self.values))

    def decide(self, epoch: int) -> StopDecision:
        """The decision after ``epoch`` (from 1) given :attr:`values`; see the module docstring.

        Raises:
            ValueError: ``epoch`` is outside ``1 .. max_epochs``.
        """
        if not 1 <= epoch <= self.max_epochs:
            raise ValueError(f"epoch {epoch} is outside 1 .. max_epochs={self.max_epochs}")
        own = np.full(epoch, np.nan)
        own[: min(epoch, len(self.values))] = self.values[:epoch]
        steps = np.flatnonzero(~np.isnan(own)) + 1  # (n,) epochs with a value
        best = self.best_reference()

        def no_forecast(reason: Reason) -> StopDecision:
            empty = np.zeros(0)
            return StopDecision(epoch, False, reason, best, empty.astype(np.int64), empty)

        if steps.size < self.min_epochs:
            return no_forecast("min_epochs")
        if best is None:
            return no_forecast("no_reference")
        if epoch >= self.max_epochs:
            return no_forecast("last_epoch")
        others = [(np.flatnonzero(~np.isnan(v)) + 1, v[~np.isnan(v)]) for v in self.history]
        read = [i for i, (s, _) in enumerate(others) if s.size]  # runs with a value: context
        curves = [(steps, own[steps - 1])] + [others[i] for i in read]
        configs = None
        if self.configs is not None:
            self._check_width()
            configs = self.configs[[0] + [i + 1 for i in read]]  # (C, D)
        later, probabilities = beat_probabilities(
            self.surrogate,
            curves,
            best=best,
            last_step=epoch,
            max_step=self.max_epochs,
            higher_is_better=self.mode == "max",
            # a reference given is scaled with the runs (a run may have no finite value yet)
            scale_runs=[own[steps - 1]]
            + [v for _, v in others]
            + ([np.array([best])] if self.reference is not None else []),
            configs=configs,
            lower_bound=self.lower_bound,
            upper_bound=self.upper_bound,
        )
        stop = bool((probabilities <= self.threshold).all())
        return StopDecision(epoch, stop, "forecast", best, later, probabilities)

    def state_dict(self) -> dict[str, Any]:
        """The run's curve and stop, saved in Lightning checkpoints (a resumed run keeps them)."""
        return {"values": list(self.values), "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s curve and stop."""
        self.values = [float(v) for v in state_dict["values"]]
        self.stopped_epoch = state_dict["stopped_epoch"]


def _encode_configs(
    config: Mapping[str, Any] | Sequence[float] | None,
    history_configs: Sequence[Mapping[str, Any] | Sequence[float]] | None,
    n_history: int,
    space: Space | None,
) -> np.ndarray | None:
    """(1 + n_history, D) encoded configurations, this run's first; None without ``config``."""
    if config is None:
        if history_configs is not None or space is not None:
            raise ValueError("history_configs and space need this run's config")
        return None
    if history_configs is None:
        if n_history:
            raise ValueError(
                f"config needs history_configs: one configuration per history run ({n_history})"
            )
        history_configs = ()
    if not isinstance(history_configs, Mapping | Sequence | np.ndarray):
        history_configs = list(history_configs)  # an iterator or generator: read it once
    if isinstance(history_configs, Mapping) or len(history_configs) != n_history:
        n = "a mapping" if isinstance(history_configs, Mapping) else len(history_configs)
        raise ValueError(
            f"history_configs must hold one configuration per history run ({n_history}), got {n}"
        )
    if space is not None and not isinstance(space, Space):
        raise ValueError(f"space must be a bo.space.Space or None, got {type(space)!r}")
    rows = []
    for where, item in [("config", config)] + [
        (f"history_configs[{i}]", c) for i, c in enumerate(history_configs)
    ]:
        if space is not None:
            if not isinstance(item, Mapping):
                raise ValueError(f"{where}: with a space, give a mapping, got {type(item)!r}")
            try:
                rows.append(space.encode(item))
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            continue
        if isinstance(item, Mapping):
            raise ValueError(f"{where} is a mapping: give space to encode it")
        try:
            x = np.asarray(item, dtype=np.float64)
        except (ValueError, TypeError):
            raise ValueError(f"{where} must be numbers in [0, 1], got {item!r}") from None
        if x.ndim != 1 or not np.all((x >= 0.0) & (x <= 1.0)):  # NaN fails too
            raise ValueError(f"{where} must be a flat sequence of numbers in [0, 1], got {item!r}")
        if rows and x.size != rows[0].size:
            raise ValueError(f"{where} has {x.size} numbers, config has {rows[0].size}")
        rows.append(x)
    return np.stack(rows)
