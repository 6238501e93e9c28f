"""Random tanh MLPs, one fresh network per task, evaluated for many tasks at once.

FT-PFN maps a configuration's hyperparameters to its curve parameters through such a network, so
that nearby configurations get similar curves. Each task draws its own depth, width, weight scale
and noise levels; the networks of a batch are evaluated together with batched matrix products over
a few buckets of tasks of similar size (padding to the bucket's largest width and row count), so
there is no Python loop over tasks.

Shape legend:
    B  tasks        M  rows (configurations) per task, padded       D  input slots, padded
    H  hidden width, padded within a bucket                         O  outputs
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Inputs in [0, 1] are standardised as a U(0, 1) variable before the first layer.
_INPUT_MEAN = 0.5
_INPUT_STD = math.sqrt(1.0 / 12.0)
# Fixed cost of one bucket, in multiply-adds, when choosing buckets (kernel-launch overhead).
_BUCKET_OVERHEAD = 40_000_000
# Extra noise drawn per bucket, so each layer can read the pool at its own random offset.
_POOL_SLACK = 4096


@dataclass(frozen=True, kw_only=True)
class RandomMLPConfig:
    """The distribution of the per-task random networks (ranges are inclusive)."""

    min_layers: int = 8  # linear layers, input and output layer included
    max_layers: int = 15
    min_width: int = 36  # hidden units per layer
    max_width: int = 149
    min_weight_std: float = 0.089  # std of weights and biases, drawn uniformly per task
    max_weight_std: float = 0.193
    weight_dropout: float = 0.145  # fraction of hidden-to-hidden weights set to zero
    min_preactivation_noise: float = 0.0003  # std of Gaussian noise added before every tanh
    max_preactivation_noise: float = 0.0014
    min_output_noise: float = 0.0004  # std of Gaussian noise added to the outputs
    max_output_noise: float = 0.0013

    def __post_init__(self) -> None:
        for lo, hi in (
            ("min_layers", "max_layers"),
            ("min_width", "max_width"),
            ("min_weight_std", "max_weight_std"),
            ("min_preactivation_noise", "max_preactivation_noise"),
            ("min_output_noise", "max_output_noise"),
        ):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo}={getattr(self, lo)} exceeds {hi}={getattr(self, hi)}")
        if self.min_layers < 2:
            raise ValueError(
                f"min_layers must be >= 2 (input and output layer), got {self.min_layers}"
            )
        if self.min_width < 1:
            raise ValueError(f"min_width must be >= 1, got {self.min_width}")
        if self.min_weight_std < 0 or self.min_preactivation_noise < 0 or self.min_output_noise < 0:
            raise ValueError(
                "min_weight_std, min_preactivation_noise, min_output_noise must be >= 0"
            )
        if not 0.0 <= self.weight_dropout < 1.0:
            raise ValueError(f"weight_dropout must be in [0, 1), got {self.weight_dropout}")


@dataclass(frozen=True)
class MLPDraw:
    """The task-level draws of a batch of random networks (weights are drawn when evaluating)."""

    layers: Tensor  # (B,) long: linear layers
    width: Tensor  # (B,) long: hidden width
    weight_std: Tensor  # (B,) float
    preactivation_noise: Tensor  # (B,) float
    output_noise: Tensor  # (B,) float


def _uniform(lo: float, hi: float, b: int, generator: torch.Generator) -> Tensor:
    u = torch.rand(b, generator=generator, device=generator.device)
    return lo + (hi - lo) * u


def draw_mlps(config: RandomMLPConfig, batch_size: int, *, generator: torch.Generator) -> MLPDraw:
    """Draw depth, width, weight scale and noise levels of ``batch_size`` random networks."""
    device = generator.device
    return MLPDraw(
        layers=torch.randint(
            config.min_layers,
            config.max_layers + 1,
            (batch_size,),
            generator=generator,
            device=device,
        ),
        width=torch.randint(
            config.min_width,
            config.max_width + 1,
            (batch_size,),
            generator=generator,
            device=device,
        ),
        weight_std=_uniform(config.min_weight_std, config.max_weight_std, batch_size, generator),
        preactivation_noise=_uniform(
            config.min_preactivation_noise, config.max_preactivation_noise, batch_size, generator
        ),
        output_noise=_uniform(
            config.min_output_noise, config.max_output_noise, batch_size, generator
        ),
    )


def _buckets(rows: list[int], width: list[int], layers: list[int]) -> list[list[int]]:
    """Partition tasks into buckets that are cheap to pad together.

    Tasks are sorted by row count; a dynamic programme splits that order into contiguous runs
    minimising the padded work (bucket size x max rows x max width^2 x max layers) plus a fixed
    cost per bucket.
    """
    order = sorted(range(len(rows)), key=lambda i: (rows[i], width[i]))
    n = len(order)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        max_w = max_l = 0
        for start in range(end - 1, -1, -1):
            i = order[start]
            max_w = max(max_w, width[i])
            max_l = max(max_l, layers[i])
            max_r = rows[order[end - 1]]
            cost = best[start] + (end - start) * max_r * max_w * max_w * max_l + _BUCKET_OVERHEAD
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups = []
    end = n
    while end > 0:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


def _scatter_normal(
    mask: Tensor, scale: Tensor, generator: torch.Generator, dropout: float = 0.0
) -> Tensor:
    """A tensor of ``mask``'s shape: ``N(0, scale^2)`` where ``mask``, 0 elsewhere.

    ``scale`` broadcasts against ``mask`` (one value per task); random numbers are drawn only for
    the masked-in entries. With ``dropout`` a fraction of them is zeroed and the rest rescaled.
    """
    count = int(mask.sum())
    z = torch.randn(count, generator=generator, device=mask.device)
    if dropout > 0.0:
        keep = torch.rand(count, generator=generator, device=mask.device) >= dropout
        z = z * keep / math.sqrt(1.0 - dropout)
    out = torch.zeros(mask.shape, device=mask.device).masked_scatter_(mask, z)
    return out * scale


def _pool_view(pool: Tensor, shift: int, shape: tuple[int, int, int]) -> Tensor:
    """A contiguous window of the noise pool, starting at ``shift``, viewed as ``shape``."""
    return pool[shift : shift + math.prod(shape)].view(shape)


def evaluate_mlps(
    draw: MLPDraw,
    x: Tensor,
    *,
    rows: Tensor,
    hp_mask: Tensor,
    n_outputs: int,
    config: RandomMLPConfig,
    generator: torch.Generator,
) -> Tensor:
    """Evaluate one freshly drawn random network per task on that task's rows.

    ``x`` (B, M, D) holds inputs in [0, 1]; only the first ``rows[b]`` rows of task ``b`` and its
    ``hp_mask[b]`` slots are used (other inputs are ignored, a task without hyperparameters gets
    a constant input). Returns (B, M, O) raw outputs; rows past ``rows[b]`` are 0.
    """
    device = x.device
    b_total, m_total, d = x.shape
    out = torch.zeros(b_total, m_total, n_outputs, device=device)
    rows_l = rows.tolist()
    width_l = draw.width.tolist()
    layers_l = draw.layers.tolist()
    x = (x - _INPUT_MEAN) / _INPUT_STD
    for group in _buckets(rows_l, width_l, layers_l):
        if max(rows_l[i] for i in group) == 0:
            continue
        # Deepest first, so the tasks still running at any hidden layer are a prefix.
        group = sorted(group, key=lambda i: -layers_l[i])
        idx = torch.tensor(group, device=device)
        k = len(group)
        mg = max(rows_l[i] for i in group)
        hg = max(width_l[i] for i in group)
        n_hidden = max(layers_l[i] for i in group) - 2
        width = draw.width[idx]  # (k,)
        hidden_left = draw.layers[idx] - 2  # (k,)
        std = draw.weight_std[idx].view(k, 1, 1)
        pre_noise = draw.preactivation_noise[idx].view(k, 1, 1)

        unit = torch.arange(hg, device=device) < width[:, None]  # (k, H)
        in_mask = hp_mask[idx][:, :, None] & unit[:, None, :]  # (k, D, H)
        w_in = _scatter_normal(in_mask, std, generator)  # (k, D, H)
        b_in = _scatter_normal(unit[:, None, :], std, generator)  # (k, 1, H)
        layer_live = torch.arange(n_hidden, device=device) < hidden_left[:, None]  # (k, L)
        hid_mask = layer_live[:, :, None, None] & unit[:, None, :, None] & unit[:, None, None, :]
        w_hid = _scatter_normal(
            hid_mask, std[:, None], generator, config.weight_dropout
        )  # (k, L, H, H)
        b_hid = _scatter_normal(
            layer_live[:, :, None] & unit[:, None, :], std, generator
        )  # (k, L, H)
        w_out = _scatter_normal(
            unit[:, :, None].expand(k, hg, n_outputs), std, generator
        )  # (k, H, O)
        b_out = _scatter_normal(
            torch.ones(k, 1, n_outputs, dtype=torch.bool, device=device), std, generator
        )  # (k, 1, O)

        # Pre-activation noise: one pool per bucket, read at a random offset for every layer
        # (a view, no copy); the shifts decorrelate layers and the draw stays N(0, std^2).
        size = k * mg * hg
        pool = torch.randn(size + _POOL_SLACK, generator=generator, device=device)
        shifts = torch.randint(
            0, _POOL_SLACK + 1, (n_hidden + 1,), generator=generator, device=device
        ).tolist()

        h = torch.baddbmm(b_in, x[idx, :mg], w_in)  # (k, M, H)
        h = torch.tanh_(h.addcmul_(pre_noise, _pool_view(pool, shifts[0], (k, mg, hg))))
        spare = torch.empty_like(h)  # ping-pong buffer: no copies of the running tasks
        live = hidden_left.tolist()
        a_prev = k
        for j in range(n_hidden):
            a = sum(1 for n in live if n > j)  # tasks still running: a prefix
            if a < a_prev:  # finished tasks keep their last state in both buffers
                spare[a:a_prev].copy_(h[a:a_prev])
                a_prev = a
            nxt = spare[:a]
            torch.baddbmm(b_hid[:a, j, None], h[:a], w_hid[:a, j], out=nxt)  # (a, M, H)
            torch.tanh_(nxt.addcmul_(pre_noise[:a], _pool_view(pool, shifts[j + 1], (a, mg, hg))))
            h, spare = spare, h
        y = torch.baddbmm(b_out, h, w_out)  # (k, M, O)
        y.add_(
            draw.output_noise[idx].view(k, 1, 1)
            * torch.randn(y.shape, generator=generator, device=device)
        )
        row_live = torch.arange(mg, device=device) < rows[idx][:, None]  # (k, M)
        out[idx, :mg] = y * row_live[:, :, None]
    return out
