"""Pretraining the PFN on its prior: configs, the Lightning module, the ``pretrain`` entry point.

The prior is sampled inside ``training_step`` on the training device, from a generator seeded by
``(seed, global step, rank)``: no data loader workers, nothing to copy to the GPU, and a resumed run
sees exactly the batches it would have seen without the interruption. Alternatively the tasks come
from a ``curvepfn prior sample`` HDF5 store (``TrainConfig.data``); the fixed validation set is
always sampled from ``TrainConfig.prior``.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from pfn.bar_distribution import BarDistribution, equal_mass_borders, uniform_borders
from pfn.checkpoint import Checkpoint, checkpoint_paths, load_checkpoint, save_checkpoint
from pfn.model import CurveSetInput, CurveSetTransformer, ModelConfig, upgrade_state_dict
from priors.base import Prior
from priors.batch import CurveBatch
from priors.registry import make_prior, make_prior_config, prior_config_to_dict
from priors.store import CurveTaskDataset, collate_tasks, read_store_info


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 3e-4  # peak learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    warmup_fraction: float = 0.1  # share of max_steps spent warming up linearly from 0
    min_lr_ratio: float = 0.0  # final learning rate as a fraction of lr
    grad_clip: float = 1.0  # max global gradient norm

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"OptimConfig.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(
                f"OptimConfig.warmup_fraction must be in [0, 1), got {self.warmup_fraction}"
            )


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that defines a pretraining run (JSON round-trip via to_dict / from_dict)."""

    model: ModelConfig = field(default_factory=ModelConfig)  # the network
    optim: OptimConfig = field(default_factory=OptimConfig)  # the optimiser and schedule
    # The prior: its name plus config overrides, as for priors.registry.make_prior.
    prior: dict = field(default_factory=lambda: {"name": "mixture"})
    batch_size: int = 25  # tasks per step and device
    max_steps: int = 10_000  # optimiser steps
    seed: int = 0  # seeds the prior stream, the validation set and the initial weights
    borders: str = "uniform"  # bucket borders: "uniform" on [0, 1] or "equal-mass" under the prior
    val_batches: int = 8  # fixed validation batches of batch_size prior tasks
    val_fractions: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8)  # context shares reported
    val_every: int = 500  # steps between validations
    checkpoint_every: int = 500  # steps between resumable Lightning checkpoints
    data: str | None = None  # a `curvepfn prior sample` HDF5 file to train on instead of the prior
    # A product checkpoint (NAME, NAME.pt or NAME.json) whose weights and bucket borders start the
    # run (fine-tuning / continued training; `borders` is then unused); its model config must
    # equal `model`, or be `model` without the last-value head (which is then added,
    # zero-initialised: see pfn.model.upgrade_state_dict; its borders must be uniform).
    init_from: str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "val_batches", "val_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.borders not in ("uniform", "equal-mass"):
            raise ValueError(
                f"TrainConfig.borders must be 'uniform' or 'equal-mass', got {self.borders!r}"
            )
        if self.model.last_value_head and self.borders != "uniform":
            raise ValueError(
                "TrainConfig.borders must be 'uniform' when model.last_value_head is True "
                f"(its bumps assume uniform buckets), got {self.borders!r}"
            )
        if not all(0 < f < 1 for f in self.val_fractions):
            raise ValueError(
                f"TrainConfig.val_fractions must lie in (0, 1), got {self.val_fractions}"
            )

    def to_dict(self) -> dict:
        """JSON-serialisable nested dict."""
        out = asdict(self)
        out["val_fractions"] = list(self.val_fractions)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["model"] = ModelConfig.from_dict(data.get("model", {}))
        data["optim"] = OptimConfig(**data.get("optim", {}))
        if "val_fractions" in data:
            data["val_fractions"] = tuple(data["val_fractions"])
        return cls(**data)


TRAIN_CONFIGS = ("tiny", "cpu", "small", "base")


def _preset_prior() -> dict:
    """The prior of the CPU/GPU presets: the reference mixture, plus, in the FT-PFN tasks, stalled
    runs in half of them (``priors.ftpfn.stall``; in tasks on a geometric grid 30% of the stalled
    region starts late, ``priors.ftpfn.late_onset``), up to 32 hyperparameters drawn log-uniformly,
    a one-hot categorical in 30%, repeated runs of each configuration in 30%, no
    post-saturation decline in half of them (``priors.ftpfn.no_decline``), a geometric budget
    axis in half (``priors.ftpfn.log_time``), 80% of those observed on a geometric grid
    (``priors.ftpfn.geometric_grid``) and dipping observations in 30% (``priors.ftpfn.dips``;
    see ``priors.ftpfn`` and the measurements in ``checkpoints/README.md``)."""
    return {
        "name": "mixture",
        "ftpfn": {
            "stall_task_prob": 0.5,
            "late_start_share": 0.3,
            "late_start_on_grid_only": True,
            "log_uniform_hps": True,
            "max_task_hps": 32,
            "categorical_task_prob": 0.3,
            "replicate_task_prob": 0.3,
            "monotone_task_prob": 0.5,
            "log_time_task_prob": 0.5,
            "geometric_grid_prob": 0.8,
            "dip_task_prob": 0.3,
        },
    }


def train_config(name: str) -> TrainConfig:
    """A named variant (see ``TRAIN_CONFIGS``): ``tiny`` (tests, seconds), ``cpu`` (the shipped
    preview, an hour on 2 CPU cores), ``small`` (CPU, many hours), ``base`` (GPU). All use the
    hyperparameter-distance attention bias (``ModelConfig.hp_bias``); all but ``tiny`` train on
    the mixture prior with our additions (``_preset_prior``)."""
    variants = {
        "tiny": TrainConfig(
            model=ModelConfig(
                d_model=32,
                n_heads=2,
                n_layers=1,
                d_ff=64,
                n_query_layers=1,
                n_buckets=100,
                hp_bias=True,
            ),
            batch_size=4,
            max_steps=50,
            val_batches=2,
            val_every=25,
            checkpoint_every=25,
            prior={"name": "ftpfn", "seq_len": 200, "n_configs": 50},
        ),
        "small": TrainConfig(
            model=ModelConfig(
                d_model=128, n_heads=4, n_layers=4, d_ff=256, n_query_layers=2, hp_bias=True
            ),
            batch_size=16,
            max_steps=20_000,
            prior=_preset_prior(),
        ),
        # The shipped preview checkpoint: the small network, trained within one hour on 2 CPU cores.
        "cpu": TrainConfig(
            model=ModelConfig(
                d_model=128, n_heads=4, n_layers=4, d_ff=256, n_query_layers=2, hp_bias=True
            ),
            optim=OptimConfig(lr=5e-4, warmup_fraction=0.05),
            batch_size=8,
            max_steps=2500,
            val_batches=4,
            val_every=1250,
            checkpoint_every=100,
            prior=_preset_prior(),
        ),
        "base": TrainConfig(
            model=ModelConfig(
                d_model=256, n_heads=8, n_layers=6, d_ff=512, n_query_layers=2, hp_bias=True
            ),
            batch_size=64,
            max_steps=50_000,
            optim=OptimConfig(lr=2e-4),
            prior=_preset_prior(),
        ),
    }
    if name not in variants:
        raise ValueError(f"unknown train config {name!r}; choose one of {sorted(variants)}")
    return variants[name]


def lr_factor(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then cosine decay."""
    warmup = int(optim.warmup_fraction * max_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * cosine


def make_borders(config: TrainConfig, prior: Prior, device: torch.device | str = "cpu") -> Tensor:
    """The K + 1 bucket borders: uniform on [0, 1], or quantiles of prior targets (equal mass)."""
    k = config.model.n_buckets
    if config.borders == "uniform":
        return uniform_borders(k)
    gen = torch.Generator(device=device).manual_seed(config.seed + 7_919)
    ys = [prior.sample(config.batch_size, generator=gen).y.reshape(-1) for _ in range(20)]
    return equal_mass_borders(torch.cat(ys).float().cpu(), k)


class _Steps(IterableDataset):
    """An endless stream of dummy items: the batch itself is sampled in ``training_step``."""

    def __iter__(self):
        while True:
            yield 0


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class PFNModule(L.LightningModule):
    """Lightning wrapper: samples the prior, computes the bar-distribution NLL, logs validation."""

    def __init__(self, config: TrainConfig, *, device: torch.device | str = "cpu") -> None:
        """``device`` is where the prior is sampled for equal-mass borders (if configured)."""
        super().__init__()
        self.config = config
        self.prior = make_prior(**config.prior)
        torch.manual_seed(config.seed)
        self.net = CurveSetTransformer(config.model)
        self.parent: Checkpoint | None = None  # the checkpoint of config.init_from
        if config.init_from is None:
            self.dist = BarDistribution(make_borders(config, self.prior, device))
        else:
            self.parent = load_checkpoint(config.init_from)
            try:  # the same network, or the parent plus the zero-initialised last-value head
                state = upgrade_state_dict(self.parent.state_dict, self.parent.model, config.model)
            except ValueError:
                raise ValueError(
                    f"init_from={config.init_from!r} has model config {self.parent.model}, "
                    f"but the run's model config is {config.model}"
                ) from None
            self.net.load_state_dict(state)
            uniform = uniform_borders(config.model.n_buckets)
            if config.model.last_value_head and not torch.allclose(
                self.parent.borders, uniform, atol=1e-6
            ):
                raise ValueError(
                    f"init_from={config.init_from!r} has non-uniform bucket borders, but the "
                    "run's network has the last-value head, whose bumps assume uniform buckets "
                    "(Surrogate.load would refuse the result): train without the head"
                )
            self.dist = BarDistribution(self.parent.borders)
        self._val: list[dict[float, CurveBatch]] = []  # per batch: context fraction -> batch

    def loss(self, batch: CurveBatch) -> Tensor:
        """Mean negative log-likelihood of the query targets."""
        inp, target = CurveSetInput.from_batch(batch)
        logits = self.net(inp)  # (B, M, K)
        return self.dist.nll(logits.float(), target).mean()

    def _generator(self, step: int) -> torch.Generator:
        seed = (self.config.seed * 1_000_003 + step) * 1_009 + self.global_rank
        return torch.Generator(device=self.device).manual_seed(seed)

    def training_step(self, stored: CurveBatch | Tensor, batch_idx: int) -> Tensor:
        if isinstance(stored, CurveBatch):  # read from config.data
            batch = stored
        else:  # sampled here, on the training device
            batch = self.prior.sample(
                self.config.batch_size, generator=self._generator(self.global_step)
            )
        loss = self.loss(batch)
        self.log("train/nll", loss, prog_bar=True, batch_size=batch.batch_size)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=1)
        return loss

    def setup(self, stage: str) -> None:
        # The fixed validation set: per batch, the same tasks' component and seed at every context
        # fraction (the tasks themselves may differ between fractions; each set is fixed). Built
        # once: fit and the final validate share it.
        if self._val:
            return
        for i in range(self.config.val_batches):
            seed = self.config.seed * 7_919 + 104_729 + i
            probe = self.prior.sample(
                self.config.batch_size, generator=torch.Generator().manual_seed(seed)
            )
            self._val.append(
                {
                    frac: self.prior.sample(
                        self.config.batch_size,
                        generator=torch.Generator().manual_seed(seed),
                        n_context=max(1, round(frac * probe.n_tokens)),
                    )
                    for frac in self.config.val_fractions
                }
            )

    def validation_step(self, index: Tensor, batch_idx: int) -> None:
        for frac, batch in self._val[int(index)].items():
            batch = batch.to(self.device)
            self.log(
                f"val/ll@{frac:g}",
                -self.loss(batch),
                batch_size=batch.batch_size,
                prog_bar=frac == self.config.val_fractions[-1],
            )

    def train_dataloader(self) -> DataLoader:
        if self.config.data is None:
            return DataLoader(_Steps(), batch_size=None)
        store = CurveTaskDataset(self.config.data)
        order = store.batch_indices(
            self.config.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.config.seed),
        )
        return DataLoader(store, batch_sampler=order, collate_fn=collate_tasks)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        return batch.to(device) if isinstance(batch, CurveBatch) else batch

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Indices(self.config.val_batches), batch_size=None)

    def configure_optimizers(self):
        o, steps = self.config.optim, self.config.max_steps
        opt = torch.optim.AdamW(self.net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, o, steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _Export(L.Callback):
    """Writes the product checkpoint (``NAME.pt`` + ``NAME.json``) every ``every`` steps."""

    def __init__(
        self, path: Path, config: TrainConfig, every: int, plan: TimePlan | None = None
    ) -> None:
        self.path, self.config, self.every, self.plan = path, config, every, plan
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: PFNModule, *args) -> None:
        if trainer.global_step % self.every == 0 and trainer.is_global_zero:
            self.export(module, trainer, val_ll=None, wall_time_s=time.perf_counter() - self._start)

    def export(
        self,
        module: PFNModule,
        trainer: L.Trainer,
        *,
        val_ll: dict | None,
        wall_time_s: float,
        stopped_at_deadline: bool = False,
    ) -> Path:
        """Save the network now; returns the ``.pt`` path."""
        steps = int(trainer.global_step)
        devices = trainer.world_size
        summary = {
            "steps": steps,
            "max_steps": self.config.max_steps,
            "tasks_seen": steps * self.config.batch_size * devices,
            "wall_time_s_this_session": round(wall_time_s, 1),
            "hardware": _hardware(module.device),
            "devices": devices,
            "val_ll_by_context_fraction": val_ll,
            # --time-budget: the budget and the measured step cost that set max_steps
            "time_plan": None if self.plan is None else asdict(self.plan),
            "stopped_at_deadline": stopped_at_deadline,  # the time budget ended it early
            # Continued training: the parent's own summary (its steps and tasks come on top).
            "init_from": None if module.parent is None else module.parent.training,
            "train_config": self.config.to_dict(),
            "torch": torch.__version__,
            "lightning": L.__version__,
        }
        weights, _ = save_checkpoint(
            self.path,
            Checkpoint(
                state_dict=module.net.state_dict(),
                model=self.config.model,
                borders=module.dist.borders,
                prior=prior_config_to_dict(make_prior_config(**self.config.prior)),
                training=summary,
            ),
        )
        return weights


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


# Share of a time budget (after the measurement) that the planned steps and validations may take:
# the rest absorbs the noise of the step time's estimate and Lightning's own overhead.
_BUDGET_SHARE = 0.9
# Share of a time budget that measuring the steps may take (at least _MIN_TIMED steps are timed).
_MEASURE_SHARE = 0.05
_MIN_TIMED, _MAX_TIMED = 3, 50


@dataclass(frozen=True)
class StepTiming:
    """What the parts of a training run of a config cost on a device (:func:`time_steps`)."""

    train_step_s: float  # mean seconds per optimiser step: a batch, forward, backward, AdamW
    validation_s: float  # seconds of one validation (the fixed validation set, no gradient)
    checkpoint_s: float  # seconds to write one resumable checkpoint and one export
    setup_s: float  # seconds to build the module (prior, network, parent) and validation set
    steps_timed: int  # optimiser steps the mean is over
    device: str  # where it was measured ("cpu", "cuda")

    def step_s(self, config: TrainConfig) -> float:
        """Seconds per step, validations and checkpoints included (their share of each step)."""
        return (
            self.train_step_s
            + self.validation_s / config.val_every
            + self.checkpoint_s / config.checkpoint_every
        )


@dataclass(frozen=True)
class TimePlan:
    """How a time budget became ``max_steps`` (:func:`plan_steps`; recorded in the card)."""

    budget_s: float  # the whole call's wall-time budget
    measured_s: float  # seconds spent measuring the step cost (part of the budget)
    train_step_s: float  # measured mean seconds per optimiser step
    validation_s: float  # measured seconds per validation
    max_steps: int  # the planned optimiser steps

    def describe(self) -> str:
        """One line for the log: what was measured and what it planned."""
        return (
            f"time budget {self.budget_s:.0f} s: one step took {self.train_step_s:.3g} s and a "
            f"validation {self.validation_s:.3g} s ({self.measured_s:.0f} s to measure), so the "
            f"schedule spans {self.max_steps} steps (resume or repeat the run with --max-steps "
            f"{self.max_steps})"
        )


def _use_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def time_steps(
    config: TrainConfig,
    *,
    accelerator: str = "auto",
    max_seconds: float = 30.0,
    min_steps: int = _MIN_TIMED,
    max_steps: int = _MAX_TIMED,
    warmup: int = 2,
) -> StepTiming:
    """Measure the parts of a training run of ``config`` on the device ``pretrain`` would use
    (bf16 autocast on a GPU, as there), on a throwaway copy of the module.

    Timed: building the module and its fixed validation set; optimiser steps on the batches the
    run would read (sampled from the prior on the device, or read from ``config.data`` and
    moved there) until ``max_seconds`` have passed (at least ``min_steps``, at most
    ``max_steps``; their *mean* is returned, since the prior's tasks differ in size and a run's
    time is a sum); one whole validation; one checkpoint write. The first ``warmup`` steps
    (allocations, kernel selection) are not timed. The batches come from a seed of their own and
    the random state is restored, so the run that follows is not changed by the measurement.
    """
    if not (1 <= min_steps <= max_steps) or warmup < 0:
        raise ValueError(
            f"need 1 <= min_steps <= max_steps and warmup >= 0, got {min_steps}, {max_steps}, "
            f"{warmup}"
        )
    on_gpu = _use_gpu(accelerator)
    device = torch.device("cuda" if on_gpu else "cpu")
    gpus = [torch.cuda.current_device()] if on_gpu else []
    with torch.random.fork_rng(devices=gpus):  # PFNModule seeds torch; the caller's state stays
        start = time.perf_counter()
        module = PFNModule(config, device=device).to(device)
        module.setup("fit")  # samples the fixed validation set (on the CPU, as in a run)
        setup_s = time.perf_counter() - start
        opt = torch.optim.AdamW(module.net.parameters(), lr=config.optim.lr)
        gen = torch.Generator(device=device).manual_seed(config.seed * 7_919 + 12_289)
        stored = None if config.data is None else iter(module.train_dataloader())

        def autocast() -> contextlib.AbstractContextManager:
            if on_gpu:
                return torch.autocast("cuda", dtype=torch.bfloat16)
            return contextlib.nullcontext()

        def timed(step: Callable[[], None]) -> float:
            if on_gpu:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            step()
            if on_gpu:
                torch.cuda.synchronize(device)
            return time.perf_counter() - t0

        def next_batch() -> CurveBatch:
            nonlocal stored
            if stored is None:
                return module.prior.sample(config.batch_size, generator=gen)
            try:
                return next(stored).to(device)
            except StopIteration:  # a small store: read it again
                stored = iter(module.train_dataloader())
                return next(stored).to(device)

        def train_step() -> None:
            batch = next_batch()
            with autocast():
                loss = module.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.net.parameters(), config.optim.grad_clip)
            opt.step()

        def validation() -> None:
            with torch.no_grad(), autocast():
                for batches in module._val:
                    for batch in batches.values():
                        module.loss(batch.to(device))

        def save() -> None:  # what a checkpoint writes: weights and optimiser state, the export
            with tempfile.TemporaryDirectory() as tmp:
                state = {"net": module.net.state_dict(), "opt": opt.state_dict()}
                torch.save(state, f"{tmp}/a.ckpt")
                torch.save(module.net.state_dict(), f"{tmp}/b.pt")

        module.train()
        for _ in range(warmup):
            train_step()
        times: list[float] = []
        begin = time.perf_counter()
        while len(times) < min_steps or (
            len(times) < max_steps and time.perf_counter() - begin < max_seconds
        ):
            times.append(timed(train_step))
        module.eval()
        validation_s = timed(validation)
        checkpoint_s = timed(save)
    return StepTiming(
        train_step_s=sum(times) / len(times),
        validation_s=validation_s,
        checkpoint_s=checkpoint_s,
        setup_s=setup_s,
        steps_timed=len(times),
        device=device.type,
    )


def plan_steps(
    budget_s: float, timing: StepTiming, config: TrainConfig, *, spent_s: float = 0.0
) -> int:
    """The optimiser steps that fit in a budget of ``budget_s`` seconds of which ``spent_s`` are
    spent (measuring, say).

    Counted: every step, a validation every ``val_every`` steps and a checkpoint every
    ``checkpoint_every`` (:meth:`StepTiming.step_s`), and once: building the module and its
    validation set, the final validation and the export; all of it within ``_BUDGET_SHARE``
    (90%) of what is left. Not capped by ``config.max_steps``.

    Raises:
        ValueError: the budget fits no step.
    """
    left = budget_s - spent_s
    usable = _BUDGET_SHARE * left - timing.setup_s - timing.validation_s - timing.checkpoint_s
    steps = math.floor(usable / timing.step_s(config))
    if steps < 1:
        raise ValueError(
            f"a time budget of {budget_s:.1f} s ({max(left, 0.0):.1f} s left after measuring) "
            f"fits no optimiser step here: one step takes ~{timing.train_step_s:.3g} s, a "
            f"validation ~{timing.validation_s:.3g} s and the setup ~{timing.setup_s:.3g} s "
            f"(on {timing.device}, batch of {config.batch_size} tasks)"
        )
    return steps


class _Deadline(L.Callback):
    """Stops training after the step that passes ``deadline`` (a ``time.perf_counter`` value),
    first saving a resumable checkpoint at ``last`` there (the periodic one may be older)."""

    def __init__(self, deadline: float, last: Path) -> None:
        self.deadline, self.last = deadline, last
        self.stopped = False

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if time.perf_counter() >= self.deadline and trainer.global_step < trainer.max_steps:
            trainer.save_checkpoint(self.last)
            trainer.should_stop = True
            self.stopped = True


@dataclass(frozen=True)
class PretrainResult:
    """Where ``pretrain`` put its outputs and what it measured."""

    checkpoint: Path  # the exported NAME.pt (NAME.json beside it)
    steps: int  # optimiser steps done in total (including earlier, resumed sessions)
    wall_time_s: float  # seconds spent training in this call (fit, without the final export)
    val_ll: dict[str, float]  # last validation log-likelihood per context fraction
    max_steps: int  # the schedule's length (planned from the time budget, if one was given)
    time_plan: TimePlan | None = None  # how the time budget set max_steps
    stopped_at_deadline: bool = False  # the budget ran out before max_steps (or stop_at)


def pretrain(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    devices: int = 1,
    accelerator: str = "auto",
    resume: bool = True,
    progress: bool = True,
    stop_at: int | None = None,
    time_budget_s: float | None = None,
) -> PretrainResult:
    """Train a PFN on ``config.prior`` and export it to ``out_dir/model.{pt,json}``.

    Resumable: Lightning checkpoints go to ``out_dir/lightning/`` every ``checkpoint_every`` steps,
    and with ``resume`` a new call continues from ``last.ckpt`` (these internal checkpoints hold the
    optimiser state; only the exported ``model.pt`` is the product format). The export is also
    refreshed at every Lightning checkpoint, so a killed run leaves a usable model behind.

    ``stop_at`` ends this call after that many steps in total while the learning-rate schedule
    still spans ``config.max_steps``: long CPU trainings run in chunks (one per session) that add up
    to exactly the run a single call would have made. ``devices > 1`` trains data-parallel with
    DDP; bf16 autocast is used on GPUs.

    ``time_budget_s`` fits the run to a wall time, counted from this call's start: the call
    first measures the steps (:func:`time_steps`, up to 5% of the budget), then sets
    ``max_steps`` to the steps that fit in what is left (:func:`plan_steps`, at most
    ``config.max_steps``), so the learning-rate schedule ends inside the budget. Should the steps
    turn out slower than measured, training stops in time for the validations, checkpoint and
    export that follow a stop, with a resumable checkpoint at the stop, and the model is exported
    as it is (``PretrainResult.stopped_at_deadline``, also in the card). The plan is recorded in
    ``OUT/config.json`` and the card; a later call resumes or repeats the run with ``max_steps``
    set to it (exactly on a CPU; on a GPU up to its non-deterministic kernels). Needs a fresh
    run (no ``last.ckpt`` to resume, or ``resume=False``), one device and no ``stop_at``.
    """
    if config.data is not None:
        info = read_store_info(config.data)
        if info.max_hps != config.model.max_hps:
            raise ValueError(
                f"data {config.data} has max_hps={info.max_hps} but the model expects "
                f"max_hps={config.model.max_hps}"
            )
    if stop_at is not None and not 1 <= stop_at <= config.max_steps:
        raise ValueError(f"stop_at must lie in [1, max_steps={config.max_steps}], got {stop_at}")
    out = Path(out_dir)
    ckpt_dir = out / "lightning"
    last = ckpt_dir / "last.ckpt"
    plan, deadline = None, None
    if time_budget_s is not None:
        call_start = time.perf_counter()
        _check_time_budget(time_budget_s, devices=devices, stop_at=stop_at)
        if resume and last.is_file():
            raise ValueError(
                f"{out} holds a run to resume ({last}): a time budget plans a fresh one. Resume "
                "it with its max_steps (OUT/config.json), or start afresh (resume=False, "
                "--no-resume)"
            )
        if progress:
            print("timing a few training steps to plan the run within its budget ...", flush=True)
        timing = time_steps(
            config, accelerator=accelerator, max_seconds=_MEASURE_SHARE * time_budget_s
        )
        measured = time.perf_counter() - call_start
        steps = plan_steps(time_budget_s, timing, config, spent_s=measured)
        config = replace(config, max_steps=min(config.max_steps, steps))
        plan = TimePlan(
            budget_s=float(time_budget_s),
            measured_s=measured,
            train_step_s=timing.train_step_s,
            validation_s=timing.validation_s,
            max_steps=config.max_steps,
        )
        # The step loop ends in time for what follows a stop: a validation inside fit, the
        # final one, a checkpoint and the export.
        deadline = call_start + time_budget_s - 2.0 * (timing.validation_s + timing.checkpoint_s)
        if progress:
            print(plan.describe(), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    on_gpu = _use_gpu(accelerator)
    module = PFNModule(config, device="cuda" if on_gpu else "cpu")
    checkpointing = ModelCheckpoint(
        dirpath=ckpt_dir,
        save_last=True,
        every_n_train_steps=config.checkpoint_every,
        save_top_k=0,
    )
    exporter = _Export(out / "model", config, every=config.checkpoint_every, plan=plan)
    stopper = None if deadline is None else _Deadline(deadline, last)
    trainer = L.Trainer(
        max_steps=stop_at or config.max_steps,
        accelerator=accelerator,
        devices=devices,
        # Some weights get no gradient in a step (the last layer's token update, which nothing
        # reads; the last-value head in a batch without observed queries): DDP must look for
        # them, or it stops at the next step waiting for their gradients.
        strategy="ddp_find_unused_parameters_true" if devices > 1 else "auto",
        precision="bf16-mixed" if on_gpu else "32-true",
        gradient_clip_val=config.optim.grad_clip,
        val_check_interval=config.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=CSVLogger(out, name="logs"),
        callbacks=[checkpointing, exporter] + ([stopper] if stopper else []),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    start = time.perf_counter()
    trainer.fit(module, ckpt_path=str(last) if resume and last.is_file() else None)
    wall = time.perf_counter() - start
    trainer.validate(module, verbose=False)
    val_ll = {
        k.split("@", 1)[1]: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith("val/ll@")
    }
    stopped = stopper is not None and stopper.stopped
    if trainer.is_global_zero:  # one writer (every rank of a multi-GPU run gets here)
        path = exporter.export(
            module, trainer, val_ll=val_ll, wall_time_s=wall, stopped_at_deadline=stopped
        )
    else:
        path = checkpoint_paths(exporter.path)[0]
    trainer.strategy.barrier("pretrain.export")
    return PretrainResult(
        checkpoint=path,
        steps=int(trainer.global_step),
        wall_time_s=wall,
        val_ll=val_ll,
        max_steps=config.max_steps,
        time_plan=plan,
        stopped_at_deadline=stopped,
    )


def _check_time_budget(budget_s: float, *, devices: int, stop_at: int | None) -> None:
    number = isinstance(budget_s, int | float) and not isinstance(budget_s, bool)
    if not (number and math.isfinite(budget_s) and budget_s > 0):
        raise ValueError(f"time_budget_s must be a positive number of seconds, got {budget_s!r}")
    if devices != 1:
        raise ValueError(
            "a time budget plans on one device (each DDP process would plan its own number of "
            "steps): plan with devices=1, then pass its max_steps"
        )
    if stop_at is not None:
        raise ValueError("stop_at and a time budget exclude each other: the budget sets the end")
