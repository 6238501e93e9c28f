"""The FT-PFN prior: tasks of many learning curves whose shapes depend smoothly on hyperparameters.

Per task (Rakotoarison et al. 2024): a number of hyperparameters ``d``, a curve
length ``n``, a shared start value ``y0`` and ceiling, and a fresh random tanh MLP mapping each
configuration ``λ ∈ [0, 1]^d`` to 23 raw outputs. Each output goes through the empirical CDF of
such outputs (``priors.ecdf``) to a uniform number and then through the inverse CDF of its
parameter's marginal (``parameters_from_uniforms``); the curves are ``priors.curves``.

Sequence construction (as in ifBO's ``get_batch``): every configuration gets a weight from a
Dirichlet with concentration ``10^U(-4, -1)`` (plus a tiny floor), and ``n`` token slots, one per
step. Tokens are drawn *without replacement* from the slots with probability proportional to the
curve's weight (so a curve gets at most ``n`` tokens). The first ``n_context`` tokens are the
context: a curve's context tokens are its steps ``1..k`` in order. Its later tokens are queries at
distinct steps drawn uniformly from ``k+1..n``. The draw is simulated exactly as an exponential
race of the slots, with binomial counts per curve up to a time that yields about ``seq_len``
arrivals, so no loop over tokens or tasks is needed.

Beyond the reference (all off by default, so the reference prior and its random streams are
unchanged):

* ``stall_task_prob > 0`` gives that share of tasks a share ``U(0, max_stall_share)`` of
  **stalled** configurations (``stall``): those whose asymptote uniform falls below the share, so
  a smooth region of the hyperparameter space, stay flat at the start value with less noise, as
  dead runs do in real searches.
  With ``late_start_share > 0``, that share of the stalled region, its configurations nearest
  the edge, are **late starters** (``late_onset``): flat and quiet like stalled runs until an
  onset time, then their own curve, compressed into the time left (the onset is on the curve's
  own time axis, after a log-time warp: on a uniform grid of a warped task late starters take off
  within the first few steps). With ``late_start_on_grid_only``, only tasks on a geometric grid
  (below) have late starters, and in the others the whole region stalls: a learner on a few
  hundred examples often sits at the majority-class accuracy before it learns, while on an
  epoch or step axis a flat, quiet run is usually dead (which an early stopper relies on; late
  starters on every task made stage 14's 90% intervals on TaskSet too wide and its pruning
  slower, ``checkpoints/README.md``). LCDB's learners sit at the
  majority-class accuracy for the first training sizes and then learn; TaskSet's runs at ln 2 for
  some evaluations take off. Without late starters a network is sure that a flat, quiet run
  stays flat (on LCDB, 38% of the runs with a constant prefix moved by more than 0.01, and 69% of
  their final values fell inside its 90% interval).
* ``log_uniform_hps`` draws ``d`` log-uniformly, so that tasks with many hyperparameters (up to
  every slot) are seen without drowning the common small ones; the reference stops at 10 and
  leaves the network's other slots untrained.
* ``categorical_task_prob > 0`` gives that share of tasks one **categorical** hyperparameter:
  ``k ~ U{2..max_categories}`` adjacent slots at a random offset hold a one-hot vector (the
  encoding of ``bo.space.Categorical`` and ``pfn.curve_table``), so each category gets its own,
  arbitrary region of curve shapes (``d`` grows to ``k`` if needed).
* ``replicate_task_prob > 0`` gives that share of tasks **repeated runs**: rows come in groups of
  ``r ~ U{2..max_replicates}`` with the same configuration (as repeated seeds in LCDB or a user's
  re-runs), and each run's 23 curve-parameter uniforms are moved by a seed effect
  ``u -> Φ(Φ⁻¹(u) + s ε)``, ``ε ~ N(0, 1)``, ``s = 10^U(min_log10_seed_std, max_log10_seed_std)``
  per task, so repeated runs agree in shape up to the task's seed-to-seed spread.
* ``monotone_task_prob > 0`` gives that share of tasks curves that **never turn back** after
  saturation: their post-saturation rates are drawn from the reference marginal ``1 - Exp(1)``
  truncated to ``[0, 1]`` (the uniforms are scaled by ``1 - 1/e``, so the map stays smooth in λ).
  In the reference prior 37% of basis rates are negative, and a fifth of all curves end more
  than 0.05 below their peak; real validation curves of a search rarely do (TaskSet: 10 of 1479
  final values fall more than 0.02 below the last seen value), and a network trained with the
  reference rates expects plateaued runs to decline even when no run in the task ever did.
* ``log_time_task_prob > 0`` gives that share of tasks a **geometric budget**: every curve of the
  task is the reference curve read at ``x = ln(1 + K t) / ln(1 + K)`` instead of ``t``
  (``log_time``), ``K = 10^U(min_log10_time_scale, max_log10_time_scale)`` per task. Progress is
  then about linear in ``ln t`` over ``log10 K`` decades, the shape of accuracy against
  training-set size (power laws with small exponents, as in LCDB) or of any budget on a log grid.
  The reference curves rise over one decade of their time axis: on LCDB (``t`` = size / largest
  size) a network trained without this predicted runs seen at ``t`` in ``[0.1, 0.3)`` to gain
  +0.003 by the end where they gained +0.048.
* ``geometric_grid_prob > 0`` puts that share of the log-time tasks on a **geometric grid**: step
  ``s`` of ``n`` is observed at ``t = K^(-(n - s) / (n - 1))`` (``geometric_grid``), from
  ``1 / K`` to 1 with a constant ratio, instead of at ``s / n``. Budgets whose progress is
  logarithmic are often recorded that way (LCDB's training sizes grow by sqrt(2)), and on a
  uniform grid alone the network never sees such spacing, let alone learns that it goes with
  curves still rising late. The first step's time ``1 / K`` is tied to the warp's ``K``, so the
  curve is first seen at ``x = ln 2 / ln(1 + K)`` (0.29 for ``K = 10``, 0.08 for ``K = 10^4``).
* ``dip_task_prob > 0`` gives that share of tasks **dips**: each observation, independently with
  probability ``U(0, max_dip_rate)`` (per task), is pulled towards the task's start value,
  ``y -> y0 + v (y - y0)``, ``v ~ U(0, 1)`` (``dips``), and the run goes on from its curve at the
  next step. Real runs do this (a loss spike, an unstable learner: on LCDB some accuracy curves
  fall from 0.85 to 0.25 for a few training sizes and come back), while the reference noise is
  small and Gaussian, so a network trained on it reads a dip as the start of a decline.

Shape legend: B tasks, N candidate configurations, C curves touched by tokens (padded), T tokens,
D hyperparameter slots, K = 4 basis curves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from priors.batch import CurveBatch
from priors.curves import CurveParams, observe, prepare
from priors.ecdf import ECDFTable, load_table, to_uniform
from priors.random_mlp import RandomMLPConfig, draw_mlps, evaluate_mlps

N_PARAMS = 23  # raw outputs per configuration: the curve parameters
_LN10 = math.log(10.0)


@dataclass(frozen=True, kw_only=True)
class FTPFNPriorConfig:
    """Every knob of the FT-PFN prior; defaults reproduce the reference prior."""

    max_hps: int = 32  # D: hyperparameter slots of the batches (padding beyond a task's d)
    min_hps: int = 1  # d ~ U{min_hps..max_task_hps}; 0 allowed (curves differ only by noise)
    max_task_hps: int = 10  # largest d drawn for a task (<= max_hps)
    n_configs: int = 1000  # N: candidate configurations per task (tokens touch a subset)
    seq_len: int = 1000  # T: tokens per task, context and queries together
    min_curve_length: int = 1  # n ~ round(10^U(log10 min, log10 max)) steps per curve
    max_curve_length: int = 1000
    min_log10_concentration: float = -4.0  # Dirichlet concentration of curve weights: 10^U(.,.)
    max_log10_concentration: float = -1.0
    weight_floor: float = 1e-9  # added to the Gamma(c, scale c) curve weights (as in ifBO)
    ceiling_prob: float = 0.25  # probability that the ceiling is max(u1, u2) instead of 1
    # Stalled runs (not in the reference prior; 0 reproduces it): with this probability a task has
    # a share ~ U(0, max_stall_share) of configurations that never learn (see `stall`).
    stall_task_prob: float = 0.0
    max_stall_share: float = 0.8
    stall_noise_factor: float = 0.1  # a stalled run's noise std = this x its drawn std
    late_start_share: float = 0.0  # share of the stalled region that starts late (`late_onset`)
    late_start_on_grid_only: bool = False  # late starters only in tasks on a geometric grid
    # Hyperparameter counts, categoricals and repeated runs (not in the reference; off by default).
    # d = min_hps - 1 + floor(exp(U(0, ln(max_task_hps - min_hps + 2)))) instead of uniform:
    log_uniform_hps: bool = False
    categorical_task_prob: float = 0.0  # share of tasks with one one-hot categorical
    max_categories: int = 20  # k ~ U{2..max_categories} (<= max_hps when categoricals are on)
    replicate_task_prob: float = 0.0  # share of tasks whose rows come in groups of repeated runs
    max_replicates: int = 25  # r ~ U{2..max_replicates} runs per configuration
    min_log10_seed_std: float = -2.5  # seed effect s = 10^U(min, max), in normal-quantile units
    max_log10_seed_std: float = -0.5
    monotone_task_prob: float = 0.0  # share of tasks without post-saturation decline (rates >= 0)
    log_time_task_prob: float = 0.0  # share of tasks read on a log time axis (see `log_time`)
    min_log10_time_scale: float = 1.0  # K = 10^U(min, max): the warp's decades
    max_log10_time_scale: float = 4.0
    geometric_grid_prob: float = 0.0  # share of log-time tasks on a geometric grid
    dip_task_prob: float = 0.0  # share of tasks whose observations sometimes dip (see `dips`)
    max_dip_rate: float = 0.2  # per-task dip probability ~ U(0, max_dip_rate)
    mlp: RandomMLPConfig = field(default_factory=RandomMLPConfig)  # per-task random network

    def __post_init__(self) -> None:
        if isinstance(self.mlp, dict):  # built from a JSON dict
            object.__setattr__(self, "mlp", RandomMLPConfig(**self.mlp))
        for name in ("max_hps", "min_hps", "max_task_hps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("n_configs", "seq_len", "min_curve_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_task_hps > self.max_hps:
            raise ValueError(
                f"max_task_hps={self.max_task_hps} exceeds max_hps={self.max_hps} (the slots)"
            )
        if self.min_hps > self.max_task_hps:
            raise ValueError(f"min_hps={self.min_hps} exceeds max_task_hps={self.max_task_hps}")
        if self.max_curve_length < self.min_curve_length:
            raise ValueError(
                f"max_curve_length={self.max_curve_length} is below "
                f"min_curve_length={self.min_curve_length}"
            )
        if self.n_configs * self.max_curve_length < self.seq_len:
            raise ValueError(
                f"seq_len={self.seq_len} exceeds n_configs * max_curve_length = "
                f"{self.n_configs * self.max_curve_length} (every token is a distinct step)"
            )
        if self.max_log10_concentration < self.min_log10_concentration:
            raise ValueError("max_log10_concentration is below min_log10_concentration")
        if self.weight_floor < 0:
            raise ValueError(f"weight_floor must be >= 0, got {self.weight_floor}")
        if self.max_categories < 2:
            raise ValueError(f"max_categories must be >= 2, got {self.max_categories}")
        if self.categorical_task_prob > 0 and self.max_categories > self.max_hps:
            raise ValueError(
                f"max_categories={self.max_categories} exceeds max_hps={self.max_hps} (the slots)"
            )
        if self.max_replicates < 2:
            raise ValueError(f"max_replicates must be >= 2, got {self.max_replicates}")
        if self.max_log10_seed_std < self.min_log10_seed_std:
            raise ValueError("max_log10_seed_std is below min_log10_seed_std")
        if self.max_log10_time_scale < self.min_log10_time_scale:
            raise ValueError("max_log10_time_scale is below min_log10_time_scale")
        if self.late_start_share > 0 and self.stall_task_prob == 0:
            raise ValueError("late_start_share > 0 needs stall_task_prob > 0 (it splits those)")
        if self.late_start_on_grid_only and (
            self.late_start_share == 0 or self.geometric_grid_prob == 0
        ):
            raise ValueError(
                "late_start_on_grid_only needs late_start_share > 0 and geometric_grid_prob > 0"
            )
        if self.geometric_grid_prob > 0 and self.log_time_task_prob == 0:
            raise ValueError(
                "geometric_grid_prob > 0 needs log_time_task_prob > 0 (it picks among those)"
            )
        if self.geometric_grid_prob > 0 and self.min_log10_time_scale <= 0:
            raise ValueError(
                "geometric_grid_prob > 0 needs min_log10_time_scale > 0 (a grid from 1/K to 1)"
            )
        for name in (
            "ceiling_prob",
            "stall_task_prob",
            "max_stall_share",
            "late_start_share",
            "categorical_task_prob",
            "replicate_task_prob",
            "monotone_task_prob",
            "log_time_task_prob",
            "geometric_grid_prob",
            "dip_task_prob",
            "max_dip_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.stall_noise_factor < 0:
            raise ValueError(f"stall_noise_factor must be >= 0, got {self.stall_noise_factor}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; ``FTPFNPriorConfig(**d)`` rebuilds the config."""
        return asdict(self)


@dataclass(frozen=True)
class TaskDraw:
    """The task-level random variables of a batch."""

    n_hps: Tensor  # (B,) long: d, the task's number of hyperparameters
    length: Tensor  # (B,) long: n, steps per curve
    y0: Tensor  # (B,) start value shared by the task's curves
    ymax: Tensor  # (B,) ceiling of the asymptotes
    log_concentration: Tensor  # (B,) natural log of the Dirichlet concentration of curve weights
    stall_share: Tensor | None = None  # (B,) share of stalled configurations; None: no stalling
    cat_offset: Tensor | None = None  # (B,) long: first slot of the categorical; None: none drawn
    cat_size: Tensor | None = None  # (B,) long: k, its number of categories; 0: no categorical
    replicates: Tensor | None = None  # (B,) long: r, runs per configuration; 1: no repeats
    seed_std: Tensor | None = None  # (B,) s, the seed effect in normal-quantile units
    monotone: Tensor | None = None  # (B,) bool: no post-saturation decline; None: not drawn
    time_scale: Tensor | None = None  # (B,) K of the log-time warp; 0: none; None: not drawn
    geometric: Tensor | None = None  # (B,) bool: steps on a geometric grid; None: not drawn
    dip_rate: Tensor | None = None  # (B,) probability that an observation dips; None: not drawn


@dataclass(frozen=True)
class ConfigParameters:
    """Configurations of a batch of tasks and their curve parameters."""

    configs: Tensor  # (B, M, D) in [0, 1]; 0 in masked slots and rows
    hp_mask: Tensor  # (B, D) bool
    row_mask: Tensor  # (B, M) bool: real configurations
    params: CurveParams  # fields (R,) or (R, K): the R real rows, packed in (b, m) order
    stalled: Tensor | None = None  # (R,) bool: the row never learns (`stall`); None: no stalling
    onset: Tensor | None = None  # (R,) in [0, 1]: a late starter's onset, 0 for others; None: none


def parameters_from_uniforms(u: Tensor, *, y0: Tensor, ymax: Tensor) -> CurveParams:
    """Turn 23 uniforms per configuration into curve parameters with the FT-PFN marginals.

    ``u`` is (..., 23) in (0, 1); ``y0`` and ``ymax`` broadcast against ``u[..., 0]``. Order of the
    uniforms: Yinf, 4 basis weights, 4 shapes, Xsat_max, 4 relative saturation times, 4
    precisions, 4 post-saturation rates, noise std.
    """
    if u.shape[-1] != N_PARAMS:
        raise ValueError(f"u must have {N_PARAMS} entries in its last dimension, got {u.shape}")

    def exp1(cols: slice) -> Tensor:  # Exp(1) = Gamma(1) quantiles
        return torch.log1p(-u[..., cols]).neg_()

    yinf = y0 + (ymax - y0) * u[..., 0]
    gam = exp1(slice(1, 5))
    weights = gam / gam.sum(-1, keepdim=True)  # Dirichlet(1, 1, 1, 1)
    normal = torch.special.ndtri(u[..., 5:10])  # (..., 5) standard normal quantiles
    z = normal[..., :4]
    alpha = torch.stack(
        [
            torch.exp(1.0 + z[..., 0]),
            torch.exp(z[..., 1]),
            1.0 + torch.exp(-4.0 + z[..., 2]),
            torch.exp(0.5 + 0.5 * z[..., 3]),
        ],
        dim=-1,
    )
    xsat_max = torch.exp(_LN10 * normal[..., 4])  # 10^N(0, 1)
    rel = exp1(slice(10, 14))
    xsat = xsat_max[..., None] * rel / rel.amax(-1, keepdim=True)
    prec = torch.exp(3.0 * _LN10 * u[..., 14:18])  # 10^U(0, 3)
    rate = 1.0 - exp1(slice(18, 22))
    sigma = torch.exp(-5.0 + torch.special.ndtri(u[..., 22]))
    return CurveParams(
        y0=y0.expand_as(yinf),
        yinf=yinf,
        weights=weights,
        alpha=alpha,
        xsat=xsat,
        prec=prec,
        rate=rate,
        sigma=sigma,
    )


_RATE_COLUMNS = slice(18, 22)  # the post-saturation rates' uniforms (see parameters_from_uniforms)
_NON_NEGATIVE_RATE = 1.0 - math.exp(-1.0)  # rate = 1 + log(1 - u) >= 0  <=>  u <= 1 - 1/e


def no_decline(u: Tensor, rows: Tensor) -> Tensor:
    """Scale the rate uniforms of ``rows`` into ``[0, 1 - 1/e]``: their rates lie in ``[0, 1]``.

    ``u`` is (R, 23) (see :func:`parameters_from_uniforms`), ``rows`` (R,) bool. A rate of
    ``1 - Exp(1)`` conditioned to be non-negative keeps its shape on ``[0, 1]``; time after
    saturation then only slows down, so the curve never turns back towards its start. Returns a
    new (R, 23) tensor; other rows and columns are unchanged.
    """
    factor = torch.where(rows, _NON_NEGATIVE_RATE, 1.0)  # (R,)
    out = u.clone()
    out[:, _RATE_COLUMNS] *= factor[:, None]
    return out


def log_time(t: Tensor, scale: Tensor) -> Tensor:
    """The geometric-budget warp ``x = ln(1 + K t) / ln(1 + K)``; ``K = 0`` leaves ``t`` as is.

    ``t`` and ``scale`` (``K >= 0``) broadcast together. ``x`` maps ``[0, 1]`` onto itself,
    increasing and concave: a curve that saturates within one decade of ``x`` spreads its rise
    over about ``log10 K`` decades of ``t`` (with ``K = 1000``, ``x(0.001) = 0.10``,
    ``x(0.1) = 0.67``). The limit ``K -> 0`` is ``t``.
    """
    warped = scale > 0
    k = torch.where(warped, scale, torch.ones_like(scale))
    return torch.where(warped, torch.log1p(k * t) / torch.log1p(k), t)


def geometric_grid(step: Tensor, length: Tensor, scale: Tensor) -> Tensor:
    """The time of step ``s`` of ``n`` on a geometric grid from ``1 / K`` to 1.

    ``t = K^(-(n - s) / (n - 1))``: consecutive steps differ by the ratio ``K^(1 / (n - 1))``
    (``K = 256``, ``n = 17``: sqrt(2), the grid of LCDB's training sizes), the last step is
    ``t = 1`` and a one-step curve (``n = 1``) sits at ``t = 1``. ``step``, ``length`` (long,
    ``1 <= s <= n``) and ``scale`` (``K > 1``) broadcast together; returns float times in
    ``[1 / K, 1]``.
    """
    steps_left = (length - step).float() / (length - 1).clamp(min=1).float()
    return torch.exp(-steps_left * torch.log(scale))


def dips(
    y: Tensor, y0: Tensor, rate: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """Pull each observation towards the start value with probability ``rate``.

    ``y`` is (B, T) observations, ``y0`` and ``rate`` (B,) per task. A dipped observation becomes
    ``y0 + v (y - y0)`` with ``v ~ U(0, 1)``: between the start value and the curve, so it stays in
    ``[0, 1]``. Each observation dips on its own (the curve itself is unchanged), as a loss spike
    or an unstable evaluation does. Returns a new (B, T) tensor.
    """
    u = torch.rand((2, *y.shape), generator=generator, device=y.device, dtype=y.dtype)
    dipped = y0[:, None] + u[1] * (y - y0[:, None])
    return torch.where(u[0] < rate[:, None], dipped, y)


def late_onset(u0: Tensor, stall_share: Tensor, late_share: float) -> Tensor:
    """The onset time of each configuration, 0 for all but the late starters.

    A configuration is stalled when its asymptote uniform ``u0`` is below the task's
    ``stall_share`` (``stall``). The top ``late_share`` of that region, its edge towards the
    learning configurations, starts late instead: at ``onset = (s - u0) / (late_share s)``, in
    ``(0, 1]``, which grows smoothly from the edge inwards (``s`` = ``stall_share``). ``u0`` is
    (R,); ``stall_share`` broadcasts with it. Returns (R,) onsets.
    """
    depth = (stall_share - u0) / (late_share * stall_share).clamp(min=1e-12)  # 0 at the edge
    late = (u0 < stall_share) & (depth <= 1.0)
    return torch.where(late, depth.clamp(min=1e-6), torch.zeros_like(u0))


def start_late(t: Tensor, onset: Tensor) -> Tensor:
    """Curve time of a run that starts at ``onset``: 0 before it, then ``(t - on) / (1 - on)``.

    ``t`` and ``onset`` broadcast; ``onset = 0`` leaves ``t`` as is and ``onset = 1`` keeps the
    run at its start for good.
    """
    shifted = (t - onset) / (1.0 - onset).clamp(min=1e-6)
    return torch.where(onset > 0, shifted.clamp(min=0.0), t)


def stall(params: CurveParams, stalled: Tensor, *, noise_factor: float) -> CurveParams:
    """Make the ``stalled`` rows runs that never learn: flat at their start value, quieter.

    Real searches are full of such runs (a learning rate too small, a network dead at
    initialisation: on TaskSet 7-68% of the runs sit at ln 2 for all 50 evaluations), and the
    reference prior has none: its flattest curves are slow risers with typical noise, so a
    network trained on it keeps expecting a perfectly flat run to take off. A stalled row keeps its
    start value ``y0`` at every step (``yinf = y0``, no post-saturation bend) and its noise std is
    multiplied by ``noise_factor``. Fields are (R,) or (R, K); ``stalled`` is (R,) bool.
    """
    return replace(
        params,
        yinf=torch.where(stalled, params.y0, params.yinf),
        rate=torch.where(stalled[:, None], torch.ones_like(params.rate), params.rate),
        sigma=torch.where(stalled, params.sigma * noise_factor, params.sigma),
    )


def one_hot_block(configs: Tensor, offset: Tensor, size: Tensor) -> Tensor:
    """Turn slots ``offset[b] .. offset[b] + size[b] - 1`` of task ``b`` into a one-hot category.

    ``configs`` is (B, M, d) with uniforms in [0, 1]; the category of a row is
    ``floor(k u)`` of its uniform in the block's first slot, so it stays uniform over the ``k``
    categories. Tasks with ``size[b] == 0`` are unchanged. Returns a new (B, M, d) tensor.
    """
    b, m, d = configs.shape
    if d == 0:
        return configs.clone()
    col = torch.arange(d, device=configs.device)  # (d,)
    rel = col[None, :] - offset[:, None]  # (B, d): position in the block
    in_block = (rel >= 0) & (rel < size[:, None])  # (B, d)
    first = configs.gather(2, offset.clamp(max=d - 1)[:, None, None].expand(b, m, 1))  # (B, M, 1)
    cat = (first * size[:, None, None]).floor().long()
    cat = torch.minimum(cat, (size - 1).clamp(min=0)[:, None, None])  # u = 1 -> the last one
    onehot = (rel[:, None, :] == cat).to(configs.dtype)  # (B, M, d)
    return torch.where(in_block[:, None, :], onehot, configs)


def repeat_rows(configs: Tensor, replicates: Tensor) -> Tensor:
    """Give rows ``g r .. g r + r - 1`` of task ``b`` (``r = replicates[b]``) row ``g r``'s config.

    ``configs`` is (B, M, d); padded rows past a task's real rows keep whatever the source row
    holds and are masked by the caller. Returns a new (B, M, d) tensor.
    """
    b, m, d = configs.shape
    rows = torch.arange(m, device=configs.device)  # (M,)
    parent = (
        torch.div(rows[None, :], replicates[:, None], rounding_mode="floor") * replicates[:, None]
    )  # (B, M)
    return configs.gather(1, parent[:, :, None].expand(b, m, d))


class FTPFNPrior:
    """The FT-PFN prior over learning-curve tasks (implements ``priors.base.Prior``)."""

    def __init__(self, config: FTPFNPriorConfig | None = None) -> None:
        self.config = config or FTPFNPriorConfig()
        self.max_hps = self.config.max_hps
        self._tables: dict[torch.device, ECDFTable] = {}  # the ECDF table, per device

    def _table(self, device: torch.device) -> ECDFTable:
        """The ECDF table on ``device`` (moved there once)."""
        if device not in self._tables:
            self._tables[device] = load_table().to(device)
        return self._tables[device]

    def draw_tasks(self, batch_size: int, *, generator: torch.Generator) -> TaskDraw:
        """Draw the task-level variables ``d``, ``n``, ``y0``, ceiling and concentration."""
        cfg = self.config
        dev = generator.device
        if cfg.log_uniform_hps:
            span = math.log(cfg.max_task_hps - cfg.min_hps + 2)
            v = torch.rand(batch_size, generator=generator, device=dev)
            n_hps = (cfg.min_hps - 1 + torch.exp(span * v).floor().long()).clamp(
                cfg.min_hps, cfg.max_task_hps
            )
        else:
            n_hps = torch.randint(
                cfg.min_hps, cfg.max_task_hps + 1, (batch_size,), generator=generator, device=dev
            )
        lo, hi = math.log10(cfg.min_curve_length), math.log10(cfg.max_curve_length)
        u = torch.rand(batch_size, 5, generator=generator, device=dev)
        length = torch.exp(_LN10 * (lo + (hi - lo) * u[:, 0])).round().long()
        # Every token must be a distinct step of some curve: n * N >= T.
        length = length.clamp(min=-(-cfg.seq_len // cfg.n_configs), max=cfg.max_curve_length)
        y0 = torch.minimum(u[:, 1], u[:, 2])
        ymax = torch.where(
            u[:, 3] < cfg.ceiling_prob, torch.maximum(u[:, 1], u[:, 2]), torch.ones_like(y0)
        )
        c_lo, c_hi = cfg.min_log10_concentration, cfg.max_log10_concentration
        log_conc = _LN10 * (c_lo + (c_hi - c_lo) * u[:, 4])
        stall_share = None
        if cfg.stall_task_prob > 0:  # drawn only then: the reference prior's streams are unchanged
            v = torch.rand(batch_size, 2, generator=generator, device=dev)
            stall_share = torch.where(
                v[:, 0] < cfg.stall_task_prob, cfg.max_stall_share * v[:, 1], torch.zeros_like(y0)
            )
        cat_offset = cat_size = replicates = seed_std = None
        if cfg.categorical_task_prob > 0:  # drawn only then, as above
            v = torch.rand(batch_size, 3, generator=generator, device=dev)
            k = 2 + (v[:, 1] * (cfg.max_categories - 1)).long().clamp(max=cfg.max_categories - 2)
            cat_size = torch.where(v[:, 0] < cfg.categorical_task_prob, k, torch.zeros_like(k))
            n_hps = torch.maximum(n_hps, cat_size)
            cat_offset = (v[:, 2] * (n_hps - cat_size + 1)).long().clamp(min=0)
            cat_offset = torch.minimum(cat_offset, n_hps - cat_size)
        if cfg.replicate_task_prob > 0:
            v = torch.rand(batch_size, 3, generator=generator, device=dev)
            r = 2 + (v[:, 1] * (cfg.max_replicates - 1)).long().clamp(max=cfg.max_replicates - 2)
            replicates = torch.where(v[:, 0] < cfg.replicate_task_prob, r, torch.ones_like(r))
            lo_s, hi_s = cfg.min_log10_seed_std, cfg.max_log10_seed_std
            seed_std = torch.exp(_LN10 * (lo_s + (hi_s - lo_s) * v[:, 2]))
        monotone = None
        if cfg.monotone_task_prob > 0:
            v = torch.rand(batch_size, generator=generator, device=dev)
            monotone = v < cfg.monotone_task_prob
        time_scale = None
        if cfg.log_time_task_prob > 0:
            v = torch.rand(batch_size, 2, generator=generator, device=dev)
            lo_k, hi_k = cfg.min_log10_time_scale, cfg.max_log10_time_scale
            scale = torch.exp(_LN10 * (lo_k + (hi_k - lo_k) * v[:, 1]))
            time_scale = torch.where(v[:, 0] < cfg.log_time_task_prob, scale, torch.zeros_like(y0))
        geometric = None
        if time_scale is not None and cfg.geometric_grid_prob > 0:  # drawn only then, as above
            v = torch.rand(batch_size, generator=generator, device=dev)
            geometric = (v < cfg.geometric_grid_prob) & (time_scale > 0)
        dip_rate = None
        if cfg.dip_task_prob > 0:
            v = torch.rand(batch_size, 2, generator=generator, device=dev)
            dip_rate = torch.where(
                v[:, 0] < cfg.dip_task_prob, cfg.max_dip_rate * v[:, 1], torch.zeros_like(y0)
            )
        return TaskDraw(
            n_hps,
            length,
            y0,
            ymax,
            log_conc,
            stall_share,
            cat_offset,
            cat_size,
            replicates,
            seed_std,
            monotone,
            time_scale,
            geometric,
            dip_rate,
        )

    def config_parameters(
        self, tasks: TaskDraw, rows: Tensor, n_rows: int, *, generator: torch.Generator
    ) -> ConfigParameters:
        """Draw ``rows[b]`` configurations per task and push them through the task's network.

        Configurations are padded to (B, n_rows, D); parameters are packed over the real rows.
        """
        dev = generator.device
        b = rows.shape[0]
        d = self.config.max_hps
        hp_mask = torch.arange(d, device=dev) < tasks.n_hps[:, None]  # (B, D)
        row_mask = torch.arange(n_rows, device=dev) < rows[:, None]  # (B, M)
        d_used = int(tasks.n_hps.max()) if b > 0 else 0  # slots past it are 0 in every task
        used = row_mask[:, :, None] & hp_mask[:, None, :d_used]  # (B, M, d_used)
        n_used = int((rows * tasks.n_hps).sum())  # uniforms only for the used entries
        configs = torch.zeros(b, n_rows, d_used, device=dev).masked_scatter_(
            used, torch.rand(n_used, generator=generator, device=dev)
        )
        if tasks.cat_size is not None and tasks.cat_offset is not None:
            configs = one_hot_block(configs, tasks.cat_offset, tasks.cat_size) * used
        if tasks.replicates is not None:
            configs = repeat_rows(configs, tasks.replicates) * used
        configs = torch.nn.functional.pad(configs, (0, d - d_used))  # (B, M, D)
        mlp = draw_mlps(self.config.mlp, b, generator=generator)
        raw = evaluate_mlps(
            mlp,
            configs,
            rows=rows,
            hp_mask=hp_mask,
            n_outputs=N_PARAMS,
            config=self.config.mlp,
            generator=generator,
        )  # (B, M, 23)
        u = to_uniform(raw[row_mask], self._table(dev))  # (R, 23)
        task = torch.arange(b, device=dev).repeat_interleave(rows)  # (R,)
        if tasks.replicates is not None and tasks.seed_std is not None:
            # The seed effect, on repeated runs only (a task without repeats keeps its curves).
            eps = torch.randn(u.shape, generator=generator, device=dev)
            z = torch.special.ndtri(u) + tasks.seed_std[task, None] * eps
            moved = torch.special.ndtr(z).clamp(1e-6, 1.0 - 1e-6)
            u = torch.where((tasks.replicates > 1)[task, None], moved, u)
        if tasks.monotone is not None:
            u = no_decline(u, tasks.monotone[task])
        params = parameters_from_uniforms(u, y0=tasks.y0[task], ymax=tasks.ymax[task])
        stalled = onset = None
        if tasks.stall_share is not None:
            # The configurations whose asymptote would have been the lowest: smooth in λ.
            share = tasks.stall_share[task]
            stalled = u[:, 0] < share
            if self.config.late_start_share > 0:
                onset = late_onset(u[:, 0], share, self.config.late_start_share)
                if self.config.late_start_on_grid_only:  # elsewhere the whole region stalls
                    assert tasks.geometric is not None  # drawn: the config needs grid tasks
                    onset = torch.where(tasks.geometric[task], onset, torch.zeros_like(onset))
                stalled = stalled & (onset == 0)  # late starters keep their curve
            params = stall(params, stalled, noise_factor=self.config.stall_noise_factor)
        return ConfigParameters(configs, hp_mask, row_mask, params, stalled, onset)

    def sample_parameters(
        self, batch_size: int, n_rows: int, *, generator: torch.Generator
    ) -> ConfigParameters:
        """``n_rows`` random configurations per task with their curve parameters (for analysis)."""
        tasks = self.draw_tasks(batch_size, generator=generator)
        rows = torch.full((batch_size,), n_rows, device=generator.device)
        return self.config_parameters(tasks, rows, n_rows, generator=generator)

    def sample(
        self, batch_size: int, *, generator: torch.Generator, n_context: int | None = None
    ) -> CurveBatch:
        """Draw ``batch_size`` tasks of ``seq_len`` tokens (see ``priors.batch``).

        ``n_context`` (default: uniform in ``0..seq_len-1``, drawn from ``generator``) fixes the
        number of context tokens of every task of the batch; ``seq_len`` gives tasks without
        queries (every token observed: for looking at the curves, not for training).
        """
        cfg = self.config
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n_context is not None and not 0 <= n_context <= cfg.seq_len:
            raise ValueError(f"n_context={n_context} outside [0, seq_len={cfg.seq_len}]")
        dev = generator.device
        tasks = self.draw_tasks(batch_size, generator=generator)
        log_w = curve_log_weights(
            tasks.log_concentration, cfg.n_configs, cfg.weight_floor, generator=generator
        )  # (B, N)
        token_curve = race_tokens(log_w, tasks.length, cfg.seq_len, generator=generator)  # (B, T)
        if n_context is None:
            n_context = int(torch.randint(0, cfg.seq_len, (), generator=generator, device=dev))
        step = token_steps(token_curve, tasks.length, n_context, cfg.n_configs, generator=generator)

        # Relabel the touched curves compactly, in order of their original index.
        touched = torch.zeros(batch_size, cfg.n_configs, dtype=torch.bool, device=dev)
        touched.scatter_(1, token_curve, True)  # (B, N)
        compact = touched.long().cumsum(1) - 1  # (B, N)
        n_curves = touched.sum(1)  # (B,)
        c = int(n_curves.max())
        curve = compact.gather(1, token_curve)  # (B, T)

        cp = self.config_parameters(tasks, n_curves, c, generator=generator)
        t = step.float() / tasks.length[:, None].float()  # (B, T)
        if tasks.geometric is not None and tasks.time_scale is not None:
            # K > 1 wherever the grid is used; elsewhere a stand-in keeps the times finite.
            scale = torch.where(
                tasks.geometric, tasks.time_scale, torch.full_like(tasks.time_scale, 2.0)
            )
            on_grid = geometric_grid(step, tasks.length[:, None], scale[:, None])
            t = torch.where(tasks.geometric[:, None], on_grid, t)
        first_row = n_curves.cumsum(0) - n_curves  # (B,) packed index of each task's curve 0
        row = first_row[:, None] + curve  # (B, T) packed row of each token
        token_curves = prepare(cp.params).take(row)  # fields (B, T) or (K, B, T)
        t_curve = t if tasks.time_scale is None else log_time(t, tasks.time_scale[:, None])
        if cp.onset is not None:  # late starters: flat and quiet (as if stalled) until their onset
            onset = cp.onset.take(row)  # (B, T)
            quiet = t_curve <= onset
            sigma = token_curves.sigma * torch.where(quiet, cfg.stall_noise_factor, 1.0)
            token_curves = replace(token_curves, sigma=sigma)
            t_curve = start_late(t_curve, onset)
        y = observe(token_curves, t_curve, generator=generator)  # (B, T)
        if tasks.dip_rate is not None:
            y = dips(y, tasks.y0, tasks.dip_rate, generator=generator)
        return CurveBatch(
            configs=cp.configs,
            hp_mask=cp.hp_mask,
            curve_mask=cp.row_mask,
            curve=curve,
            t=t,
            y=y,
            n_context=n_context,
        )


def curve_log_weights(
    log_concentration: Tensor, n_configs: int, floor: float, *, generator: torch.Generator
) -> Tensor:
    """Log of normalised curve weights ``(c G + floor) / sum``, ``G ~ Gamma(c)`` per curve.

    Computed in log space (``G = Gamma(1 + c) U^(1/c)``) since ``G`` underflows for tiny ``c``.
    Returns (B, N) log-probabilities.
    """
    b = log_concentration.shape[0]
    dev = log_concentration.device
    conc = log_concentration.exp()[:, None].expand(b, n_configs).contiguous()  # (B, N)
    g1 = torch._standard_gamma(conc + 1.0, generator=generator)  # (B, N)
    u = torch.rand(b, n_configs, generator=generator, device=dev).clamp_min(1e-30)
    log_w = log_concentration[:, None] + g1.log() + u.log() / conc  # log(c G)
    if floor > 0:
        log_w = torch.logaddexp(log_w, torch.full_like(log_w, math.log(floor)))
    return log_w - log_w.logsumexp(1, keepdim=True)


def race_tokens(
    log_w: Tensor, length: Tensor, n_tokens: int, *, generator: torch.Generator
) -> Tensor:
    """Curve of each token, in draw order, when drawing slots without replacement.

    Curve ``c`` has ``length`` slots each of weight ``w_c / length``; drawing without replacement
    proportionally to weight is an exponential race of the slots. Up to a time ``tau`` the number of
    arrivals of curve ``c`` is ``Binomial(slots left, 1 - exp(-w_c tau / n))`` and their times are
    i.i.d. truncated exponentials, so the race is simulated exactly per curve; ``tau`` is chosen to
    give a few more than ``n_tokens`` arrivals and extended (memorylessly) in the rare case it gave
    fewer. Requires ``n_configs * length >= n_tokens``. Returns (B, T) long curve indices.
    """
    b, n_cfg = log_w.shape
    dev = log_w.device
    rate = (log_w.exp() / length[:, None].float()).double()  # (B, N) per-slot rates
    left = length[:, None].expand(b, n_cfg).double()  # (B, N) slots not yet arrived
    got = torch.zeros(b, dtype=torch.float64, device=dev)
    start = torch.zeros(b, dtype=torch.float64, device=dev)
    filled = torch.zeros(b, dtype=torch.long, device=dev)  # (B,) arrivals in earlier rounds
    times, tasks, curves, slots = [], [], [], []
    while True:
        need = (n_tokens - got).clamp(min=0)  # (B,)
        if not bool((need > 0).any()):
            break
        capacity = left.sum(1)
        target = torch.minimum(need + 3.0 * need.sqrt() + 5.0, capacity)  # (B,)
        span = _solve_span(rate, left, target)  # (B,): expected arrivals in span = target
        span = torch.where(need > 0, span, torch.zeros_like(span))
        span = torch.where(target >= capacity, torch.full_like(span, math.inf), span)
        prob = -torch.expm1(-rate * span[:, None])  # (B, N)
        prob = torch.where(span[:, None] > 0, prob, torch.zeros_like(prob))
        count = torch.binomial(left.float(), prob.float(), generator=generator).double()
        count = torch.minimum(count, left)
        left = left - count
        got = got + count.sum(1)
        flat = count.flatten().long()  # (B*N,)
        ids = torch.repeat_interleave(torch.arange(b * n_cfg, device=dev), flat)  # (A,)
        per_task = count.sum(1).long()  # (B,)
        task = torch.repeat_interleave(torch.arange(b, device=dev), per_task)  # (A,) = ids // N
        u = torch.rand(ids.shape[0], generator=generator, device=dev, dtype=torch.float64)
        r = rate.view(-1).index_select(0, ids)
        p = prob.view(-1).index_select(0, ids)
        times.append(start.index_select(0, task) - torch.log1p(-u * p) / r)
        tasks.append(task)
        curves.append(ids - task * n_cfg)
        # Slot of the arrival in its task's row: after the task's earlier arrivals.
        first = per_task.cumsum(0) - per_task - filled  # (B,)
        slots.append(torch.arange(ids.shape[0], device=dev) - first.index_select(0, task))
        filled = filled + per_task
        start = start + span.nan_to_num(posinf=0.0)
    # Every task's arrivals in one padded row each, then sorted by time within the row.
    task, slot = torch.cat(tasks), torch.cat(slots)
    width = int(filled.max())
    at = task * width + slot  # (A,) flat position in the (B, width) rows
    time = torch.full((b * width,), math.inf, dtype=torch.float64, device=dev)
    time = time.index_copy_(0, at, torch.cat(times)).view(b, width)
    curve = torch.zeros(b * width, dtype=torch.long, device=dev)
    curve = curve.index_copy_(0, at, torch.cat(curves)).view(b, width)
    order = torch.sort(time, dim=1, stable=True).indices[:, :n_tokens]  # (B, T)
    return curve.gather(1, order)


def _solve_span(rate: Tensor, left: Tensor, target: Tensor, iters: int = 14) -> Tensor:
    """Per task an ``s`` with ``sum_c left_c (1 - exp(-rate_c s))`` just above ``target``.

    Bisection in log s. The race is exact for any ``s``, so ``s`` only has to give about ``target``
    expected arrivals: single precision and a final bracket of 0.5% in ``s`` suffice. The left
    side is at most ``s * sum(left * rate)``, which bounds ``s`` from below.
    """
    lo = (target / (left * rate).sum(1).clamp_min(1e-300)).clamp_min(1e-300).log().float()  # (B,)
    hi = lo + 80.0
    rate32, left32, target32 = rate.float(), left.float(), target.float()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        neg_s = mid.exp().clamp_(max=1e30).neg_()  # (B,) finite, so rate 0 gives no NaN
        expected = (left32 * torch.expm1(rate32 * neg_s[:, None])).sum(1).neg_()  # (B,)
        below = expected < target32
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return hi.double().exp()


def _uniform_below(n: Tensor, generator: torch.Generator) -> Tensor:
    """A uniform integer in ``0..n-1`` for every entry of ``n`` (long, >= 1)."""
    v = (torch.rand(n.shape, generator=generator, device=n.device) * n).long()
    return torch.minimum(v, n - 1)


def token_steps(
    token_curve: Tensor,
    length: Tensor,
    n_context: int,
    n_configs: int,
    *,
    generator: torch.Generator,
) -> Tensor:
    """The step (1..n) of every token.

    A curve's context tokens (positions ``< n_context``) get steps ``1..k`` in sequence order; its
    ``q`` query tokens get ``q`` distinct steps drawn uniformly from ``k+1..n``. ``token_curve`` is
    (B, T) with at most ``length[b]`` tokens per curve. Returns (B, T) long.
    """
    b, t = token_curve.shape
    dev = token_curve.device
    key = token_curve + n_configs * torch.arange(b, device=dev)[:, None]  # (B, T) global curve
    key = key.flatten()
    order = torch.argsort(key, stable=True)  # tokens grouped by curve, in sequence order
    skey = key.index_select(0, order)
    pos = torch.arange(b * t, device=dev)
    new_group = torch.ones_like(skey, dtype=torch.bool)
    new_group[1:] = skey[1:] != skey[:-1]
    group_start = torch.where(new_group, pos, torch.zeros_like(pos)).cummax(0).values
    occ = pos - group_start  # occurrence index of the token within its curve
    is_ctx = (order % t) < n_context
    n_ctx_curve = torch.zeros(b * n_configs, dtype=torch.long, device=dev)
    n_ctx_curve.scatter_add_(0, skey, is_ctx.long())
    n_tok_curve = torch.zeros(b * n_configs, dtype=torch.long, device=dev)
    n_tok_curve.scatter_add_(0, skey, torch.ones_like(skey))
    k = n_ctx_curve.index_select(0, skey)  # context tokens of the token's curve
    q = n_tok_curve.index_select(0, skey) - k  # query tokens of the token's curve
    n = length.index_select(0, skey // n_configs)
    query = (~is_ctx).nonzero().squeeze(1)  # (Q,) sorted positions of the query tokens

    def at_query(x: Tensor) -> Tensor:
        return x.index_select(0, query)

    offset = _distinct_offsets(
        at_query(skey), at_query(occ - k), at_query(q), at_query(n - k), generator=generator
    )
    step_sorted = (occ + 1).index_copy_(0, query, at_query(k) + 1 + offset)
    return torch.empty_like(step_sorted).index_copy_(0, order, step_sorted).view(b, t)


def _distinct_offsets(
    group: Tensor, index: Tensor, count: Tensor, span: Tensor, *, generator: torch.Generator
) -> Tensor:
    """For groups of ``count`` items, distinct uniform offsets in ``0..span-1`` within each group.

    All tensors are (Q,), items of a group contiguous and ``index`` their rank in it. Dense groups
    (``span <= 4 count``) take the first ``count`` of a random permutation of their span; sparse
    ones draw i.i.d. and redraw duplicates (rejection, i.e. sampling without replacement).
    """
    out = torch.empty_like(group)
    dense = span <= 4 * count
    d_items, s_items = dense.nonzero().squeeze(1), (~dense).nonzero().squeeze(1)
    if d_items.numel() > 0:
        value = _permutation_offsets(index[d_items], span[d_items], generator=generator)
        out.index_copy_(0, d_items, value)
    if s_items.numel() > 0:
        value = _rejection_offsets(group[s_items], span[s_items], generator=generator)
        out.index_copy_(0, s_items, value)
    return out


def _permutation_offsets(index: Tensor, span: Tensor, *, generator: torch.Generator) -> Tensor:
    """``_distinct_offsets`` by the first entries of a random permutation of each group's span."""
    dev = index.device
    first = (index == 0).nonzero().squeeze(1)  # (G,) one item per group
    g_span = span.index_select(0, first)  # (G,)
    g_id = torch.repeat_interleave(torch.arange(g_span.shape[0], device=dev), g_span)
    keys = torch.rand(g_id.shape[0], generator=generator, device=dev, dtype=torch.float64) + g_id
    perm = torch.argsort(keys)  # per group a random permutation, groups in order
    g_start = torch.cumsum(g_span, 0) - g_span  # (G,)
    value = perm - g_start.index_select(0, g_id)  # offset within the group's span
    item_group = torch.cumsum(index == 0, 0) - 1  # item -> its group
    return value.index_select(0, g_start.index_select(0, item_group) + index)


def _rejection_offsets(group: Tensor, span: Tensor, *, generator: torch.Generator) -> Tensor:
    """``_distinct_offsets`` by i.i.d. draws, redrawing the later items of repeated values."""
    dev = group.device
    v = _uniform_below(span, generator)
    big = int(span.max()) + 1
    check = torch.arange(v.shape[0], device=dev)  # items of groups that may hold duplicates
    in_bad_group = torch.zeros(int(group.max()) + 1, dtype=torch.bool, device=dev)
    while True:
        key = group.index_select(0, check) * big + v.index_select(0, check)
        order = torch.argsort(key, stable=True)
        sk = key.index_select(0, order)
        dup = torch.zeros_like(check, dtype=torch.bool)
        dup[order[1:]] = sk[1:] == sk[:-1]  # later items of a value already taken
        redraw = check[dup]
        if redraw.numel() == 0:
            return v
        v[redraw] = _uniform_below(span.index_select(0, redraw), generator)
        # Only groups that had a duplicate can have one now.
        bad = group.index_select(0, redraw)
        in_bad_group[bad] = True
        check = check[in_bad_group.index_select(0, group.index_select(0, check))]
        in_bad_group[bad] = False
