"""``bo.integrations.early_stopping``: the LC-PFN stop rule as a Lightning callback."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import bo.integrations.early_stopping as early_stopping
from bo.integrations.early_stopping import PFNEarlyStopping
from bo.pruning import beat_probabilities
from bo.space import Categorical, Float, Space
from pfn.surrogate import Surrogate

pytestmark = pytest.mark.filterwarnings(
    "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"
)


def _loaders() -> tuple[DataLoader, DataLoader]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=gen)
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 3.0]))[:, None]
    return DataLoader(TensorDataset(x[:64], y[:64]), batch_size=32), DataLoader(
        TensorDataset(x[64:], y[64:]), batch_size=32
    )


TRAIN, VAL = _loaders()


class Linear(L.LightningModule):
    def __init__(self, metric: str = "val_loss") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net, self.metric, self.epochs = torch.nn.Linear(4, 1), metric, 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def on_train_epoch_end(self) -> None:
        self.epochs += 1

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log(self.metric, torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Scripted(Linear):
    """Logs ``script[epoch]`` as ``val_loss`` (the network still trains)."""

    def __init__(self, script: list[float]) -> None:
        super().__init__()
        self.script = script

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", float(self.script[self.current_epoch]))


def _trainer(callbacks: list, epochs: int = 6, **kwargs) -> L.Trainer:
    settings = dict(accelerator="cpu", devices=1, enable_checkpointing=False, logger=False,
                    enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    return L.Trainer(max_epochs=epochs, callbacks=callbacks, **{**settings, **kwargs})


def _fit(module: L.LightningModule, callback: L.Callback, epochs: int = 6, **kwargs) -> L.Trainer:
    trainer = _trainer([callback], epochs, **kwargs)
    trainer.fit(module, TRAIN, VAL)
    return trainer


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint_path) -> Surrogate:
    return Surrogate.load(tiny_checkpoint_path)


def test_a_run_that_cannot_beat_the_reference_stops_and_one_that_can_goes_on(tiny):
    # A loss >= 0 cannot beat -1: its probability is 0 whatever the network; any loss beats 1e9.
    hopeless = PFNEarlyStopping("val_loss", max_epochs=6, reference=-1.0, min_epochs=2,
                                surrogate=tiny, lower_bound=0.0)  # fmt: skip
    module = Linear()
    _fit(module, hopeless)
    assert hopeless.stopped_epoch == 2 and module.epochs == 2 and len(hopeless.values) == 2
    d = hopeless.last_decision
    assert d.stop and d.reason == "forecast" and list(d.epochs) == [3, 4, 5, 6]
    assert d.max_probability < 1e-6  # 0 up to float32 rounding
    easy = PFNEarlyStopping("val_loss", max_epochs=6, reference=1e9, surrogate=tiny,
                            lower_bound=0.0)  # fmt: skip
    module = Linear()
    _fit(module, easy)
    assert easy.stopped_epoch is None and module.epochs == 6 and len(easy.values) == 6
    assert easy.last_decision.reason == "last_epoch"
    assert all(math.isfinite(v) for v in easy.values)


def test_the_reference_is_the_best_finished_run_of_the_history(monkeypatch):
    seen = {}

    def fake(surrogate, curves, **kw):
        seen.update(curves=curves, **kw)
        later = np.arange(kw["last_step"] + 1, kw["max_step"] + 1)
        p = np.full(later.size, 0.01)
        p[-1] = seen.get("p", 0.01)  # the last epoch's chance
        return later, p

    monkeypatch.setattr(early_stopping, "beat_probabilities", fake)
    history = [[5.0, 3.0, 2.0, 1.5], [4.0, 2.5], [6.0, math.nan, 1.2, 1.0], [3.0, 2.0, 1.0, np.nan]]
    stopper = PFNEarlyStopping("val_loss", max_epochs=4, history=history, min_epochs=2,
                               surrogate=object.__new__(Surrogate))  # fmt: skip
    assert stopper.best_reference() == 1.0  # runs 0 and 2 finished; 1 stopped; 3's last is NaN
    best_acc = PFNEarlyStopping("acc", max_epochs=4, mode="max", history=history).best_reference()
    assert best_acc == 1.5
    stopper.values = [4.0]
    assert stopper.decide(1).reason == "min_epochs"
    stopper.values = [4.0, math.nan, 3.5]
    d = stopper.decide(3)
    assert d.stop and d.reason == "forecast" and list(d.epochs) == [4] and d.reference == 1.0
    steps, values = seen["curves"][0]  # the run itself first, without its NaN
    assert list(steps) == [1, 3] and list(values) == [4.0, 3.5]
    assert len(seen["curves"]) == 1 + 4 and list(seen["curves"][3][0]) == [1, 3, 4]
    assert seen["last_step"] == 3 and seen["best"] == 1.0 and not seen["higher_is_better"]
    seen["p"] = 0.2  # one later epoch above the threshold: go on
    stopper.values = [4.0, 3.0]
    assert not stopper.decide(2).stop and list(stopper.decide(2).probabilities) == [0.01, 0.2]
    seen["p"] = 0.05  # at the threshold: stop
    assert stopper.decide(2).stop
    assert stopper.decide(4).reason == "last_epoch"
    alone = PFNEarlyStopping("val_loss", max_epochs=4, history=[[3.0, 2.0]])
    alone.values = [1.0, 1.0]
    assert alone.decide(2).reason == "no_reference"  # no finished run, no reference given
    with pytest.raises(ValueError, match="outside"):
        stopper.decide(5)


def test_a_missing_metric_names_the_logged_ones(tiny):
    stopper = PFNEarlyStopping("val_acc", max_epochs=3, reference=0.5, surrogate=tiny)
    with pytest.raises(ValueError, match=r"'val_acc'.*val_loss"):
        _fit(Linear(), stopper, epochs=3)


def test_it_acts_while_fitting_only_and_once_per_epoch(tiny):
    hopeless = dict(reference=-1.0, surrogate=tiny, lower_bound=0.0)
    stopper = PFNEarlyStopping("val_loss", max_epochs=6, min_epochs=2, **hopeless)
    module = Linear()
    trainer = _fit(module, stopper)
    trainer.validate(module, VAL, verbose=False)  # after the fit: no new value, no new stop
    assert stopper.values == pytest.approx(stopper.values[:2]) and len(stopper.values) == 2
    assert stopper.stopped_epoch == 2
    # validating 2 times an epoch: the stop waits for the epoch's end (2 batches an epoch)
    often = PFNEarlyStopping("val_loss", max_epochs=6, **hopeless)
    trainer = _fit(Linear(), often, val_check_interval=0.5)
    assert often.stopped_epoch == 1 and trainer.global_step == 2 and len(often.values) == 1


def test_epochs_without_validation_are_gaps_and_a_full_run_is_finished(tiny):
    stopper = PFNEarlyStopping("val_loss", max_epochs=5, reference=1e9, surrogate=tiny)
    _fit(Linear(), stopper, epochs=5, check_val_every_n_epoch=2)
    assert len(stopper.values) == 5 and stopper.stopped_epoch is None
    assert [math.isnan(v) for v in stopper.values] == [True, False, True, False, True]
    after = PFNEarlyStopping("val_loss", max_epochs=5, history=[stopper.values], surrogate=tiny)
    assert after.best_reference() == stopper.values[3]  # its last validated value
    # a second fit with the same instance starts a new curve
    _fit(Linear(), stopper, epochs=3)
    assert len(stopper.values) == 3


def test_diverged_values_count_as_the_worst(tiny):
    stopper = PFNEarlyStopping("val_loss", max_epochs=6, reference=1.0, min_epochs=2,
                               surrogate=tiny, lower_bound=0.0)  # fmt: skip
    _fit(Scripted([2.0, math.inf, math.nan, 1.0, 1.0, 1.0]), stopper)
    assert stopper.values[:3] == [2.0, math.inf, math.inf]
    # no finite value at all: the reference is scaled with the run, and the network is asked
    alone = PFNEarlyStopping("val_loss", max_epochs=6, reference=1.0, surrogate=tiny)
    _fit(Scripted([math.nan] * 6), alone)
    assert alone.values[0] == math.inf and alone.last_decision.reason in ("forecast", "last_epoch")
    assert alone.last_decision.reference == 1.0


def test_two_instances_checkpoint_and_resume_their_curves(tiny, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def callbacks() -> list:
        return [
            PFNEarlyStopping("val_loss", max_epochs=6, reference=1e9, surrogate=tiny),
            PFNEarlyStopping("val_loss", max_epochs=6, mode="max", reference=-1e9, surrogate=tiny),
            ModelCheckpoint(dirpath=tmp_path, save_last=True),
        ]

    first = callbacks()
    _trainer(first, epochs=3, enable_checkpointing=True).fit(Linear(), TRAIN, VAL)
    assert first[0].values == first[1].values and len(first[0].values) == 3
    second = callbacks()
    trainer = _trainer(second, epochs=6, enable_checkpointing=True)
    trainer.fit(Linear(), TRAIN, VAL, ckpt_path=tmp_path / "last.ckpt")
    assert second[0].values[:3] == first[0].values and len(second[0].values) == 6
    assert second[1].values == second[0].values


def test_a_trainer_longer_than_the_curve_is_refused_before_training(tiny):
    stopper = PFNEarlyStopping("val_loss", max_epochs=4, reference=1.0, surrogate=tiny)
    module = Linear()
    with pytest.raises(ValueError, match="runs up to 6 epochs"):
        _fit(module, stopper, epochs=6)
    with pytest.raises(ValueError, match="runs up to -1 epochs"):  # no end
        _fit(module, stopper, epochs=-1)
    assert module.epochs == 0


def test_the_curve_survives_a_checkpoint():
    a = PFNEarlyStopping("val_loss", max_epochs=5, reference=0.1)
    a.values, a.stopped_epoch = [3.0, math.nan, 2.0], 3
    b = PFNEarlyStopping("val_loss", max_epochs=5, reference=0.1)
    b.load_state_dict(a.state_dict())
    assert b.values[0] == 3.0 and math.isnan(b.values[1]) and b.stopped_epoch == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(monitor=""), "monitor"),
        (dict(mode="avg"), "mode"),
        (dict(max_epochs=0), "max_epochs"),
        (dict(min_epochs=9), "exceeds"),
        (dict(threshold=1.0), "threshold"),
        (dict(threshold=True), "threshold"),
        (dict(reference=math.inf), "reference"),
        (dict(history=[[1.0] * 6]), "more than max_epochs"),
        (dict(surrogate="default"), "surrogate"),
        (dict(lower_bound=math.nan), "lower_bound"),
        (dict(lower_bound="0"), "lower_bound"),
        (dict(lower_bound=1.0, upper_bound=1.0), "smaller than"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    args = {"monitor": "val_loss", "max_epochs": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        PFNEarlyStopping(args.pop("monitor"), **args)


def test_hyperparameters_reach_the_surrogate_in_the_curves_order(monkeypatch, tiny):
    seen = {}

    def fake(surrogate, curves, **kw):
        seen.update(curves=curves, **kw)
        return np.arange(kw["last_step"] + 1, kw["max_step"] + 1), np.ones(kw["max_step"] - 2)

    monkeypatch.setattr(early_stopping, "beat_probabilities", fake)
    space = Space({"lr": Float(1e-4, 1e-1, log=True), "cell": Categorical(["gru", "lstm"])})
    configs = [
        {"lr": 1e-4, "cell": "gru"},
        {"lr": 1e-2, "cell": "lstm"},
        {"lr": 1e-1, "cell": "gru"},
    ]
    history = [[3.0, 2.0, 1.0, 0.5], [math.nan, math.nan], [4.0, 3.0, 2.0, 1.0]]
    kw = dict(max_epochs=4, history=history, min_epochs=1, surrogate=tiny)
    stopper = PFNEarlyStopping("val_loss", space=space, config={"lr": 1e-3, "cell": "lstm"},
                               history_configs=configs, **kw)  # fmt: skip
    stopper.values = [5.0, 4.0]
    stopper.decide(2)
    # the run first, then the history runs with a value (run 1 has none, so its config goes too)
    expected = space.encode_many([{"lr": 1e-3, "cell": "lstm"}, configs[0], configs[2]])
    assert len(seen["curves"]) == 3 and np.array_equal(seen["configs"], expected)
    assert [list(v) for _, v in seen["curves"][1:]] == [history[0], history[2]]
    encoded = PFNEarlyStopping("val_loss", config=expected[0], history_configs=space.encode_many(
        configs), **kw)  # fmt: skip
    encoded.values = [5.0, 4.0]
    encoded.decide(2)
    assert np.array_equal(seen["configs"], expected)  # already encoded: the same
    lazily = PFNEarlyStopping("val_loss", space=space, config={"lr": 1e-3, "cell": "lstm"},
                              history_configs=(c for c in configs), **kw)  # fmt: skip
    assert np.array_equal(
        lazily.configs, space.encode_many([{"lr": 1e-3, "cell": "lstm"}, *configs])
    )
    plain = PFNEarlyStopping("val_loss", **kw)
    plain.values = [5.0, 4.0]
    plain.decide(2)
    assert seen["configs"] is None


def test_hyperparameters_tell_a_promising_run_from_a_hopeless_one():
    # Earlier runs share their first two values, then those at x near 0 end badly and those near
    # 1 end well. A new run with that same start is judged by the runs that resemble it.
    rng = np.random.default_rng(0)
    start = [0.95, 0.9]
    history, configs = [], []
    for x in np.linspace(0.0, 1.0, 12):
        final = 0.85 - 0.75 * x
        later = final + (start[1] - final) * np.exp(-np.arange(1, 9) / 2.0)
        history.append(start + list(later + 0.005 * rng.standard_normal(8)))
        configs.append([x])
    surrogate = Surrogate.load()

    def decision(x: float | None) -> early_stopping.StopDecision:
        hps = {} if x is None else {"config": [x], "history_configs": configs}
        stopper = PFNEarlyStopping("val_loss", max_epochs=10, history=history, lower_bound=0.0,
                                   threshold=0.01, surrogate=surrogate, **hps)  # fmt: skip
        stopper.values = list(start)
        return stopper.decide(2)  # the reference: the best final value, ~0.12 (at x = 1)

    near_good, near_bad, unknown = decision(1.0), decision(0.0), decision(None)
    # Beating the best run's final value is hard for anyone (a few percent at best), but a run
    # configured like it keeps a chance ~10x that of a run configured like the worst, or of one
    # read without hyperparameters, which the rule stops.
    assert not near_good.stop and near_bad.stop and unknown.stop
    assert near_good.max_probability > 5 * max(near_bad.max_probability, unknown.max_probability)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(history=[[1.0]], config=[0.5]), "needs history_configs"),
        (dict(history=[[1.0]], config=[0.5], history_configs=[[0.5], [0.2]]), "one configuration"),
        (dict(history=[[1.0]], config=[0.5], history_configs={"a": 1}), "a mapping"),
        (dict(history_configs=[]), "need this run's config"),
        (dict(space=Space({"a": Float(0, 1)})), "need this run's config"),
        (dict(config={"a": 0.5}), "give space"),
        (dict(config=[0.5], space=Space({"a": Float(0, 1)})), "give a mapping"),
        (dict(config={"a": 2.0}, space=Space({"a": Float(0, 1)})), r"config: .*a"),
        (dict(config=[0.5], space="a"), "space must be"),
        (dict(config=[1.5]), r"numbers in \[0, 1\]"),
        (dict(config=[math.nan]), r"numbers in \[0, 1\]"),
        (dict(config=[[0.5]]), "flat"),
        (dict(config=["x"]), r"numbers in \[0, 1\]"),
        (dict(history=[[1.0]], config=[0.5], history_configs=[[0.5, 0.5]]), "has 2 numbers"),
    ],
)
def test_bad_hyperparameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PFNEarlyStopping("val_loss", max_epochs=5, **kwargs)


def test_more_hyperparameters_than_the_surrogate_reads_are_refused_before_training(tiny):
    wide = [0.5] * (tiny.config.max_hps + 1)
    stopper = PFNEarlyStopping("val_loss", max_epochs=6, config=wide, surrogate=tiny)
    with pytest.raises(ValueError, match="reads at most"):
        _fit(Linear(), stopper)


def test_numpy_numbers_are_arguments_too():
    stopper = PFNEarlyStopping("val_loss", max_epochs=5, threshold=np.float32(0.1),
                               reference=np.float64(0.5), lower_bound=np.int64(0))  # fmt: skip
    assert stopper.threshold == pytest.approx(0.1) and stopper.best_reference() == 0.5
    counts = PFNEarlyStopping("val_loss", max_epochs=np.int64(5), min_epochs=np.int32(2))
    assert (counts.max_epochs, counts.min_epochs) == (5, 2) and type(counts.max_epochs) is int


def test_beat_probabilities_read_the_direction(tiny):
    curve = [(np.array([1, 2, 3]), np.array([0.9, 0.6, 0.5]))]  # a falling loss
    kw = dict(last_step=3, max_step=10, higher_is_better=False, lower_bound=0.0)
    later, easy = beat_probabilities(tiny, curve, best=50.0, **kw)
    _, hard = beat_probabilities(tiny, curve, best=-1.0, **kw)
    assert list(later) == list(range(4, 11)) and easy.shape == hard.shape == (7,)
    assert (easy > 0.9).all() and (hard < 1e-6).all()
    with pytest.raises(ValueError, match="last_step"):
        beat_probabilities(tiny, curve, best=0.5, **{**kw, "last_step": 10})
    with pytest.raises(ValueError, match="own curve"):
        beat_probabilities(tiny, [], best=0.5, **kw)
