"""Tests of priors/store.py: exact round trips, ragged tasks, the documented layout."""

from __future__ import annotations

import json
from dataclasses import fields

import h5py
import numpy as np
import pytest
import torch

from priors.batch import CurveBatch
from priors.lcpfn import LCPFNPrior, LCPFNPriorConfig
from priors.registry import prior_config_to_dict
from priors.store import (
    FORMAT_VERSION,
    CurveTaskDataset,
    collate_tasks,
    read_store_info,
    write_tasks,
)


class RaggedPrior:
    """Batches of varying T and C; curve masks with gaps and trailing padding; varying d."""

    max_hps = 5

    def sample(self, batch_size: int, *, generator: torch.Generator) -> CurveBatch:
        def randint(lo: int, hi: int, shape=()) -> torch.Tensor:
            return torch.randint(lo, hi, shape, generator=generator)

        t_len, c = int(randint(2, 30)), int(randint(1, 9))
        n_real = randint(1, c + 1, (batch_size,))  # (B,)
        curve_mask = torch.arange(c)[None] < n_real[:, None]  # (B, C)
        curve_mask[:, 0] = torch.rand(batch_size, generator=generator) < 0.7  # gaps
        curve_mask[:, 0] |= n_real == 1
        d = randint(0, 6, (batch_size,))
        hp_mask = torch.arange(5)[None] < d[:, None]  # (B, D)
        configs = torch.rand(batch_size, c, 5, generator=generator)
        configs = configs * curve_mask[:, :, None] * hp_mask[:, None, :]
        curve = (torch.rand(batch_size, t_len, generator=generator) * n_real[:, None]).long()
        return CurveBatch(
            configs=configs,
            hp_mask=hp_mask,
            curve_mask=curve_mask,
            curve=curve,
            t=torch.rand(batch_size, t_len, generator=generator),
            y=torch.rand(batch_size, t_len, generator=generator),
            n_context=int(randint(0, t_len + 1)),
        )


def _assert_batches_equal(a: CurveBatch, b: CurveBatch) -> None:
    for f in fields(CurveBatch):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), f.name
        else:
            assert x == y, f.name


def _expected_batches(prior, n_tasks: int, batch_size: int, seed: int) -> list[CurveBatch]:
    gen = torch.Generator().manual_seed(seed)
    sizes = [min(batch_size, n_tasks - s) for s in range(0, n_tasks, batch_size)]
    return [prior.sample(size, generator=gen) for size in sizes]


@pytest.mark.parametrize(
    "prior", [LCPFNPrior(LCPFNPriorConfig(n_steps=20, max_hps=5)), RaggedPrior()]
)
def test_round_trip_is_exact(tmp_path, prior):
    path = tmp_path / "tasks.h5"
    info = write_tasks(path, prior, 23, seed=11, batch_size=5, progress=False)
    assert info.n_tasks == 23 and info.n_groups == 5
    dataset = CurveTaskDataset(path)
    assert len(dataset) == 23
    for g, expected in enumerate(_expected_batches(prior, 23, 5, 11)):
        _assert_batches_equal(dataset.group_batch(g), expected)
    dataset.close()


def test_ragged_tasks_and_layout(tmp_path):
    path = tmp_path / "sub" / "ragged.h5"  # parent folders are created
    write_tasks(path, RaggedPrior(), 12, seed=2, batch_size=4, progress=False)
    batches = _expected_batches(RaggedPrior(), 12, 4, 2)
    assert len({b.n_tokens for b in batches}) > 1  # the file really is ragged
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION
        assert f.attrs["prior_name"] == "RaggedPrior" and f.attrs["prior_config"] == "null"
        assert f.attrs["seed"] == 2 and f.attrs["n_tasks"] == 12 and f.attrs["max_hps"] == 5
        assert f["groups/task_offset"][:].tolist() == [0, 4, 8, 12]
        assert f["groups/n_context"][:].tolist() == [b.n_context for b in batches]
        assert f["groups/n_curves"][:].tolist() == [b.configs.shape[1] for b in batches]
        tokens = np.concatenate([[0], np.repeat([b.n_tokens for b in batches], 4)])
        assert f["tasks/token_offset"][:].tolist() == np.cumsum(tokens).tolist()
        # Curves are stored up to each task's last real curve.
        kept = [int(m.nonzero().max()) + 1 for b in batches for m in b.curve_mask]
        assert np.diff(f["tasks/curve_offset"][:]).tolist() == kept
        assert f["curves/configs"].shape == (sum(kept), 5)
        assert f["tokens/y"].shape == (int(tokens.sum()),)
        assert f["tokens/y"].compression == "gzip" and f["tokens/y"].chunks is not None
        assert f["tasks/hp_mask"].dtype == np.bool_
    dataset = CurveTaskDataset(path)
    task = dataset[5]  # task 1 of group 1
    assert task.group == 1 and task.n_context == batches[1].n_context
    assert task.configs.shape == (kept[5], 5)
    assert torch.equal(task.y, batches[1].y[1])
    assert dataset[-1].group == 2
    with pytest.raises(IndexError):
        dataset[12]


def test_batches_never_mix_groups_and_work_with_a_dataloader(tmp_path):
    path = tmp_path / "tasks.h5"
    write_tasks(path, RaggedPrior(), 14, seed=4, batch_size=6, progress=False)
    dataset = CurveTaskDataset(path)
    index_batches = dataset.batch_indices(
        4, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    assert sorted(i for b in index_batches for i in b) == list(range(14))
    assert all(len({dataset[i].group for i in b}) == 1 and len(b) <= 4 for b in index_batches)
    assert [len(b) for b in dataset.batch_indices()] == [6, 6, 2]
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=index_batches, collate_fn=collate_tasks
    )
    batches = list(loader)
    assert sum(b.batch_size for b in batches) == 14
    # Tasks of different groups cannot share a batch (their n_context or T differ).
    g0, g1 = dataset.group_indices(0), dataset.group_indices(1)
    with pytest.raises(ValueError, match="n_context"):
        collate_tasks([dataset[g0[0]], dataset[g1[0]]])


def test_prior_provenance_and_determinism(tmp_path):
    prior = LCPFNPrior(LCPFNPriorConfig(n_steps=10, max_hps=2))
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for path in (a, b):
        write_tasks(path, prior, 7, seed=9, batch_size=3, progress=False)
    info = read_store_info(a)
    assert info.prior_name == "lcpfn" and info.seed == 9 and info.max_hps == 2
    assert info.prior_config == json.loads(json.dumps(prior_config_to_dict(prior.config)))
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert np.array_equal(fa["tokens/y"][:], fb["tokens/y"][:])


def test_write_validation(tmp_path):
    prior = LCPFNPrior()
    with pytest.raises(ValueError, match="n_tasks"):
        write_tasks(tmp_path / "x.h5", prior, 0, seed=0, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        write_tasks(tmp_path / "x.h5", prior, 3, seed=0, batch_size=-1)
