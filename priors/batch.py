"""The one data format shared by every prior, the HDF5 store, and the network.

Shape legend (batch first everywhere):
    B  tasks in the batch
    T  tokens per task (context tokens first, then query tokens)
    C  curves (configurations) per task, padded to the largest task of the batch
    D  hyperparameter slots, padded to the prior's ``max_hps``

A task is a set of learning curves of configurations of one training problem. Each token is one
observation ``(curve, t, y)``; the curve's hyperparameters live once per curve in ``configs``.
Tokens ``[:n_context]`` are context (the network sees their ``y``); tokens ``[n_context:]`` are
queries (their ``y`` is the training target). Within a task, the context tokens of a curve are a
prefix of that curve (its first steps); its query tokens are later steps.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass(frozen=True)
class CurveBatch:
    """A batch of learning-curve tasks (see the module docstring for the shape legend)."""

    configs: Tensor  # (B, C, D) float in [0, 1]; 0 in padded hyperparameter slots and curves
    hp_mask: Tensor  # (B, D) bool: True for the task's real hyperparameters
    curve_mask: Tensor  # (B, C) bool: True for the task's real curves
    curve: Tensor  # (B, T) long in [0, C): the curve each token belongs to
    t: Tensor  # (B, T) float in (0, 1]: normalised step (step / curve length)
    y: Tensor  # (B, T) float in [0, 1]: observed score (context) or target (query), higher = better
    n_context: int  # tokens [:n_context] are context, the rest queries

    def __post_init__(self) -> None:
        b, c, d = self.configs.shape
        expected = {
            "hp_mask": (b, d),
            "curve_mask": (b, c),
            "curve": self.t.shape,
            "y": self.t.shape,
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != tuple(shape):
                raise ValueError(f"CurveBatch.{name} has shape {got}, expected {tuple(shape)}")
        if self.t.ndim != 2 or self.t.shape[0] != b:
            raise ValueError(f"CurveBatch.t has shape {tuple(self.t.shape)}, expected ({b}, T)")
        if not 0 <= self.n_context <= self.t.shape[1]:
            raise ValueError(
                f"CurveBatch.n_context={self.n_context} outside [0, T={self.t.shape[1]}]"
            )

    @property
    def batch_size(self) -> int:
        return self.t.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.t.shape[1]

    @property
    def n_queries(self) -> int:
        return self.t.shape[1] - self.n_context

    def to(self, device: torch.device | str) -> CurveBatch:
        """The same batch with every tensor on ``device``."""
        return CurveBatch(
            **{
                f.name: (v.to(device) if isinstance(v := getattr(self, f.name), Tensor) else v)
                for f in fields(self)
            }
        )
