"""An HDF5 store of sampled tasks: sample a prior once, train from the file many times.

Tasks are written in the batches the prior produced them in ("groups"), because a ``CurveBatch``
has one context size for all its tasks: tasks of one group share ``n_context`` and ``T``, so any
subset of a group collates into a valid batch, while tasks of different groups may not (a mixture's
groups differ in ``T``, ``C`` and ``n_context``). ``CurveTaskDataset`` yields one task per item;
``collate_tasks`` pads tasks of one group into a ``CurveBatch``, and
``CurveTaskDataset.batch_indices`` lists index batches that never cross a group (pass it to a
``DataLoader`` as ``batch_sampler`` with ``collate_fn=collate_tasks``).

Layout (format_version 1). Sizes: ``n_tasks`` tasks in ``n_groups`` groups, ``D`` hyperparameter
slots (``max_hps``, one value per file), task ``i`` has ``T_i`` tokens and ``C_i`` stored curves,
``N = sum T_i`` tokens and ``K = sum C_i`` curves in all. Every dataset is chunked and compressed
(gzip, with the shuffle filter).

    attrs
        format_version  int     1
        prior_name      str     registry name of the prior ("ftpfn", "lcpfn", "mixture"), or its
                                class name when the prior has no registered config
        prior_config    str     JSON of ``priors.registry.prior_config_to_dict``, or "null"
        seed            int     seed of the torch generator that sampled the tasks
        n_tasks         int     number of tasks
        n_groups        int     number of groups (batches as sampled)
        max_hps         int     D
    groups/task_offset  (n_groups + 1,) int64  group g: tasks task_offset[g]:task_offset[g+1]
    groups/n_context    (n_groups,) int64      context size of every task of the group
    groups/n_curves     (n_groups,) int64      C of the sampled batch (curve padding of the group)
    tasks/token_offset  (n_tasks + 1,) int64   task i: token rows token_offset[i]:token_offset[i+1]
    tasks/curve_offset  (n_tasks + 1,) int64   task i: curve rows curve_offset[i]:curve_offset[i+1]
    tasks/hp_mask       (n_tasks, D) bool      True for the task's real hyperparameters
    tokens/curve        (N,) int32             curve of each token, indexing the task's curves
    tokens/t            (N,) float32           normalised step
    tokens/y            (N,) float32           observed score
    curves/configs      (K, D) float32         hyperparameters of each stored curve
    curves/mask         (K,) bool              True for real curves

Within a task, tokens keep their sampled order (context first). Curves are stored up to the task's
last real curve (trailing padding is dropped and restored on reading from ``groups/n_curves``), so
reading a whole group gives back the sampled batch exactly (tensors as float32/int64/bool).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from priors.base import Prior
from priors.batch import CurveBatch
from priors.registry import prior_config_to_dict

FORMAT_VERSION = 1
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
_TOKEN_CHUNK = 1 << 16
_CURVE_CHUNK = 1 << 12


@dataclass(frozen=True)
class StoredTask:
    """One task read from a store (see ``priors.batch`` for the meaning of each tensor)."""

    configs: Tensor  # (C_i, D) float32, the task's stored curves (trailing padding dropped)
    hp_mask: Tensor  # (D,) bool
    curve_mask: Tensor  # (C_i,) bool
    curve: Tensor  # (T,) int64 in [0, C_i)
    t: Tensor  # (T,) float32
    y: Tensor  # (T,) float32
    n_context: int  # context size of the task's group: tokens [:n_context] are context
    n_curves: int  # C of the task's group when sampled: collate pads curves to at least this
    group: int  # index of the sampled batch the task belongs to


@dataclass(frozen=True)
class StoreInfo:
    """The file attributes of a store."""

    format_version: int
    prior_name: str
    prior_config: dict[str, Any] | None  # ``priors.registry.prior_config_to_dict`` output
    seed: int
    n_tasks: int
    n_groups: int
    max_hps: int


def _prior_provenance(prior: Prior) -> tuple[str, str]:
    try:
        described = prior_config_to_dict(getattr(prior, "config", None))
    except (ValueError, TypeError):
        return type(prior).__name__, "null"
    return described["name"], json.dumps(described)


def _create(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any, chunk: int) -> None:
    group.create_dataset(
        name,
        shape=(0, *shape),
        maxshape=(None, *shape),
        dtype=dtype,
        chunks=(chunk, *shape),
        **_COMPRESSION,
    )


def _append(dataset: h5py.Dataset, rows: np.ndarray) -> None:
    start = dataset.shape[0]
    dataset.resize(start + rows.shape[0], axis=0)
    dataset[start:] = rows


def write_tasks(
    path: str | Path,
    prior: Prior,
    n_tasks: int,
    *,
    seed: int,
    batch_size: int,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> StoreInfo:
    """Sample ``n_tasks`` tasks from ``prior`` in batches of ``batch_size`` into a new HDF5 file.

    Sampling uses one ``torch.Generator`` on ``device`` seeded with ``seed``, so the same call gives
    the same file. The last batch is smaller when ``batch_size`` does not divide ``n_tasks``. An
    existing file at ``path`` is replaced; missing parent folders are created.
    """
    for name, value in (("n_tasks", n_tasks), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device=device).manual_seed(seed)
    prior_name, prior_config = _prior_provenance(prior)
    d = prior.max_hps
    n_groups = math.ceil(n_tasks / batch_size)
    task_offsets, token_offsets, curve_offsets = [0], [0], [0]
    with h5py.File(path, "w") as f:
        f.attrs.update(
            format_version=FORMAT_VERSION,
            prior_name=prior_name,
            prior_config=prior_config,
            seed=seed,
            n_tasks=n_tasks,
            n_groups=n_groups,
            max_hps=d,
        )
        groups, tasks = f.create_group("groups"), f.create_group("tasks")
        tokens, curves = f.create_group("tokens"), f.create_group("curves")
        _create(groups, "n_context", (), np.int64, 1024)
        _create(groups, "n_curves", (), np.int64, 1024)
        _create(tasks, "hp_mask", (d,), np.bool_, 1024)
        _create(tokens, "curve", (), np.int32, _TOKEN_CHUNK)
        _create(tokens, "t", (), np.float32, _TOKEN_CHUNK)
        _create(tokens, "y", (), np.float32, _TOKEN_CHUNK)
        _create(curves, "configs", (d,), np.float32, _CURVE_CHUNK)
        _create(curves, "mask", (), np.bool_, _CURVE_CHUNK)
        with tqdm(total=n_tasks, desc="sampling tasks", unit="task", disable=not progress) as bar:
            for g in range(n_groups):
                size = min(batch_size, n_tasks - g * batch_size)
                batch = prior.sample(size, generator=generator).to("cpu")
                if batch.batch_size != size or batch.configs.shape[2] != d:
                    raise ValueError(
                        f"prior returned {batch.batch_size} tasks with D={batch.configs.shape[2]}, "
                        f"expected {size} tasks with D={d}"
                    )
                # Curves kept per task: up to its last real curve (at least one row).
                mask = batch.curve_mask.numpy()  # (B, C)
                keep = np.where(mask.any(1), mask.shape[1] - np.argmax(mask[:, ::-1], 1), 1)  # (B,)
                rows = np.arange(mask.shape[1])[None, :] < keep[:, None]  # (B, C)
                _append(groups["n_context"], np.array([batch.n_context]))
                _append(groups["n_curves"], np.array([mask.shape[1]]))
                _append(tasks["hp_mask"], batch.hp_mask.numpy())
                _append(tokens["curve"], batch.curve.numpy().astype(np.int32).reshape(-1))
                _append(tokens["t"], batch.t.float().numpy().reshape(-1))
                _append(tokens["y"], batch.y.float().numpy().reshape(-1))
                _append(curves["configs"], batch.configs.float().numpy()[rows])
                _append(curves["mask"], mask[rows])
                task_offsets.append(task_offsets[-1] + size)
                for i in range(size):
                    token_offsets.append(token_offsets[-1] + batch.n_tokens)
                    curve_offsets.append(curve_offsets[-1] + int(keep[i]))
                bar.update(size)
        groups.create_dataset("task_offset", data=np.array(task_offsets, dtype=np.int64))
        tasks.create_dataset("token_offset", data=np.array(token_offsets, dtype=np.int64))
        tasks.create_dataset("curve_offset", data=np.array(curve_offsets, dtype=np.int64))
    return read_store_info(path)


def read_store_info(path: str | Path) -> StoreInfo:
    """The attributes of the store at ``path``; ValueError if it is not a store we can read."""
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
    version = int(attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version}, this reader knows {FORMAT_VERSION}")
    return StoreInfo(
        format_version=version,
        prior_name=str(attrs["prior_name"]),
        prior_config=json.loads(str(attrs["prior_config"])),
        seed=int(attrs["seed"]),
        n_tasks=int(attrs["n_tasks"]),
        n_groups=int(attrs["n_groups"]),
        max_hps=int(attrs["max_hps"]),
    )


class CurveTaskDataset(torch.utils.data.Dataset):
    """The tasks of a store, one ``StoredTask`` per item.

    The file is opened lazily in each process that reads (so the dataset can go to ``DataLoader``
    workers); offsets and per-group values are held in memory, token and curve rows are read on
    demand.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.info = read_store_info(self.path)
        with h5py.File(self.path, "r") as f:
            self._task_offset = f["groups/task_offset"][:]  # (n_groups + 1,)
            self._n_context = f["groups/n_context"][:]  # (n_groups,)
            self._n_curves = f["groups/n_curves"][:]  # (n_groups,)
            self._token_offset = f["tasks/token_offset"][:]  # (n_tasks + 1,)
            self._curve_offset = f["tasks/curve_offset"][:]  # (n_tasks + 1,)
        self._group = np.repeat(np.arange(self.info.n_groups), np.diff(self._task_offset))
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return self.info.n_tasks

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}  # h5py handles do not cross processes

    def __getitem__(self, index: int) -> StoredTask:
        if not -len(self) <= index < len(self):
            raise IndexError(f"task {index} out of range for {len(self)} tasks")
        index = index % len(self)
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        f = self._file
        t0, t1 = self._token_offset[index : index + 2]
        c0, c1 = self._curve_offset[index : index + 2]
        group = int(self._group[index])
        return StoredTask(
            configs=torch.from_numpy(f["curves/configs"][c0:c1]),
            hp_mask=torch.from_numpy(f["tasks/hp_mask"][index]),
            curve_mask=torch.from_numpy(f["curves/mask"][c0:c1]),
            curve=torch.from_numpy(f["tokens/curve"][t0:t1].astype(np.int64)),
            t=torch.from_numpy(f["tokens/t"][t0:t1]),
            y=torch.from_numpy(f["tokens/y"][t0:t1]),
            n_context=int(self._n_context[group]),
            n_curves=int(self._n_curves[group]),
            group=group,
        )

    def close(self) -> None:
        """Close the file handle of this process, if open."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def group_indices(self, group: int) -> range:
        """The task indices of group ``group`` (one sampled batch)."""
        return range(int(self._task_offset[group]), int(self._task_offset[group + 1]))

    def group_batch(self, group: int) -> CurveBatch:
        """Group ``group`` as a ``CurveBatch``: exactly the batch that was sampled."""
        return collate_tasks([self[i] for i in self.group_indices(group)])

    def batch_indices(
        self,
        batch_size: int | None = None,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Index batches that never mix groups, for ``DataLoader(batch_sampler=...)``.

        Each group is cut into batches of at most ``batch_size`` tasks (None: whole groups). With
        ``shuffle``, tasks are shuffled within their group and the batches are shuffled, using
        ``generator`` (a CPU generator).
        """
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive or None, got {batch_size}")
        batches: list[list[int]] = []
        for g in range(self.info.n_groups):
            tasks = list(self.group_indices(g))
            if shuffle:
                tasks = [tasks[i] for i in torch.randperm(len(tasks), generator=generator)]
            step = batch_size or len(tasks)
            batches += [tasks[i : i + step] for i in range(0, len(tasks), step)]
        if shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        return batches


def collate_tasks(tasks: Sequence[StoredTask]) -> CurveBatch:
    """Pad tasks of one group into a ``CurveBatch`` (curves padded to the group's sampled ``C``).

    ValueError if the tasks do not share ``n_context`` and ``T`` (tasks of different groups).
    """
    if not tasks:
        raise ValueError("collate_tasks needs at least one task")
    n_context, n_tokens = tasks[0].n_context, tasks[0].t.shape[0]
    for task in tasks:
        if task.n_context != n_context or task.t.shape[0] != n_tokens:
            raise ValueError(
                "tasks of one batch must share n_context and T (take them from one group), got "
                f"n_context {task.n_context} vs {n_context}, T {task.t.shape[0]} vs {n_tokens}"
            )
    b, d = len(tasks), tasks[0].hp_mask.shape[0]
    c = max(max(task.n_curves, task.configs.shape[0]) for task in tasks)
    configs = torch.zeros(b, c, d)  # (B, C, D)
    curve_mask = torch.zeros(b, c, dtype=torch.bool)  # (B, C)
    for i, task in enumerate(tasks):
        configs[i, : task.configs.shape[0]] = task.configs
        curve_mask[i, : task.curve_mask.shape[0]] = task.curve_mask
    return CurveBatch(
        configs=configs,
        hp_mask=torch.stack([task.hp_mask for task in tasks]),  # (B, D)
        curve_mask=curve_mask,
        curve=torch.stack([task.curve for task in tasks]),  # (B, T)
        t=torch.stack([task.t for task in tasks]),  # (B, T)
        y=torch.stack([task.y for task in tasks]),  # (B, T)
        n_context=n_context,
    )
