"""Random tanh MLPs, one fresh network per task, evaluated for many tasks at once.

FT-PFN maps a configuration's hyperparameters to its curve parameters through such a network, so
that nearby configurations get similar curves. Each task draws its own depth, width, weight scale
and noise levels; the networks of a batch are evaluated together with batched matrix products over
a few buckets of tasks of similar size (padding to the bucket's largest width, rounded up to a
multiple of 8, and row count), so only small per-task copies of the weights are looped over in
Python. Each bucket draws its normals in one call just before it runs (they stay in cache), and
the standardisation of the inputs is folded into the first layer's weights and bias.

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

import itertools
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
# Bucket widths are padded to a multiple of this: matrix products of such sizes run faster.
_ALIGN = 8
# Most tasks in one bucket (bounds the cost of choosing buckets for large batches).
_MAX_BUCKET = 16


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


def _aligned(width: int) -> int:
    """``width`` rounded up to a multiple of ``_ALIGN``."""
    return -(-width // _ALIGN) * _ALIGN


def _buckets(rows: list[int], width: list[int], layers: list[int]) -> list[list[int]]:
    """Partition tasks into buckets that are cheap to pad together.

    Tasks are sorted by row count; a dynamic programme splits that order into contiguous runs
    minimising the padded work (max rows x (max width^2 + elementwise cost x max width) x the
    tasks' layers, as finished tasks drop out of the running prefix) plus a fixed cost per bucket.
    Widths count padded to ``_ALIGN``; buckets hold at most ``_MAX_BUCKET`` tasks.
    """
    width = [_aligned(w) for w in width]
    order = sorted(range(len(rows)), key=lambda i: (rows[i], width[i]))
    n = len(order)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        max_w = sum_l = 0
        max_r = rows[order[end - 1]]
        for start in range(end - 1, max(end - _MAX_BUCKET, 0) - 1, -1):
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
    Single precision suffices: a gap is at most ``log(2^-24) / log(1 - p)``, far in the tail.
    """
    device = generator.device
    log_keep = math.log1p(-p)
    parts = []
    next_start = 0
    while next_start < count:
        expected = (count - next_start) * p
        n = int(expected + 6.0 * math.sqrt(expected) + 16.0)
        u = torch.rand(n, generator=generator, device=device)  # (n,) in [0, 1)
        gap = torch.log1p(u.neg_()).div_(log_keep).long().add_(1)  # (n,) Geometric(p) on 1, 2, ...
        pos = gap.cumsum_(0).add_(next_start - 1)  # (n,)
        parts.append(pos)
        next_start = int(pos[-1]) + 1
    pos = torch.cat(parts) if len(parts) > 1 else parts[0]  # (n,) increasing
    return pos[: int(torch.searchsorted(pos, count))]


def _split_dropped_positions(
    counts: list[int], p: float, generator: torch.Generator
) -> list[Tensor]:
    """``_dropped_positions`` of ranges of ``counts`` positions each, drawn as one range."""
    total = sum(counts)
    if p == 0.0 or total == 0:
        return [torch.empty(0, dtype=torch.long, device=generator.device) for _ in counts]
    pos = _dropped_positions(total, p, generator)  # (n,) sorted
    starts = list(itertools.accumulate(counts, initial=0))
    cuts = torch.searchsorted(pos, torch.tensor(starts, device=pos.device)).tolist()
    return [pos[cuts[j] : cuts[j + 1]] - starts[j] for j in range(len(counts))]


@dataclass(frozen=True)
class _Bucket:
    """Tasks evaluated together, padded to common sizes, and the layout of their normal draw.

    The bucket draws its normals at once: the hidden weights of its tasks (one contiguous range,
    so dropout is one pass), then its (k, P) block of input, bias and output parameters, then its
    (k, M, O) output noise. Offsets are into that draw.
    """

    tasks: list[int]  # task indices, deepest network first
    rows: int  # M of the bucket: the most rows of its tasks
    width: int  # H of the bucket
    inputs: int  # D of the bucket: the most inputs of its tasks (0: constant input)
    running: list[int]  # per hidden layer, how many tasks (a prefix of ``tasks``) still run
    hid_at: list[int]  # per task of the bucket, where its (L, w, w) hidden weights start
    params_at: int  # the hidden weights end here
    out_noise_at: int
    size: int  # normals in all

    def param_sizes(self, n_outputs: int) -> list[int]:
        """Per task: input weights, input bias, hidden biases, output weights, output bias."""
        return _param_sizes(self.inputs, self.width, len(self.running), n_outputs)


def _param_sizes(inputs: int, width: int, n_hidden: int, n_outputs: int) -> list[int]:
    """Sizes of a padded task's input weights and bias, hidden biases, output weights and bias."""
    return [inputs * width, width, n_hidden * width, width * n_outputs, n_outputs]


def _plan(
    rows: list[int], width: list[int], hidden: list[int], n_in: list[int], n_outputs: int
) -> list[_Bucket]:
    """Bucket the tasks that have rows (``_buckets``) and lay out each bucket's normal draw."""
    live = [i for i in range(len(rows)) if rows[i] > 0]
    groups = _buckets(
        [rows[i] for i in live], [width[i] for i in live], [hidden[i] + 2 for i in live]
    )
    buckets = []
    for g in groups:
        tasks = sorted((live[j] for j in g), key=lambda i: -hidden[i])
        hid_at = [0] + list(itertools.accumulate(hidden[i] * width[i] ** 2 for i in tasks))
        b_rows, b_width = max(rows[i] for i in tasks), _aligned(max(width[i] for i in tasks))
        b_inputs, n_hidden = max(n_in[i] for i in tasks), hidden[tasks[0]]
        n_params = sum(_param_sizes(b_inputs, b_width, n_hidden, n_outputs))
        out_noise_at = hid_at[-1] + len(tasks) * n_params
        buckets.append(
            _Bucket(
                tasks=tasks,
                rows=b_rows,
                width=b_width,
                inputs=b_inputs,
                running=[sum(1 for i in tasks if hidden[i] > j) for j in range(n_hidden)],
                hid_at=hid_at[:-1],
                params_at=hid_at[-1],
                out_noise_at=out_noise_at,
                size=out_noise_at + len(tasks) * b_rows * n_outputs,
            )
        )
    return buckets


@dataclass(frozen=True)
class _BucketParams:
    """Padded network parameters of one bucket in the sigmoid form (module docstring).

    Hidden units past a task's width may hold any finite value: the weights that read them (rows
    of ``w_hid`` and ``w_out``) are zero. The input standardisation is folded into ``w_in`` and
    ``b_in``, and the weights that read inputs past a task's ``d`` are zero.
    """

    w_in: Tensor  # (k, D, H)
    b_in: Tensor  # (k, 1, H)
    w_hid: Tensor  # (k, L, H, H)
    b_hid: Tensor  # (k, L, 1, H)
    w_out: Tensor  # (k, H, O)
    b_out: Tensor  # (k, 1, O)


def _bucket_params(
    bucket: _Bucket,
    z: Tensor,
    std2: Tensor,
    idx: Tensor,
    *,
    width: list[int],
    hidden: list[int],
    n_in: list[int],
    std: list[float],
    n_outputs: int,
    dropout: float,
) -> _BucketParams:
    """Scale the bucket's standard normals ``z`` (its draw, ``_Bucket``) into padded parameters.

    ``std2`` (B,) is twice every task's weight std, ``idx`` (k,) the bucket's tasks on the device;
    the lists hold every task's sizes and weight std.
    """
    k, h, d, n_l = len(bucket.tasks), bucket.width, bucket.inputs, len(bucket.running)
    block = z[bucket.params_at : bucket.out_noise_at].view(k, -1)  # (k, P)
    block.mul_(std2.index_select(0, idx)[:, None])
    w_in, b_in, b_hid, w_out, b_out = block.split(bucket.param_sizes(n_outputs), dim=1)
    w_in, b_in, b_hid = w_in.view(k, d, h), b_in.view(k, 1, h), b_hid.view(k, n_l, 1, h)
    w_out, b_out = w_out.view(k, h, n_outputs), b_out.view(k, 1, n_outputs)
    # Hidden layers: each task's weights into its (n, w, w) corner, zeros around it up to (n, H, H);
    # layers past a task's depth are never read (the running tasks are a prefix) and stay unset.
    w_hid = torch.empty(k, n_l, h, h, device=z.device)
    keep_scale = 2.0 / math.sqrt(1.0 - dropout)
    for q, i in enumerate(bucket.tasks):
        w, n, at = width[i], hidden[i], bucket.hid_at[q]
        scale = keep_scale * 2.0 * std[i]
        weights = z[at : at + n * w * w].view(n, w, w)
        torch.mul(weights, scale, out=w_hid[q, :n, :w, :w])
        b_hid[q, :n, :, :w].sub_(weights.sum(1, keepdim=True), alpha=0.5 * scale)
        if w < h:
            w_hid[q, :n, :w, w:] = 0.0
            w_hid[q, :n, w:] = 0.0
            w_out[q, w:] = 0.0  # no output reads the padded units
        if n_in[i] < d:
            w_in[q, n_in[i] :] = 0.0  # the padded inputs are read by nothing
    # x W with x standardised = x (W / std) - mean colsum(W / std): fold it into the input layer.
    w_in.mul_(1.0 / _INPUT_STD)
    b_in.sub_(w_in.sum(1, keepdim=True), alpha=_INPUT_MEAN)
    b_out.sub_(w_out.sum(1, keepdim=True)).mul_(0.5)
    return _BucketParams(w_in, b_in, w_hid, b_hid, w_out, b_out)


def _pool_view(pool: Tensor, shift: int, shape: tuple[int, int, int]) -> Tensor:
    """A contiguous window of the noise pool, starting at ``shift``, viewed as ``shape``."""
    _, m, h = shape
    return pool.as_strided(shape, (m * h, h, 1), pool.storage_offset() + shift)


def _forward(
    bucket: _Bucket,
    params: _BucketParams,
    x: Tensor,
    pool: Tensor,
    shifts: list[int],
    noise: Tensor,
) -> Tensor:
    """Run the bucket's networks on its rows ``x`` (k, M, D); returns (k, M, O) raw outputs.

    ``noise`` (k, 1, 1) is the doubled pre-activation noise std; layer ``j`` (0: input layer)
    reads its noise from ``pool`` at ``shifts[j]``. Finished tasks (the running set is a prefix)
    keep their last state.
    """
    k, m, h = len(bucket.tasks), bucket.rows, bucket.width
    hid = torch.addcmul(params.b_in, _pool_view(pool, shifts[0], (k, m, h)), noise)  # (k, M, H)
    if bucket.inputs > 0:
        hid.baddbmm_(x, params.w_in)
    torch.sigmoid_(hid)
    spare = torch.empty_like(hid)  # ping-pong buffer: no copies of the running tasks
    weights, biases = params.w_hid.unbind(1), params.b_hid.unbind(1)  # per layer (k, H, H), ...
    a_prev = k
    for j, a in enumerate(bucket.running):
        if a < a_prev:  # finished tasks keep their last state in both buffers
            spare[a:a_prev].copy_(hid[a:a_prev])
            hid, spare, noise = hid[:a], spare[:a], noise[:a]
            a_prev = a
        w, b = (weights[j], biases[j]) if a == k else (weights[j][:a], biases[j][:a])
        torch.addcmul(b, _pool_view(pool, shifts[j + 1], (a, m, h)), noise, out=spare)
        torch.sigmoid_(spare.baddbmm_(hid, w))  # (a, M, H)
        hid, spare = spare, hid
    if a_prev < k:  # the full (k, M, H) state again: ``hid`` is a prefix view of its buffer
        hid = hid.as_strided((k, m, h), (m * h, h, 1))
    return torch.baddbmm(params.b_out, hid, params.w_out)  # (k, M, O)


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
    n_in = hp_mask.sum(1)  # (B,)
    if not bool((hp_mask == (torch.arange(d_total, device=device) < n_in[:, None])).all()):
        raise ValueError("hp_mask must select a prefix of the input slots of every task")
    rows_l, width_l = rows.tolist(), draw.width.tolist()
    hidden_l, std_l = (draw.layers - 2).tolist(), draw.weight_std.tolist()
    n_in_l, std2 = n_in.tolist(), 2.0 * draw.weight_std
    buckets = _plan(rows_l, width_l, hidden_l, n_in_l, o)
    p = config.weight_dropout
    # Deliberate approximation: the tiny (std ~1e-3) pre-activation noise of every layer of every
    # bucket is read from one pool at its own random offset (a view, no copy), so noise of
    # different layers, buckets and tasks is shifted copies of the same numbers rather than fully
    # independent. Each value is still N(0, std^2); only the largest bucket's pool is drawn.
    pool_size = max((len(b.tasks) * b.rows * b.width for b in buckets), default=0)
    pool = torch.randn(pool_size + _POOL_SLACK, generator=generator, device=device)
    n_shifts = sum(len(b.running) + 1 for b in buckets)  # one per layer with noise
    u_shift = torch.rand(n_shifts, generator=generator, device=device).tolist()

    dropped = _split_dropped_positions([b.params_at for b in buckets], p, generator)

    out = torch.zeros(b_total, m_total, o, device=device)
    for bucket, drop in zip(buckets, dropped, strict=True):
        k, m = len(bucket.tasks), bucket.rows
        idx = torch.tensor(bucket.tasks, device=device)
        z = torch.randn(bucket.size, generator=generator, device=device)
        z.index_fill_(0, drop, 0.0)  # dropout of the hidden weights
        params = _bucket_params(
            bucket,
            z,
            std2,
            idx,
            width=width_l,
            hidden=hidden_l,
            n_in=n_in_l,
            std=std_l,
            n_outputs=o,
            dropout=p,
        )
        room = pool.shape[0] - k * m * bucket.width  # >= _POOL_SLACK; smaller buckets range further
        shifts = [int(u * (room + 1)) for u in u_shift[: len(bucket.running) + 1]]
        u_shift = u_shift[len(shifts) :]
        noise = 2.0 * draw.preactivation_noise.index_select(0, idx).view(k, 1, 1)
        y = _forward(bucket, params, x[idx, :m, : bucket.inputs], pool, shifts, noise)
        out_noise = _pool_view(z, bucket.out_noise_at, (k, m, o))
        y.addcmul_(out_noise, draw.output_noise.index_select(0, idx).view(k, 1, 1))
        out[idx, :m] = y
    return out.mul_((torch.arange(m_total, device=device) < rows[:, None])[:, :, None])
