"""Tests of priors.threaded: determinism, the merged layout, no bias from the split, pickling."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from priors.base import Prior
from priors.batch import CurveBatch
from priors.ftpfn import FTPFNPrior, FTPFNPriorConfig
from priors.lcpfn import LCPFNPrior, LCPFNPriorConfig
from priors.registry import make_prior
from priors.threaded import ThreadedPrior, draw_n_context, merge_batches, split_sizes

# Small FT-PFN tasks (fast) that touch a varying number of their configurations: parts differ in C.
SMALL = {"seq_len": 200, "n_configs": 300, "max_hps": 6, "max_task_hps": 4}
FIELDS = ("configs", "hp_mask", "curve_mask", "curve", "t", "y")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ftpfn() -> FTPFNPrior:
    return FTPFNPrior(FTPFNPriorConfig(**SMALL))


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Torch intra-op threads set to ``n`` (the FT-PFN prior's ``y`` differs in the last bits
    between thread counts; the threaded prior's parts run with one thread)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _assert_equal(a: CurveBatch, b: CurveBatch) -> None:
    assert a.n_context == b.n_context
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name


def _assert_parts(prior: ThreadedPrior, batch_size: int, seed: int, **kw) -> CurveBatch:
    """The batch of ``seed`` is its plan's parts, each the component's batch, padded in C."""
    batch = prior.sample(batch_size, generator=_gen(seed), **kw)
    component, n_context, sizes, seeds = prior.plan(batch_size, generator=_gen(seed), **kw)
    assert sum(sizes) == batch_size == batch.batch_size and batch.n_context == n_context
    start = 0
    for size, part_seed in zip(sizes, seeds, strict=True):
        with _threads(1):
            part = component.sample(size, generator=_gen(part_seed), n_context=n_context)
        rows = slice(start, start + size)
        c = part.configs.shape[1]
        assert torch.equal(batch.configs[rows, :c], part.configs)
        assert torch.equal(batch.curve_mask[rows, :c], part.curve_mask)
        assert (batch.configs[rows, c:] == 0).all() and not batch.curve_mask[rows, c:].any()
        for name in ("hp_mask", "curve", "t", "y"):
            assert torch.equal(getattr(batch, name)[rows], getattr(part, name)), name
        start += size
    return batch


def test_same_seed_gives_the_same_batch():
    prior = ThreadedPrior(_ftpfn())
    assert isinstance(prior, Prior) and prior.max_hps == SMALL["max_hps"]
    first = prior.sample(9, generator=_gen(0))
    _assert_equal(first, prior.sample(9, generator=_gen(0)))
    with ThreadedPrior(_ftpfn()) as fresh:  # another pool, other thread timing
        _assert_equal(first, fresh.sample(9, generator=_gen(0)))
    assert not torch.equal(first.y, prior.sample(9, generator=_gen(1)).y)
    for n in (1, 2):  # the parts run with one intra-op thread whatever the process has
        with _threads(n):
            _assert_equal(first, prior.sample(9, generator=_gen(0)))
    # Consecutive batches from one generator differ, and repeat with the generator.
    g1, g2 = _gen(5), _gen(5)
    a, b = prior.sample(4, generator=g1), prior.sample(4, generator=g1)
    assert not torch.equal(a.t, b.t)
    _assert_equal(a, prior.sample(4, generator=g2))
    _assert_equal(b, prior.sample(4, generator=g2))
    prior.close()


def test_batch_is_the_wrapped_priors_parts_padded_in_c():
    prior = ThreadedPrior(_ftpfn(), workers=3)
    batch = _assert_parts(prior, 10, seed=2)
    _, _, sizes, seeds = prior.plan(10, generator=_gen(2))
    assert sizes == [4, 3, 3]
    n_curves = {
        prior.prior.sample(s, generator=_gen(seed)).configs.shape[1]
        for s, seed in zip(sizes, seeds, strict=True)
    }
    assert len(n_curves) > 1  # the padding is exercised
    assert batch.configs.shape == (10, max(n_curves), SMALL["max_hps"])
    # A valid batch: every token's curve is a real curve of its task.
    assert batch.curve_mask.gather(1, batch.curve).all()
    assert (batch.configs[~batch.curve_mask] == 0).all()
    prior.close()


def test_n_context_is_drawn_as_the_prior_draws_it_or_given():
    lc = LCPFNPrior(LCPFNPriorConfig(n_steps=20, max_hps=6))
    for seed in range(5):  # LC-PFN draws it last: the same draw after the same curves
        expected = lc.sample(3, generator=_gen(seed)).n_context
        g = _gen(seed)
        lc.sample(3, generator=g, n_context=1)
        assert draw_n_context(lc, generator=g) == expected
    ft = FTPFNPrior(FTPFNPriorConfig(**{**SMALL, "seq_len": 3}))
    g = _gen(0)
    assert {draw_n_context(ft, generator=g) for _ in range(200)} == {0, 1, 2}
    # One n_context per batch, from the generator; an override is respected.
    prior = ThreadedPrior(_ftpfn())
    drawn = prior.sample(6, generator=_gen(3)).n_context
    assert drawn == prior.plan(6, generator=_gen(3))[1]
    batch = _assert_parts(prior, 6, seed=3, n_context=17)
    assert batch.n_context == 17
    with pytest.raises(ValueError, match="n_context"):
        prior.sample(6, generator=_gen(3), n_context=SMALL["seq_len"] + 1)
    prior.close()


def test_mixture_batches_come_whole_from_one_component():
    ftpfn = {k: v for k, v in SMALL.items() if k != "max_hps"}  # max_hps goes to both
    mix = make_prior("mixture", ftpfn=ftpfn, max_hps=6, ftpfn_weight=1.0, lcpfn_weight=1.0)
    prior = ThreadedPrior(mix)
    lengths = set()
    for seed in range(8):
        batch = _assert_parts(prior, 5, seed=seed)
        component = prior.component(generator=_gen(seed))
        assert component is mix.priors[mix.choose(generator=_gen(seed))]
        lengths.add(batch.n_tokens)
        _assert_equal(batch, prior.sample(5, generator=_gen(seed)))
    assert lengths == {SMALL["seq_len"], 100}  # both components were drawn
    prior.close()


def test_fewer_tasks_than_workers_and_one_worker():
    prior = ThreadedPrior(_ftpfn(), workers=4)
    assert split_sizes(2, 4) == [1, 1] and split_sizes(25, 2) == [13, 12]
    assert prior.plan(2, generator=_gen(0))[2] == [1, 1]
    assert prior.sample(2, generator=_gen(0)).batch_size == 2
    _assert_parts(prior, 1, seed=4)
    _assert_parts(ThreadedPrior(_ftpfn(), workers=1), 3, seed=4)
    prior.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": -1}, "workers"),
        ({"workers": 1.5}, "workers"),
        ({"intra_op_threads": 0}, "intra_op_threads"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ThreadedPrior(_ftpfn(), **kwargs)


def test_invalid_batch_size_and_unsupported_prior():
    with pytest.raises(ValueError, match="batch_size"):
        ThreadedPrior(_ftpfn()).sample(0, generator=_gen(0))

    class Opaque:
        max_hps = 4

        def sample(self, batch_size, *, generator, n_context=None):
            raise NotImplementedError

    with pytest.raises(TypeError, match="draw_n_context"):
        ThreadedPrior(Opaque())


def test_thread_setting_restored_and_modes_passed_to_the_workers():
    before = torch.get_num_threads()
    prior = ThreadedPrior(_ftpfn(), intra_op_threads=1)
    prior.sample(4, generator=_gen(0))
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n_context"):
        prior.sample(4, generator=_gen(0), n_context=-1)
    assert torch.get_num_threads() == before
    with torch.inference_mode():
        assert prior.sample(4, generator=_gen(0)).y.is_inference()
    assert not prior.sample(4, generator=_gen(0)).y.is_inference()
    prior.close()


def test_pickled_and_copied_priors_sample_the_same_batches():
    prior = ThreadedPrior(_ftpfn())
    expected = prior.sample(5, generator=_gen(7))  # the pool exists now
    for other in (pickle.loads(pickle.dumps(prior)), copy.deepcopy(prior)):
        assert other._executor is None and other.workers == prior.workers
        _assert_equal(expected, other.sample(5, generator=_gen(7)))
        other.close()
    prior.close()
    _assert_equal(expected, prior.sample(5, generator=_gen(7)))  # usable after close
    prior.close()


def test_merge_batches_keeps_dtypes_and_checks_parts():
    ft = _ftpfn()
    a, b = (
        ft.sample(2, generator=_gen(0), n_context=5),
        ft.sample(3, generator=_gen(1), n_context=5),
    )
    merged = merge_batches([a, b])
    assert merged.batch_size == 5 and merged.n_context == 5
    for name in FIELDS:
        assert getattr(merged, name).dtype == getattr(a, name).dtype, name
    assert merge_batches([a]) is a
    with pytest.raises(ValueError, match="n_context"):
        merge_batches([a, ft.sample(2, generator=_gen(0), n_context=6)])
    with pytest.raises(ValueError, match="at least one"):
        merge_batches([])
