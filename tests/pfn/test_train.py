import json
import math
import time
from dataclasses import replace

import pytest
import torch

from pfn.bar_distribution import BarDistribution, uniform_borders
from pfn.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from pfn.model import CurveSetInput, CurveSetTransformer, ModelConfig
from pfn.train import (
    TRAIN_CONFIGS,
    OptimConfig,
    PFNModule,
    StepTiming,
    TrainConfig,
    lr_factor,
    plan_steps,
    pretrain,
    time_steps,
    train_config,
)
from priors.batch import CurveBatch
from priors.registry import make_prior
from priors.store import write_tasks


def test_lr_schedule_by_hand():
    o = OptimConfig(lr=1.0, warmup_fraction=0.1, min_lr_ratio=0.0)
    assert lr_factor(0, o, 100) == pytest.approx(0.1)
    assert lr_factor(9, o, 100) == pytest.approx(1.0)
    assert lr_factor(10, o, 100) == pytest.approx(1.0)  # cosine starts at its peak
    assert lr_factor(55, o, 100) == pytest.approx(0.5)  # half-way through the decay
    assert lr_factor(100, o, 100) == pytest.approx(0.0, abs=1e-12)
    o2 = OptimConfig(lr=1.0, warmup_fraction=0.0, min_lr_ratio=0.2)
    assert lr_factor(50, o2, 100) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 2)))


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_train_config_round_trip(name):
    cfg = train_config(name)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("name", ["cpu", "small", "base"])
def test_presets_train_on_the_prior_with_stalled_runs(name):
    prior = make_prior(**train_config(name).prior)
    ftpfn = [p for p in prior.priors if hasattr(p.config, "stall_task_prob")]
    assert len(ftpfn) == 1 and ftpfn[0].config.stall_task_prob == 0.5
    assert train_config("tiny").prior == {"name": "ftpfn", "seq_len": 200, "n_configs": 50}


def test_bad_configs_name_the_field():
    with pytest.raises(ValueError, match="unknown train config"):
        train_config("huge")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="borders"):
        TrainConfig(borders="log")
    with pytest.raises(ValueError, match="last_value_head"):
        TrainConfig(borders="equal-mass")
    with pytest.raises(ValueError, match="lr"):
        OptimConfig(lr=0.0)


def test_tiny_model_overfits_one_batch():
    cfg = train_config("tiny")
    prior = make_prior(**cfg.prior)
    batch = prior.sample(4, generator=torch.Generator().manual_seed(3))
    inp, target = CurveSetInput.from_batch(batch)
    torch.manual_seed(0)
    net = CurveSetTransformer(cfg.model)
    dist = BarDistribution(uniform_borders(cfg.model.n_buckets))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = dist.nll(net(inp), target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Memorising one batch: the NLL must fall far below its start (uniform density = 0 nats).
    assert losses[-1] < losses[0] - 1.5, (losses[0], losses[-1])


def test_pretrain_exports_and_resumes(tmp_path, monkeypatch):
    cfg = replace(train_config("tiny"), max_steps=12, val_every=6, checkpoint_every=6)
    first = pretrain(cfg, tmp_path, accelerator="cpu", progress=False)
    assert first.steps == 12
    assert (tmp_path / "lightning" / "last.ckpt").is_file()
    ckpt = load_checkpoint(first.checkpoint)
    assert ckpt.model == cfg.model and ckpt.training["steps"] == 12
    assert set(first.val_ll) == {f"{f:g}" for f in cfg.val_fractions}
    # A second call continues from last.ckpt instead of starting over.
    steps = _count_training_steps(monkeypatch)
    more = pretrain(replace(cfg, max_steps=18), tmp_path, accelerator="cpu", progress=False)
    assert len(steps) == 6
    assert more.steps == 18
    assert load_checkpoint(more.checkpoint).training["steps"] == 18


@pytest.mark.parametrize("rank_zero", [True, False])
def test_only_rank_zero_exports_and_every_rank_waits_for_it(tmp_path, monkeypatch, rank_zero):
    """In a multi-GPU run every rank reaches the final export: rank 0 writes the checkpoint,
    the others write nothing, and all meet at a barrier after it (so none returns a path to a
    file not yet written). One process plays either rank."""
    import lightning as L

    from pfn import train as train_module

    events: list[str] = []
    export = train_module._Export.export

    def spy_export(self, *args, **kwargs):
        events.append("export")
        return export(self, *args, **kwargs)

    def spy_barrier(self, name=None):
        events.append(f"barrier {name}")

    monkeypatch.setattr(train_module._Export, "export", spy_export)
    monkeypatch.setattr(L.pytorch.strategies.SingleDeviceStrategy, "barrier", spy_barrier)
    monkeypatch.setattr(L.Trainer, "is_global_zero", property(lambda self: rank_zero))
    cfg = replace(train_config("tiny"), max_steps=2, val_every=2, checkpoint_every=100)
    result = pretrain(cfg, tmp_path, accelerator="cpu", progress=False)
    assert result.checkpoint == tmp_path / "model.pt"
    assert events[-1] == "barrier pretrain.export"
    if rank_zero:
        assert events[-2] == "export" and load_checkpoint(result.checkpoint).training["steps"] == 2
    else:
        assert "export" not in events
        assert not (tmp_path / "model.pt").exists() and not (tmp_path / "model.json").exists()


def test_multi_device_training_lets_ddp_find_unused_parameters(tmp_path, monkeypatch):
    """A training step leaves some weights without a gradient (the last layer's token update,
    which nothing reads), so DDP must be told to look for unused parameters."""
    import lightning as L

    cfg = train_config("tiny")
    net = CurveSetTransformer(cfg.model)
    batch = make_prior(**cfg.prior).sample(2, generator=torch.Generator().manual_seed(0))
    inp, target = CurveSetInput.from_batch(batch)
    dist = BarDistribution(uniform_borders(cfg.model.n_buckets))
    dist.nll(net(inp), target).mean().backward()
    unused = [name for name, p in net.named_parameters() if p.grad is None]
    assert unused and all(name.startswith(f"layers.{len(net.layers) - 1}.") for name in unused)

    class Stop(Exception):
        pass

    seen = {}

    def trainer(self, *args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(L.Trainer, "__init__", trainer)
    with pytest.raises(Stop):
        pretrain(cfg, tmp_path, devices=2, accelerator="cpu", progress=False)
    assert seen["strategy"] == "ddp_find_unused_parameters_true" and seen["devices"] == 2


def _count_training_steps(monkeypatch) -> list:
    """Record the batch every training step of PFNModule receives (a CurveBatch when read from a
    store, else the sampling placeholder)."""
    seen: list = []
    step = PFNModule.training_step

    def spy(self, stored, batch_idx):
        seen.append(stored)
        return step(self, stored, batch_idx)

    monkeypatch.setattr(PFNModule, "training_step", spy)
    return seen


def test_chunked_training_equals_one_run(tmp_path, monkeypatch):
    # Two chunks (stop_at, then resume) must give exactly the weights of one uninterrupted run.
    cfg = replace(train_config("tiny"), max_steps=10, val_every=5, checkpoint_every=5)
    whole = pretrain(cfg, tmp_path / "whole", accelerator="cpu", progress=False)
    pretrain(cfg, tmp_path / "chunks", accelerator="cpu", progress=False, stop_at=5)
    assert load_checkpoint(tmp_path / "chunks" / "model").training["steps"] == 5
    steps = _count_training_steps(monkeypatch)
    chunked = pretrain(cfg, tmp_path / "chunks", accelerator="cpu", progress=False)
    assert len(steps) == 5  # resumed at step 5: seeded, a fresh start would end alike
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(chunked.checkpoint)
    assert b.training["steps"] == 10
    for name, tensor in a.state_dict.items():
        torch.testing.assert_close(b.state_dict[name], tensor, msg=name)
    with pytest.raises(ValueError, match="stop_at"):
        pretrain(cfg, tmp_path / "x", accelerator="cpu", progress=False, stop_at=11)


@pytest.mark.slow
def test_held_out_loss_falls_during_cpu_training(tmp_path):
    cfg = replace(train_config("tiny"), max_steps=400, val_every=400, checkpoint_every=400)
    untrained = pretrain(
        replace(cfg, max_steps=1), tmp_path / "a", accelerator="cpu", progress=False
    )
    trained = pretrain(cfg, tmp_path / "b", accelerator="cpu", progress=False)
    # Measured: +0.20 nats at 10% context (-0.06 -> 0.14); an untrained network stays near 0.
    for frac, ll in trained.val_ll.items():
        assert ll > untrained.val_ll[frac] + 0.1, (frac, ll, untrained.val_ll[frac])


def test_pretrain_from_a_prior_store(tmp_path, monkeypatch):
    cfg = replace(train_config("tiny"), max_steps=6, val_every=3, checkpoint_every=3)
    store = tmp_path / "prior.h5"
    write_tasks(store, make_prior(**cfg.prior), 12, seed=1, batch_size=4, progress=False)
    batches = _count_training_steps(monkeypatch)
    result = pretrain(
        replace(cfg, data=str(store)), tmp_path / "run", accelerator="cpu", progress=False
    )
    assert result.steps == 6 and all(math.isfinite(v) for v in result.val_ll.values())
    # every step trained on stored tasks, none sampled from the prior
    assert len(batches) == 6 and all(isinstance(b, CurveBatch) for b in batches)
    wide = replace(cfg, data=str(store), model=replace(cfg.model, max_hps=8))
    with pytest.raises(ValueError, match="max_hps"):
        pretrain(wide, tmp_path / "bad", accelerator="cpu", progress=False)


def test_init_from_adds_the_last_value_head_only_on_uniform_borders(tmp_path):
    small = dict(d_model=16, n_heads=2, n_layers=1, d_ff=16, n_query_layers=1, n_buckets=10)
    parent = ModelConfig(**small, last_value_head=False)
    child = ModelConfig(**small, last_value_head=True)
    prior = {"name": "ftpfn", "seq_len": 50, "n_configs": 10}
    skewed = torch.tensor([0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.99, 1.0])
    for name, borders in (("uniform", uniform_borders(10)), ("skewed", skewed)):
        net = CurveSetTransformer(parent)
        save_checkpoint(tmp_path / name, Checkpoint(net.state_dict(), parent, borders))
    grown = PFNModule(TrainConfig(model=child, init_from=str(tmp_path / "uniform"), prior=prior))
    torch.testing.assert_close(grown.dist.borders, uniform_borders(10))
    with pytest.raises(ValueError, match="non-uniform bucket borders"):
        PFNModule(TrainConfig(model=child, init_from=str(tmp_path / "skewed"), prior=prior))
    # without the head, any borders continue
    same = PFNModule(TrainConfig(model=parent, init_from=str(tmp_path / "skewed"), prior=prior))
    torch.testing.assert_close(same.dist.borders, skewed)


def _timing(step_s: float = 0.1, validation_s: float = 0.4) -> StepTiming:
    return StepTiming(
        train_step_s=step_s, validation_s=validation_s, checkpoint_s=0.2, setup_s=0.5,
        steps_timed=5, device="cpu",
    )  # fmt: skip


def test_plan_steps_by_hand():
    cfg = replace(train_config("tiny"), val_every=10, checkpoint_every=40)
    t = _timing()
    assert t.step_s(cfg) == pytest.approx(0.1 + 0.4 / 10 + 0.2 / 40)  # 0.145 s
    # 90% of 100 s, less the setup 0.5, the final validation 0.4 and an export 0.2: 88.9 s
    assert plan_steps(100.0, t, cfg) == 613  # 88.9 / 0.145 = 613.1
    # measuring spent 10 s: 90% of 90 s less 1.1 s = 79.9 s
    assert plan_steps(100.0, t, cfg, spent_s=10.0) == 551  # 79.9 / 0.145 = 551.03
    assert plan_steps(1000.0, t, cfg) > cfg.max_steps  # not capped here: pretrain caps
    with pytest.raises(ValueError, match=r"0\.0 s left after measuring\) fits no"):
        plan_steps(10.0, t, cfg, spent_s=12.0)
    with pytest.raises(ValueError, match="fits no optimiser step"):
        plan_steps(1.2, t, cfg)  # 90% of 1.2 s < 1.1 s
    assert plan_steps(1.5, t, cfg) == 1  # 0.25 s: one step


def test_time_steps_measures_without_touching_the_random_state():
    cfg = train_config("tiny")
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    t = time_steps(cfg, accelerator="cpu", max_seconds=0.0, min_steps=2, warmup=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert t.device == "cpu" and t.steps_timed == 2  # min_steps, the time box being empty
    assert all(x > 0 for x in (t.train_step_s, t.validation_s, t.checkpoint_s, t.setup_s))
    capped = time_steps(cfg, accelerator="cpu", max_seconds=60.0, max_steps=4, warmup=0)
    assert capped.steps_timed == 4
    with pytest.raises(ValueError, match="min_steps"):
        time_steps(cfg, accelerator="cpu", min_steps=0)


def test_time_steps_reads_a_stored_prior_like_the_run(tmp_path, monkeypatch):
    cfg = replace(train_config("tiny"), data=str(tmp_path / "prior.h5"))
    write_tasks(cfg.data, make_prior(**cfg.prior), 8, seed=1, batch_size=4, progress=False)
    loaders = []
    real = PFNModule.train_dataloader

    def spy(self):
        loaders.append(1)
        return real(self)

    monkeypatch.setattr(PFNModule, "train_dataloader", spy)
    t = time_steps(cfg, accelerator="cpu", max_seconds=0.0, min_steps=4, warmup=1)
    assert t.steps_timed == 4
    assert len(loaders) == 3  # 2 batches per pass over the store: read again twice


def test_the_validation_set_is_sampled_once(tmp_path):
    module = PFNModule(train_config("tiny"))
    module.setup("fit")
    first = [dict(batches) for batches in module._val]
    module.setup("validate")
    assert len(module._val) == module.config.val_batches
    assert all(a[f] is b[f] for a, b in zip(first, module._val, strict=True) for f in a)


def test_a_time_budget_plans_the_schedule_and_the_run_is_repeatable(tmp_path, monkeypatch):
    import pfn.train as train

    cfg = replace(train_config("tiny"), max_steps=1000, val_every=5, checkpoint_every=5)
    calls = []
    fake = _timing(step_s=1.0, validation_s=0.08)

    def measured(config, **kw):  # the real measurement runs; its figures are replaced
        calls.append(time_steps(config, **{**kw, "min_steps": 1, "warmup": 0}))
        return fake

    monkeypatch.setattr(train, "time_steps", measured)
    planned = pretrain(cfg, tmp_path / "a", accelerator="cpu", progress=False, time_budget_s=20)
    assert len(calls) == 1
    plan = planned.time_plan
    # 90% of (20 s less the measurement) less 0.5 + 0.08 + 0.2, at 1.0 + 0.08/5 + 0.2/5 s a step
    assert plan.max_steps == plan_steps(20, fake, cfg, spent_s=plan.measured_s)
    assert 10 <= plan.max_steps <= 16  # 16 with no time spent measuring
    n = plan.max_steps
    assert planned.max_steps == planned.steps == n and not planned.stopped_at_deadline
    assert plan.budget_s == 20.0 and plan.train_step_s == 1.0
    assert json.loads((tmp_path / "a" / "config.json").read_text())["max_steps"] == n
    card = load_checkpoint(planned.checkpoint).training
    assert card["max_steps"] == n and card["time_plan"]["max_steps"] == n
    assert card["stopped_at_deadline"] is False
    # the same run without a budget: the measurement changed nothing
    plain = pretrain(replace(cfg, max_steps=n), tmp_path / "b", accelerator="cpu", progress=False)
    a, b = load_checkpoint(planned.checkpoint), load_checkpoint(plain.checkpoint)
    for name, tensor in a.state_dict.items():
        torch.testing.assert_close(b.state_dict[name], tensor, msg=name)
    # config.max_steps caps the plan
    capped = replace(cfg, max_steps=7)
    short = pretrain(capped, tmp_path / "c", accelerator="cpu", progress=False, time_budget_s=20)
    assert short.max_steps == short.steps == short.time_plan.max_steps == 7


def test_a_run_slower_than_measured_stops_at_the_budget(tmp_path, monkeypatch):
    import pfn.train as train

    monkeypatch.setattr(train, "time_steps", lambda config, **kw: _timing(step_s=1e-6))
    cfg = replace(train_config("tiny"), max_steps=2000, val_every=10**6, checkpoint_every=10**6)
    start = time.perf_counter()
    result = pretrain(cfg, tmp_path, accelerator="cpu", progress=False, time_budget_s=4)
    took = time.perf_counter() - start
    assert result.stopped_at_deadline
    assert 1 <= result.steps < result.max_steps == 2000
    # stopped 2 x (0.4 + 0.2) s before the budget, for what follows a stop: within the budget
    # (2000 steps would take ~30 s), with a second's slack for a loaded machine
    assert took < 4 + 1.0
    ckpt = load_checkpoint(result.checkpoint)  # exported as it was when stopped
    assert ckpt.training["steps"] == result.steps and ckpt.training["stopped_at_deadline"]
    # a resumable checkpoint at the stop, not at the last periodic one (there was none)
    state = torch.load(tmp_path / "lightning" / "last.ckpt", weights_only=False)
    assert state["global_step"] == result.steps


def test_the_deadline_saves_a_resumable_checkpoint_where_it_stops(tmp_path):
    # Lightning's own last.ckpt may be a periodic one, older than the stop: the deadline saves
    from types import SimpleNamespace

    from pfn.train import _Deadline

    saved = []
    trainer = SimpleNamespace(global_step=7, max_steps=10, should_stop=False)
    trainer.save_checkpoint = saved.append
    _Deadline(time.perf_counter() + 60, tmp_path / "last.ckpt").on_train_batch_end(trainer)
    assert not saved and not trainer.should_stop  # before the deadline: nothing
    late = _Deadline(time.perf_counter() - 1, tmp_path / "last.ckpt")
    late.on_train_batch_end(trainer)
    assert saved == [tmp_path / "last.ckpt"] and trainer.should_stop and late.stopped
    trainer.global_step, trainer.should_stop = 10, False  # the last step: nothing left to stop
    done = _Deadline(time.perf_counter() - 1, tmp_path / "last.ckpt")
    done.on_train_batch_end(trainer)
    assert len(saved) == 1 and not trainer.should_stop and not done.stopped


def test_a_time_budget_refuses_what_it_cannot_plan(tmp_path, monkeypatch):
    import pfn.train as train

    monkeypatch.setattr(train, "time_steps", lambda config, **kw: _timing())
    cfg = replace(train_config("tiny"), max_steps=4, val_every=2, checkpoint_every=2)
    for bad in (0, -1.0, math.nan, math.inf, True, "60"):
        with pytest.raises(ValueError, match="positive number of seconds"):
            pretrain(cfg, tmp_path, accelerator="cpu", progress=False, time_budget_s=bad)
    for devices in (2, -1, 0):
        with pytest.raises(ValueError, match="one device"):
            pretrain(cfg, tmp_path, accelerator="cpu", devices=devices, time_budget_s=60)
    with pytest.raises(ValueError, match="stop_at"):
        pretrain(cfg, tmp_path, accelerator="cpu", stop_at=2, time_budget_s=60)
    with pytest.raises(ValueError, match="fits no optimiser step"):
        pretrain(cfg, tmp_path, accelerator="cpu", progress=False, time_budget_s=1)
    pretrain(cfg, tmp_path, accelerator="cpu", progress=False)  # leaves last.ckpt
    with pytest.raises(ValueError, match="to resume"):
        pretrain(cfg, tmp_path, accelerator="cpu", progress=False, time_budget_s=60)
    fresh = pretrain(
        cfg, tmp_path, accelerator="cpu", progress=False, time_budget_s=60, resume=False
    )
    assert fresh.steps == 4
