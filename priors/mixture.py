"""A mixture of priors: each batch comes whole from one component, chosen by weight.

Choosing per batch (not per task) keeps batches rectangular: components can differ in tokens per
task (``T``: 100 for LC-PFN, 1000 for FT-PFN) and curves per task (``C``), so consecutive batches
of a mixture can have different ``T`` and ``C``. They always share ``D``: every component must have
the same ``max_hps``. Over many batches, a component's share of the tasks is its weight's share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from priors.base import Prior
from priors.batch import CurveBatch


class MixturePrior:
    """Sample each batch from one of ``priors``, picked with probability proportional to weight.

    ``config`` is optional provenance (the config the mixture was built from, see
    ``priors.registry``); the mixture itself does not read it.
    """

    def __init__(
        self,
        priors: Sequence[Prior],
        weights: Sequence[float],
        *,
        config: object | None = None,
    ) -> None:
        priors, weights = list(priors), [float(w) for w in weights]
        if not priors:
            raise ValueError("priors must hold at least one prior")
        if len(weights) != len(priors):
            raise ValueError(
                f"weights has {len(weights)} entries but priors has {len(priors)}; they must match"
            )
        if any(not math.isfinite(w) or w <= 0 for w in weights):
            raise ValueError(f"weights must be finite and positive, got {weights}")
        hps = sorted({p.max_hps for p in priors})
        if len(hps) != 1:
            raise ValueError(f"priors must share max_hps, got {[p.max_hps for p in priors]}")
        self.priors = priors
        total = sum(weights)
        self.probabilities = [w / total for w in weights]
        self.config = config

    @property
    def max_hps(self) -> int:
        """D of the batches it returns (shared by every component)."""
        return self.priors[0].max_hps

    def choose(self, *, generator: torch.Generator) -> int:
        """Index of the component for the next batch (one draw from ``generator``)."""
        u = torch.rand((), generator=generator, device=generator.device).item()
        cumulative = 0.0
        for index, p in enumerate(self.probabilities[:-1]):
            cumulative += p
            if u < cumulative:
                return index
        return len(self.probabilities) - 1

    def sample(
        self, batch_size: int, *, generator: torch.Generator, n_context: int | None = None
    ) -> CurveBatch:
        """Draw ``batch_size`` tasks, all from one component chosen by weight.

        The component is the first draw from ``generator``, so two calls from equal generator
        states use the same component whatever ``n_context`` (passed on to it) says.
        """
        prior = self.priors[self.choose(generator=generator)]
        return prior.sample(batch_size, generator=generator, n_context=n_context)
