"""The LC-PFN prior: one learning curve per task, a noisy mix of three parametric curve families.

Following Adriaensen et al. (NeurIPS 2023), a curve over steps ``x = 1 .. n_steps`` is

    f(x) = w_1 pow3(x) + w_2 ilog2(x) + w_3 janoschek(x),      w_k ~ U(0, 1) (not normalised)
    pow3(x)      = c - a x^(-alpha)                      c ~ U(0, 1.25), a ~ U(-0.6, 0.6),
                                                         ln alpha ~ N(0, 2^2)
    ilog2(x)     = c - a / ln(x + 1)                     c ~ U(0, 1), a ~ U(-0.5, 0.5)
    janoschek(x) = alpha - (alpha - beta) exp(-kappa x^delta)
                                                         alpha ~ U(0, 1), beta ~ U(0, 2),
                                                         ln kappa ~ N(-2, 1), ln delta ~ N(0, 0.5^2)

and a draw is rejected unless ``f(n_steps) > f(1)`` and ``f(x) in [0, 1]`` for every step (about
20% of draws are accepted for ``n_steps = 100``). Observations add i.i.d. ``N(0, sigma^2)`` with
``ln sigma ~ N(-4, 1)``, drawn independently of the curve (so the rejection does not touch it).

Clipping: the reference implementation does *not* clip the noisy observations (its comment says
they "can exceed [0,1]"), and its bar distribution has half-normal tails to cover that. Our
``CurveBatch`` promises ``y in [0, 1]`` (FT-PFN clips, and a [0, 1] bucket grid needs it), so by
default observations are clipped to [0, 1]; ``clip_observations=False`` gives the reference's
unclipped prior (use it to compare log-likelihoods with the published numbers). The noiseless curve
is always inside [0, 1], so clipping only moves noise that crosses the border (a few percent of
the points of curves that end near 0 or 1).

A task holds the single curve (``C = 1``, no hyperparameters: ``hp_mask`` all False and ``configs``
zero, padded to ``max_hps`` so batches mix with FT-PFN's) with token ``t = step / n_steps``. One
context size per batch, uniform in ``1 .. seq_len - 1``: the context is the curve's first tokens and
the queries are the later ones, as in freeze-thaw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from priors.batch import CurveBatch

# Draws per rejection round are sized from this acceptance guess (updated as draws come in).
_INITIAL_ACCEPTANCE = 0.2
_MIN_ROUND = 256


@dataclass(frozen=True, kw_only=True)
class LCPFNPriorConfig:
    """Settings of the LC-PFN prior (the distributions themselves are fixed, see the module doc)."""

    n_steps: int = 100  # curve length; the curve families are evaluated at steps 1..n_steps
    max_hps: int = 32  # D of the batches (all slots padding), to mix with hyperparameter priors
    seq_len: int | None = None  # tokens per task, a random sorted subset of steps; None: n_steps
    clip_observations: bool = True  # clip noisy y to [0, 1]; False reproduces the reference prior

    def __post_init__(self) -> None:
        if isinstance(self.n_steps, bool) or not isinstance(self.n_steps, int) or self.n_steps < 2:
            raise ValueError(f"n_steps must be an integer >= 2, got {self.n_steps!r}")
        if isinstance(self.max_hps, bool) or not isinstance(self.max_hps, int) or self.max_hps < 0:
            raise ValueError(f"max_hps must be an integer >= 0, got {self.max_hps!r}")
        if self.seq_len is not None and (
            isinstance(self.seq_len, bool)
            or not isinstance(self.seq_len, int)
            or not 2 <= self.seq_len <= self.n_steps
        ):
            raise ValueError(
                f"seq_len must be None or an integer in [2, n_steps={self.n_steps}], "
                f"got {self.seq_len!r}"
            )
        if not isinstance(self.clip_observations, bool):
            raise ValueError(f"clip_observations must be a bool, got {self.clip_observations!r}")

    @property
    def tokens_per_task(self) -> int:
        """T of the batches: ``seq_len``, or ``n_steps`` when unset."""
        return self.n_steps if self.seq_len is None else self.seq_len


@dataclass(frozen=True)
class LCPFNCurveParams:
    """Parameters of ``n`` LC-PFN curves, one row per curve (float64)."""

    weights: Tensor  # (n, 3) weights of pow3, ilog2, janoschek ~ U(0, 1)
    pow3_c: Tensor  # (n,) ~ U(0, 1.25)
    pow3_a: Tensor  # (n,) ~ U(-0.6, 0.6)
    pow3_alpha: Tensor  # (n,) ln ~ N(0, 2^2)
    ilog2_c: Tensor  # (n,) ~ U(0, 1)
    ilog2_a: Tensor  # (n,) ~ U(-0.5, 0.5)
    janoschek_alpha: Tensor  # (n,) ~ U(0, 1)
    janoschek_beta: Tensor  # (n,) ~ U(0, 2)
    janoschek_kappa: Tensor  # (n,) ln ~ N(-2, 1)
    janoschek_delta: Tensor  # (n,) ln ~ N(0, 0.5^2)

    def __len__(self) -> int:
        return self.weights.shape[0]

    def values(self, steps: Tensor) -> Tensor:
        """Noiseless values ``(n, S)`` at ``steps``, shared ``(S,)`` or per curve ``(n, S)``."""
        x = steps.to(self.weights.dtype)
        x = x.expand(len(self), -1) if x.ndim == 1 else x  # (n, S)

        def col(v: Tensor) -> Tensor:
            return v[:, None]  # (n, 1)

        pow3 = col(self.pow3_c) - col(self.pow3_a) * x.pow(-col(self.pow3_alpha))
        ilog2 = col(self.ilog2_c) - col(self.ilog2_a) / torch.log(x + 1)
        jan_alpha, jan_beta = col(self.janoschek_alpha), col(self.janoschek_beta)
        janoschek = jan_alpha - (jan_alpha - jan_beta) * torch.exp(
            -col(self.janoschek_kappa) * x.pow(col(self.janoschek_delta))
        )
        w = self.weights
        return w[:, 0:1] * pow3 + w[:, 1:2] * ilog2 + w[:, 2:3] * janoschek  # (n, S)

    def select(self, index: Tensor) -> LCPFNCurveParams:
        """The curves at ``index`` (a boolean mask or integer indices over the ``n`` rows)."""
        return LCPFNCurveParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def cat(parts: list[LCPFNCurveParams]) -> LCPFNCurveParams:
        """All curves of ``parts``, in order."""
        return LCPFNCurveParams(
            **{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(parts[0])}
        )


def draw_curve_params(n: int, *, generator: torch.Generator) -> LCPFNCurveParams:
    """``n`` draws of the curve parameters before rejection, on ``generator.device``."""
    kw = {"generator": generator, "device": generator.device, "dtype": torch.float64}

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(*(shape or (n,)), **kw)

    def log_normal(mean: float, std: float) -> Tensor:
        return torch.exp(mean + std * torch.randn(n, **kw))

    return LCPFNCurveParams(
        weights=uniform(0.0, 1.0, n, 3),
        pow3_c=uniform(0.0, 1.25),
        pow3_a=uniform(-0.6, 0.6),
        pow3_alpha=log_normal(0.0, 2.0),
        ilog2_c=uniform(0.0, 1.0),
        ilog2_a=uniform(-0.5, 0.5),
        janoschek_alpha=uniform(0.0, 1.0),
        janoschek_beta=uniform(0.0, 2.0),
        janoschek_kappa=log_normal(-2.0, 1.0),
        janoschek_delta=log_normal(0.0, 0.5),
    )


def is_accepted(values: Tensor) -> Tensor:
    """The rejection rule on noiseless curves ``(n, n_steps)``: ``(n,)`` bool.

    Accepted iff the last value exceeds the first, every value is in [0, 1], and none is NaN.
    """
    in_range = ((values >= 0) & (values <= 1)).all(dim=1)  # NaN compares False: rejected
    return in_range & (values[:, -1] > values[:, 0])


@dataclass(frozen=True)
class LCPFNCurves:
    """Accepted LC-PFN curves with their noise, before they are cut into tokens."""

    params: LCPFNCurveParams  # n accepted parameter rows
    sigma: Tensor  # (n,) float64 observation noise std, ln sigma ~ N(-4, 1)
    clean: Tensor  # (n, n_steps) float64 noiseless values at steps 1..n_steps
    observed: Tensor  # (n, n_steps) float64 clean + noise (clipped to [0, 1] if configured)


class LCPFNPrior:
    """The LC-PFN prior (see the module docstring); satisfies ``priors.base.Prior``."""

    def __init__(self, config: LCPFNPriorConfig | None = None) -> None:
        self.config = config if config is not None else LCPFNPriorConfig()

    @property
    def max_hps(self) -> int:
        """D of the batches it returns."""
        return self.config.max_hps

    def sample_params(self, n: int, *, generator: torch.Generator) -> LCPFNCurveParams:
        """``n`` accepted curve parameter draws (rejection sampling, vectorised in rounds)."""
        if n <= 0:
            return draw_curve_params(0, generator=generator)  # empty (draws nothing)
        steps = torch.arange(1, self.config.n_steps + 1, device=generator.device)  # (S,)
        kept: list[LCPFNCurveParams] = []
        n_kept, n_drawn, n_accepted = 0, 0, 0
        while n_kept < n:
            rate = max((n_accepted + 1) / (n_drawn + 1 / _INITIAL_ACCEPTANCE), 0.01)
            n_round = max(_MIN_ROUND, math.ceil(1.2 * (n - n_kept) / rate))
            draws = draw_curve_params(n_round, generator=generator)
            accepted = is_accepted(draws.values(steps))  # (n_round,)
            n_new = int(accepted.sum())
            n_drawn, n_accepted = n_drawn + n_round, n_accepted + n_new
            if n_new:
                kept.append(draws.select(accepted))
                n_kept += n_new
        return LCPFNCurveParams.cat(kept).select(slice(0, n))

    def sample_curves(self, n: int, *, generator: torch.Generator) -> LCPFNCurves:
        """``n`` accepted curves with noisy observations at every step 1..n_steps."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        device = generator.device
        params = self.sample_params(n, generator=generator)
        steps = torch.arange(1, self.config.n_steps + 1, device=device)  # (S,)
        clean = params.values(steps)  # (n, S)
        kw = {"generator": generator, "device": device, "dtype": torch.float64}
        sigma = torch.exp(-4.0 + torch.randn(n, **kw))  # (n,)
        observed = clean + sigma[:, None] * torch.randn(clean.shape, **kw)  # (n, S)
        if self.config.clip_observations:
            observed = observed.clamp(0.0, 1.0)
        return LCPFNCurves(params=params, sigma=sigma, clean=clean, observed=observed)

    def sample(
        self, batch_size: int, *, generator: torch.Generator, n_context: int | None = None
    ) -> CurveBatch:
        """Draw ``batch_size`` one-curve tasks (see ``priors.batch`` for the layout).

        ``n_context`` (default: uniform in ``1..T-1``, drawn from ``generator`` last, so fixing it
        leaves the curves unchanged) sets the context size of every task of the batch.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        cfg, device = self.config, generator.device
        n_tokens = cfg.tokens_per_task
        if n_context is not None and not 0 <= n_context < n_tokens:
            raise ValueError(f"n_context must be in [0, {n_tokens - 1}], got {n_context}")
        curves = self.sample_curves(batch_size, generator=generator)
        if n_tokens == cfg.n_steps:
            index = torch.arange(cfg.n_steps, device=device).expand(batch_size, -1)  # (B, T)
        else:
            # A uniformly random subset of the steps per task, in increasing order.
            scores = torch.rand(batch_size, cfg.n_steps, generator=generator, device=device)
            index = scores.argsort(dim=1)[:, :n_tokens].sort(dim=1).values  # (B, T)
        if n_context is None:
            draw = torch.randint(1, n_tokens, (1,), generator=generator, device=device)
            n_context = int(draw.item())
        return CurveBatch(
            configs=torch.zeros(batch_size, 1, cfg.max_hps, device=device),  # (B, 1, D)
            hp_mask=torch.zeros(batch_size, cfg.max_hps, dtype=torch.bool, device=device),
            curve_mask=torch.ones(batch_size, 1, dtype=torch.bool, device=device),  # (B, 1)
            curve=torch.zeros(batch_size, n_tokens, dtype=torch.long, device=device),  # (B, T)
            t=((index + 1).to(torch.float64) / cfg.n_steps).float(),  # (B, T)
            y=curves.observed.gather(1, index).float(),  # (B, T)
            n_context=n_context,
        )
