"""What every prior offers: sample a batch of tasks on a device, from a seeded generator."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from priors.batch import CurveBatch


@runtime_checkable
class Prior(Protocol):
    """A distribution over learning-curve tasks.

    Implementations are deterministic given the generator: the same generator state gives the same
    batch on the same device. All work happens on ``generator.device``.
    """

    max_hps: int  # D of the batches it returns

    def sample(
        self, batch_size: int, *, generator: torch.Generator, n_context: int | None = None
    ) -> CurveBatch:
        """Draw ``batch_size`` independent tasks (see ``priors.batch`` for the layout).

        ``n_context`` fixes the context size (default: drawn from ``generator``); a value the
        prior cannot honour (at least its tokens per task) raises ``ValueError``.
        """
        ...
