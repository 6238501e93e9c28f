"""Random tanh MLPs, one fresh network per task, evaluated for many tasks at once.

FT-PFN maps a configuration's hyperparameters to its curve parameters through such a network, so
that nearby configurations get similar curves. Each task draws its own depth, width, weight scale
and noise levels; the networks of a batch are evaluated together with batched matrix products over
a few buckets of tasks of similar size (padding to the bucket's largest width and row count), so
only small per-task copies of the weights are looped over in Python.

The networks run in a sigmoid form that is exactly the tanh network: ``tanh(z) = 2 sigmoid(2z) - 1``
and a unit's output ``2 s - 1`` feeds the next layer, so with ``s = sigmoid(2z)`` the next
pre-activation (doubled) is ``2 b - 2 colsum(W) + s (4 W)``. Folding those factors into the drawn
weights, biases and noise levels leaves one ``sigmoid`` per unit, which is several times cheaper
than ``tanh`` on the CPU.

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
# Cost of one bucket when choosing buckets, in multiply-adds: a fixed overhead (kernel launches,
# per-task weight copies) and the elementwise work per padded hidden unit (noise, sigmoid).
_BUCKET_OVERHEAD = 40_000_000
_UNIT_COST = 64
# Extra noise in the shared pool, so each layer can read it at its own random offset.
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
    minimising the padded work (max rows x (max width^2 + elementwise cost x max width) x the
    tasks' layers, as finished tasks drop out of the running prefix) plus a fixed cost per bucket.
    """
    order = sorted(range(len(rows)), key=lambda i: (rows[i], width[i]))
    n = len(order)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        max_w = sum_l = 0
        max_r = rows[order[end - 1]]
        for start in range(end - 1, -1, -1):
            i = order[start]
            max_w = max(max_w, width[i])
            sum_l += layers[i]
            cost = best[start] + max_r * (max_w + _UNIT_COST) * max_w * sum_l + _BUCKET_OVERHEAD
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups = []
    end = n
    while end > 0:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


def _dropped_positions(count: int, p: float, generator: torch.Generator) -> Tensor:
    """Sorted positions in ``0..count-1``, each dropped independently with probability ``p``.

    The gaps between dropped positions are geometric, so only about ``p * count`` uniforms are
    drawn instead of one per position (more in the rare case that they fall short of ``count``).
    """
    device = generator.device
    log_keep = math.log1p(-p)
    parts = []
    next_start = 0
    while next_start < count:
        expected = (count - next_start) * p
        n = int(expected + 6.0 * math.sqrt(expected) + 16.0)
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        gap = (torch.log1p(-u) / log_keep).floor_().long() + 1  # (n,) Geometric(p) on 1, 2, ...
        pos = gap.cumsum_(0).add_(next_start - 1)  # (n,)
        parts.append(pos)
        next_start = int(pos[-1]) + 1
    pos = torch.cat(parts)  # (n,) increasing
    return pos[: int(torch.searchsorted(pos, count))]


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
    a constant input). ``hp_mask[b]`` must be a prefix of the slots. Returns (B, M, O) raw
    outputs; rows past ``rows[b]`` are 0.
    """
    device = x.device
    b_total, m_total, d_total = x.shape
    o = n_outputs
    out = torch.zeros(b_total, m_total, o, device=device)
    n_in = hp_mask.sum(1)  # (B,)
    if not bool((hp_mask == (torch.arange(d_total, device=device) < n_in[:, None])).all()):
        raise ValueError("hp_mask must select a prefix of the input slots of every task")
    rows_l = rows.tolist()
    width_l = draw.width.tolist()
    hidden_l = (draw.layers - 2).tolist()
    n_in_l = n_in.tolist()
    std_l = draw.weight_std.tolist()
    out_noise_l = draw.output_noise.tolist()
    live = [i for i in range(b_total) if rows_l[i] > 0]
    groups = _buckets(
        [rows_l[i] for i in live], [width_l[i] for i in live], [hidden_l[i] + 2 for i in live]
    )
    # Deepest first within a bucket, so the tasks still running at any hidden layer are a prefix.
    groups = [sorted((live[j] for j in g), key=lambda i: -hidden_l[i]) for g in groups]

    # All weights, biases, output noise and the pre-activation noise pool of the batch from one
    # normal draw: the hidden weights of every task first (one contiguous range for dropout),
    # then the rest task by task, then one pool shared by all buckets.
    hid_size = {i: hidden_l[i] * width_l[i] ** 2 for i in live}
    rest_size = {
        i: (n_in_l[i] + 1 + hidden_l[i] + o) * width_l[i] + o * (1 + rows_l[i]) for i in live
    }
    hid_start, rest_start = {}, {}
    offset = 0
    for i in live:
        hid_start[i], offset = offset, offset + hid_size[i]
    n_hid = offset
    for i in live:
        rest_start[i], offset = offset, offset + rest_size[i]
    pool_size = max(
        (len(g) * max(rows_l[i] for i in g) * max(width_l[i] for i in g) for g in groups),
        default=0,
    )
    pool_at = offset
    z = torch.randn(offset + pool_size + _POOL_SLACK, generator=generator, device=device)
    # Deliberate approximation: the tiny (std ~1e-3) pre-activation noise of every layer of every
    # bucket is read from this one pool at its own random offset (a view, no copy), so noise of
    # different layers, buckets and tasks is shifted copies of the same numbers rather than fully
    # independent. Each value is still N(0, std^2); only the largest bucket's pool is drawn.
    pool = z[pool_at:]
    p = config.weight_dropout
    if p > 0.0 and n_hid > 0:
        z.index_fill_(0, _dropped_positions(n_hid, p, generator), 0.0)

    x = (x - _INPUT_MEAN) / _INPUT_STD
    for group in groups:
        idx = torch.tensor(group, device=device)
        k = len(group)
        mg = max(rows_l[i] for i in group)
        hg = max(width_l[i] for i in group)
        dg = max(1, max(n_in_l[i] for i in group))
        n_hidden = max(hidden_l[i] for i in group)

        # Padded parameters in the sigmoid form (module docstring); zero outside each network.
        w_in = torch.zeros(k, dg, hg, device=device)
        b_in = torch.zeros(k, 1, hg, device=device)
        w_hid = torch.zeros(k, n_hidden, hg, hg, device=device)
        b_hid = torch.zeros(k, n_hidden, 1, hg, device=device)
        w_out = torch.zeros(k, hg, o, device=device)
        b_out = torch.zeros(k, 1, o, device=device)
        y_noise = []
        for q, i in enumerate(group):
            w, n_l, d, s = width_l[i], hidden_l[i], n_in_l[i], std_l[i]
            hid = z[hid_start[i] : hid_start[i] + hid_size[i]]
            torch.mul(hid.view(n_l, w, w), 4.0 * s / math.sqrt(1.0 - p), out=w_hid[q, :n_l, :w, :w])
            sizes = (d * w, w, n_l * w, w * o, o, rows_l[i] * o)
            rest = z[rest_start[i] : rest_start[i] + rest_size[i]].split(sizes)
            torch.mul(rest[0].view(d, w), 2.0 * s, out=w_in[q, :d, :w])
            torch.mul(rest[1].view(1, w), 2.0 * s, out=b_in[q, :, :w])
            torch.mul(rest[2].view(n_l, 1, w), 2.0 * s, out=b_hid[q, :n_l, :, :w])
            torch.mul(rest[3].view(w, o), 2.0 * s, out=w_out[q, :w])
            torch.mul(rest[4].view(1, o), s, out=b_out[q])
            y_noise.append(rest[5].view(rows_l[i], o))
        b_hid.sub_(w_hid.sum(2, keepdim=True), alpha=0.5)  # (k, L, 1, H)
        b_out.sub_(w_out.sum(1, keepdim=True), alpha=0.5)  # (k, 1, O)
        noise = 2.0 * draw.preactivation_noise[idx].view(k, 1, 1)

        # Pre-activation noise: the shared pool at a random offset for every layer.
        room = pool.shape[0] - k * mg * hg  # >= _POOL_SLACK; smaller buckets range further
        shifts = torch.randint(0, room + 1, (n_hidden + 1,), generator=generator, device=device)
        shifts = shifts.tolist()

        h = torch.addcmul(b_in, _pool_view(pool, shifts[0], (k, mg, hg)), noise)  # (k, M, H)
        torch.sigmoid_(h.baddbmm_(x[idx, :mg, :dg], w_in))
        spare = torch.empty_like(h)  # ping-pong buffer: no copies of the running tasks
        a_prev = k
        for j in range(n_hidden):
            a = sum(1 for i in group if hidden_l[i] > j)  # tasks still running: a prefix
            if a < a_prev:  # finished tasks keep their last state in both buffers
                spare[a:a_prev].copy_(h[a:a_prev])
                a_prev = a
            nxt = spare[:a]
            pre = _pool_view(pool, shifts[j + 1], (a, mg, hg))
            torch.addcmul(b_hid[:a, j], pre, noise[:a], out=nxt)  # (a, M, H)
            torch.sigmoid_(nxt.baddbmm_(h[:a], w_hid[:a, j]))
            h, spare = spare, h
        y = torch.baddbmm(b_out, h, w_out)  # (k, M, O)
        for q, i in enumerate(group):
            r = rows_l[i]
            torch.add(y[q, :r], y_noise[q], alpha=out_noise_l[i], out=out[i, :r])
    return out
