"""The curve-set transformer: a PFN that reads many partial learning curves, predicts any of them.

Shape legend (batch first everywhere):
    B  tasks
    N  context tokens (observed points ``(curve, t, y)``)
    M  query tokens (``(curve, t)`` whose ``y`` is predicted)
    C  curves (configurations) of a task
    D  hyperparameter slots (``ModelConfig.max_hps``)
    H  attention heads, E = d_model // H per head
    K  output buckets of the bar distribution

Why not the FT-PFN design (one token per observation, full attention over all of them)? Its cost
grows with N² and its curve identity is an embedding table with 1001 rows. Here every curve has one
*latent* token instead:

1. each context token is embedded from ``(t, y)`` plus its curve's hyperparameters;
2. per layer, each curve latent pools its own tokens with attention restricted to that curve
   (a segment softmax: O(N)), the curve latents attend to each other (O(C²)), and every token is
   told its curve's new latent (O(N));
3. each query reads its own curve's latent and attends to the latents of all observed curves
   (O(M·C)), then a linear head gives K logits;
4. the *last-value head* (``ModelConfig.last_value_head``) adds learned bumps of fixed widths
   (0.002-0.04) around the query curve's last observed value to those logits, and the curve
   latents also read noise statistics of their curve. A plain linear head learns narrow peaks at
   arbitrary positions slowly, and flat or slowly moving real curves need exactly those; on
   TaskSet's real curves this lifted the log-likelihood from 1.9 to 3.0 within 200 CPU training
   steps from the same weights.

5. the *hyperparameter-distance bias* (``ModelConfig.hp_bias``) adds, per head, ``-λ_h d²(i, j)``
   to the attention logits of a query of curve ``i`` onto the latent of curve ``j``, ``d`` being
   the Euclidean distance of their configurations over the task's hyperparameter slots. It sits
   in the query blocks, where predictions read the other curves (in the curve blocks too, it made
   CPU training steps 60% slower). A GP reads "nearby configurations behave alike" from its
   kernel; a transformer has to learn it from pairs of embeddings, slowly: on LCDB, where each
   learner is run with ~10 seeds, the network without the bias hardly used the other seeds (its
   error on curves seen for one or two points was 5x the GP's). With the bias, one scalar per head
   says how local a head looks, and repeated runs of one configuration find each other at once.
   λ starts at 0, where the network computes what it did without the bias.

Curves without context (new configurations) read the observed ones but are never read, so the
prediction for one query does not depend on which other queries are asked.

Curve identity is just "which latent", so there is no cap on the number of configurations, and the
cost is linear in N and M for a fixed number of curves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from priors.batch import CurveBatch


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Size and shape of the curve-set transformer."""

    max_hps: int = 32  # D: hyperparameter slots; tasks with fewer are padded and masked
    d_model: int = 128  # width of tokens, curve latents and queries
    n_heads: int = 4  # attention heads (d_model must be divisible by it)
    n_layers: int = 4  # pool / cross-curve / broadcast rounds
    d_ff: int = 256  # hidden width of every feed-forward block
    n_query_layers: int = 2  # query -> curve-latent cross-attention blocks
    n_buckets: int = 1000  # K: logits of the bar distribution
    # Curve noise statistics, and logit bumps around each query's last observed value (see
    # _LastValueBumps). Needs uniform bucket borders on [0, 1]. False: the format-1 network.
    last_value_head: bool = True
    # Attention bias from the curves' hyperparameter distance (see _CrossAttention). False: the
    # network of checkpoint formats 1-2.
    hp_bias: bool = False

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "n_layers", "d_ff", "n_query_layers", "n_buckets"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_hps < 0:
            raise ValueError(f"ModelConfig.max_hps must be >= 0, got {self.max_hps}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"ModelConfig.d_model={self.d_model} is not divisible by n_heads={self.n_heads}"
            )

    def to_dict(self) -> dict:
        """JSON-serialisable fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**data)


# Per-curve summary statistics of the context fed to the curve latent (see _curve_stats): 7, plus
# 3 noise statistics with the last-value head.
_N_BASE_STATS = 7
_N_NOISE_STATS = 3


def n_curve_stats(config: ModelConfig) -> int:
    """Width of the per-curve statistics vector of a network with ``config``."""
    return _N_BASE_STATS + (_N_NOISE_STATS if config.last_value_head else 0)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class _FeedForward(nn.Module):
    """Pre-norm residual MLP block."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.mlp = _mlp(d_model, d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm(x))


class _SegmentPool(nn.Module):
    """Each curve latent attends to the context tokens of its own curve only.

    A segment softmax over the flattened tokens: linear in N, no (C, N) mask is ever built.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.h, self.e = n_heads, d_model // n_heads
        self.norm_z = nn.LayerNorm(d_model)
        self.norm_x = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, z: Tensor, x: Tensor, seg: Tensor, n_seg: int) -> Tensor:
        """z (B, C, d) latents; x (B, N, d) tokens; seg (B*N,) flat curve index per token, with
        ``n_seg - 1`` (= B*C) for padding tokens. Returns the updated z (B, C, d).

        Only the A curves that have tokens are projected: a curve without tokens pools nothing
        and just gets the output bias (thousands of candidate configurations cost no more).
        """
        b, c, d = z.shape
        z_flat = z.reshape(b * c, d)
        active = torch.zeros(n_seg, dtype=torch.bool, device=z.device).index_fill_(0, seg, True)
        idx = active[:-1].nonzero().squeeze(1)  # (A,) curves with tokens
        n_act = idx.numel()
        pos = torch.full((n_seg,), n_act, dtype=torch.long, device=z.device)
        pos[idx] = torch.arange(n_act, device=z.device)
        seg_a = pos[seg]  # (B*N,) index among the active curves; A for padding tokens
        q = self.q(self.norm_z(z_flat[idx])).reshape(n_act, self.h, self.e)  # (A, H, E)
        k, v = self.kv(self.norm_x(x)).reshape(-1, 2, self.h, self.e).unbind(1)  # (B*N, H, E)
        q_tok = torch.cat([q, q.new_zeros(1, self.h, self.e)])[seg_a]  # (B*N, H, E)
        score = (q_tok * k).sum(-1) / math.sqrt(self.e)  # (B*N, H)
        seg_h = seg_a[:, None].expand_as(score)
        peak = score.new_full((n_act + 1, self.h), -torch.inf)
        peak = peak.scatter_reduce(0, seg_h, score, reduce="amax", include_self=True)
        w = torch.exp(score - peak[seg_a])  # (B*N, H)
        denom = score.new_zeros(n_act + 1, self.h).index_add_(0, seg_a, w)  # (A+1, H)
        pooled = v.new_zeros(n_act + 1, self.h, self.e).index_add_(0, seg_a, w[..., None] * v)
        pooled = pooled[:-1] / denom[:-1, :, None].clamp_min(1e-20)  # (A, H, E)
        out = z_flat + self.out.bias  # curves without tokens: out(0) = bias
        out = out.index_add(0, idx, self.out(pooled.reshape(n_act, d)) - self.out.bias)
        return out.reshape(b, c, d)


# λ is stored divided by this gain: useful λ are 1-100 (one-hot categories differ by d² = 2), and
# Adam moves a parameter by about the learning rate per step, so an unscaled λ would need tens of
# thousands of steps to get there (measured: 0.02 after 300 steps at 2e-4).
_HP_SCALE_GAIN = 50.0


class _CrossAttention(nn.Module):
    """Pre-norm residual multi-head attention of ``x`` onto the observed curve latents.

    A learned *sink* token is always among the keys, so a task without any observed curve (a cold
    start) attends to the sink instead of producing NaN.

    With ``hp_bias``, head ``h`` adds ``-λ_h |c_q - c_k|²`` to the logit of query curve ``q`` and
    key curve ``k`` (their masked configurations ``c``; 0 for the sink), λ starting at 0. The bias
    rides in extra query/key columns (``λ [2 c_q, -1, -|c_q|²]·[c_k, |c_k|², 1]`` is exactly
    ``-λ |c_q - c_k|²``; see ``_distance_columns``), so no (L, S) bias tensor is built and no
    gradient flows through an attention mask.
    """

    def __init__(self, d_model: int, n_heads: int, hp_bias: bool = False) -> None:
        super().__init__()
        self.h, self.e = n_heads, d_model // n_heads
        self.norm_x = nn.LayerNorm(d_model)
        self.norm_m = nn.LayerNorm(d_model)
        self.sink = nn.Parameter(torch.zeros(1, 1, d_model))
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        # λ_h = _HP_SCALE_GAIN * hp_scale_h (see _HP_SCALE_GAIN).
        self.hp_scale = nn.Parameter(torch.zeros(n_heads)) if hp_bias else None

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        key_mask: Tensor | None,
        dist_cols: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """x (B, L, d) attends to memory (B, S, d) where key_mask (B, S) is True (None: every
        key counts).

        ``dist_cols``: the configurations' columns of queries and keys (``_distance_columns``),
        needed when the block has the distance bias.
        """
        b, n, d = x.shape
        memory = torch.cat([self.sink.expand(b, -1, -1), memory], dim=1)  # (B, S+1, d)
        q = self.q(self.norm_x(x)).reshape(b, n, self.h, self.e).transpose(1, 2)  # (B, H, L, E)
        kv = self.kv(self.norm_m(memory)).reshape(b, -1, 2, self.h, self.e)
        k, v = kv.permute(2, 0, 3, 1, 4)  # (B, H, S+1, E) each
        mask = None  # (B, 1, 1, S+1): the sink always counts
        if key_mask is not None:
            mask = torch.cat([key_mask.new_ones(b, 1), key_mask], dim=1)[:, None, None, :]
        scale = 1.0 / math.sqrt(self.e)
        if self.hp_scale is not None:
            if dist_cols is None:
                raise ValueError("this attention block has a distance bias: pass dist_cols")
            q, k = _with_distance_bias(q, k, dist_cols, _HP_SCALE_GAIN * self.hp_scale, scale)
        att = _attention(q, k, v, mask, scale)  # (B, H, L, E)
        return x + self.out(att.transpose(1, 2).reshape(b, n, d))


def _attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """``softmax(scale q kᵀ, masked) v``: q (B, H, L, F), k (B, H, S, F), v (B, H, S, E) with
    F >= E, mask (B, 1, 1, S) bool or None (no key masked). Returns (B, H, L, E).

    Fused attention kernels want one head size for q, k and v that is a multiple of 8; without it
    (F = E + D + 2 with the distance bias) PyTorch falls back to its unfused path, which on a CPU
    is slower for thousands of queries. So all three are zero-padded to a common multiple of 8:
    zero columns add nothing to q·k, and v's zero columns are cut from the output, so the result
    is the same.
    """
    e, f = v.shape[-1], q.shape[-1]
    width = -(-max(e, f) // 8) * 8
    if width != e or width != f:
        q, k = F.pad(q, (0, width - f)), F.pad(k, (0, width - f))
        v = F.pad(v, (0, width - e))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out[..., :e] if width != e else out


def _distance_columns(q_cfg: Tensor, k_cfg: Tensor) -> tuple[Tensor, Tensor]:
    """Columns whose dot product is ``-|c_q - c_k|²``, computed once for every query block.

    ``q_cfg`` (B, L, D), ``k_cfg`` (B, S, D) masked configurations. Returns (B, 1, L, D+2)
    ``[2 c_q, -1, -|c_q|²]`` and (B, 1, S+1, D+2) ``[c_k, |c_k|², 1]``, with zeros for the sink
    (key 0), so the sink's logit gets no bias.
    """
    xq = q_cfg[:, None]  # (B, 1, L, D)
    q_cols = torch.cat(
        [2.0 * xq, -torch.ones_like(xq[..., :1]), -(xq * xq).sum(-1, keepdim=True)], dim=-1
    )
    m = k_cfg[:, None]  # (B, 1, S, D)
    k_cols = torch.cat([m, (m * m).sum(-1, keepdim=True), torch.ones_like(m[..., :1])], dim=-1)
    return q_cols, F.pad(k_cols, (0, 0, 1, 0))


def _with_distance_bias(
    q: Tensor, k: Tensor, cols: tuple[Tensor, Tensor], lam: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """q (B, H, L, E), k (B, H, S+1, E) with ``cols`` (``_distance_columns``) appended, the query
    side times ``λ_h / scale``, so that ``scale · q'·k'`` adds ``-λ_h |c_q - c_k|²`` for real keys
    and 0 for the sink. Returns (q', k')."""
    b, h, n, _ = q.shape
    q_cols, k_cols = cols
    q_extra = (lam / scale)[None, :, None, None] * q_cols  # (B, H, L, D+2)
    k_extra = k_cols.expand(b, h, -1, -1).to(k.dtype)  # (B, H, S+1, D+2)
    return torch.cat([q, q_extra.to(q.dtype)], dim=-1), torch.cat([k, k_extra], dim=-1)


def _observed_memory(z: Tensor, observed: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The keys of curve attention: (memory (B, S, d), key_mask (B, S) or None: no key masked,
    kept curves (S,) or None: every curve is a key).

    With one task (inference) only the observed curves are kept, so attention costs C x C_observed
    instead of C x C (thousands of candidate configurations, few observed ones), and needs no
    mask; the result is the same, since masked keys get zero weight. Batches keep the dense
    masked form.
    """
    if z.shape[0] == 1:
        idx = observed[0].nonzero().squeeze(1)  # (S,)
        return z[:, idx], None, idx
    return z, observed, None


class _Layer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.pool = _SegmentPool(cfg.d_model, cfg.n_heads)
        self.curves = _CrossAttention(cfg.d_model, cfg.n_heads)
        self.ff_z = _FeedForward(cfg.d_model, cfg.d_ff)
        self.tell = nn.Linear(cfg.d_model, cfg.d_model)
        self.ff_x = _FeedForward(cfg.d_model, cfg.d_ff)

    def forward(
        self,
        z: Tensor,
        x: Tensor,
        seg: Tensor,
        n_seg: int,
        observed: Tensor,
        *,
        tokens: bool = True,
        isolated: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """The updated (z, x); x as it is without ``tokens`` (the last layer: nothing reads
        its tokens, so their update is skipped). ``isolated``: each curve reads only itself
        (see :meth:`CurveSetTransformer.encode`)."""
        z = self.pool(z, x, seg, n_seg)  # (B, C, d)
        if isolated:  # each curve a task of its own, its latent the only key besides the sink
            b, c, d = z.shape
            alone = z.reshape(b * c, 1, d)
            z = self.curves(alone, alone, observed.reshape(b * c, 1)).reshape(b, c, d)
        else:
            memory, key_mask, _ = _observed_memory(z, observed)
            z = self.curves(z, memory, key_mask)
        z = self.ff_z(z)
        if not tokens:
            return z, x
        b, c, d = z.shape
        z_flat = torch.cat([z.reshape(b * c, d), z.new_zeros(1, d)])
        x = x + self.tell(z_flat[seg]).reshape(x.shape)  # (B, N, d)
        x = self.ff_x(x)
        return z, x


@dataclass(frozen=True)
class CurveSetInput:
    """What the network reads: the padded tensors of B tasks (see the module shape legend).

    Padding: hyperparameter slots where ``hp_mask`` is False, curves where ``curve_mask`` is False,
    and tokens where ``ctx_mask`` / ``qry_mask`` is False are ignored.
    """

    configs: Tensor  # (B, C, D) in [0, 1]
    hp_mask: Tensor  # (B, D) bool
    curve_mask: Tensor  # (B, C) bool
    ctx_curve: Tensor  # (B, N) long
    ctx_t: Tensor  # (B, N) in (0, 1]
    ctx_y: Tensor  # (B, N) in [0, 1]
    ctx_mask: Tensor  # (B, N) bool
    qry_curve: Tensor  # (B, M) long
    qry_t: Tensor  # (B, M) in (0, 1]
    qry_mask: Tensor  # (B, M) bool

    @classmethod
    def from_batch(cls, batch: CurveBatch) -> tuple[CurveSetInput, Tensor]:
        """Split a prior batch at ``n_context`` into the network input and the targets (B, M)."""
        n = batch.n_context
        ones = torch.ones_like(batch.t, dtype=torch.bool)
        inp = cls(
            configs=batch.configs,
            hp_mask=batch.hp_mask,
            curve_mask=batch.curve_mask,
            ctx_curve=batch.curve[:, :n],
            ctx_t=batch.t[:, :n],
            ctx_y=batch.y[:, :n],
            ctx_mask=ones[:, :n],
            qry_curve=batch.curve[:, n:],
            qry_t=batch.t[:, n:],
            qry_mask=ones[:, n:],
        )
        return inp, batch.y[:, n:]


def _curve_stats(inp: CurveSetInput, seg: Tensor, n_seg: int, noise: bool) -> Tensor:
    """Summary of each curve's context, zeros for curves without context: (B, C, S) =

    [observed?, log1p(#points)/7, last t, last y, max y, mean y, min y] and, with ``noise``,
    [previous y, roughness 1, roughness 2]: the value before the last one (the last one if there is
    only one), and ``1 + ln(m + 1e-4) / ln(1e4)`` of the mean absolute first (roughness 1) and
    second (roughness 2) differences of the curve's values in time order, which are ~0 for a
    smooth, noise-free curve and grow with its noise.
    """
    b, c = inp.curve_mask.shape
    t, y = inp.ctx_t.reshape(-1), inp.ctx_y.reshape(-1)  # (B*N,)
    ones = torch.ones_like(t)
    count = t.new_zeros(n_seg).index_add_(0, seg, ones)
    total = t.new_zeros(n_seg).index_add_(0, seg, y)
    t_last = t.new_zeros(n_seg).scatter_reduce(0, seg, t, reduce="amax", include_self=True)
    y_max = t.new_zeros(n_seg).scatter_reduce(0, seg, y, reduce="amax", include_self=True)
    y_min = t.new_ones(n_seg).scatter_reduce(0, seg, y, reduce="amin", include_self=True)
    is_last = t >= t_last[seg]
    y_last = t.new_zeros(n_seg).index_add_(0, seg, torch.where(is_last, y, 0.0))
    y_last = y_last / t.new_zeros(n_seg).index_add_(0, seg, is_last.to(t.dtype)).clamp_min(1)
    seen = count > 0
    columns = [
        seen.to(t.dtype),
        torch.log1p(count) / 7.0,
        t_last,
        y_last,
        y_max,
        total / count.clamp_min(1),
        torch.where(seen, y_min, 0.0),
    ]
    if noise:
        columns += _noise_stats(t, y, seg, n_seg, y_last)
    stats = torch.stack(columns, dim=-1)[:-1]  # (B*C, S): drop the padding segment
    return stats.reshape(b, c, len(columns))


def _noise_stats(t: Tensor, y: Tensor, seg: Tensor, n_seg: int, y_last: Tensor) -> list[Tensor]:
    """[previous y, roughness 1, roughness 2], each (n_seg,); see :func:`_curve_stats`."""
    # by curve, then time (t in (0, 1]); stable, so tied times keep their order in any batch
    order = torch.argsort(seg.double() * 2.0 + t.double(), stable=True)
    s_seg, s_y = seg[order], y[order]  # (L,)
    same1 = s_seg[1:] == s_seg[:-1]  # (L-1,) consecutive points of one curve
    same2 = same1[1:] & same1[:-1]  # (L-2,) three consecutive points of one curve
    d1 = torch.where(same1, (s_y[1:] - s_y[:-1]).abs(), 0.0)
    d2 = torch.where(same2, (s_y[2:] - 2.0 * s_y[1:-1] + s_y[:-2]).abs(), 0.0)
    zeros = y.new_zeros(n_seg)
    m1 = zeros.index_add(0, s_seg[1:], d1) / zeros.index_add(
        0, s_seg[1:], same1.to(y.dtype)
    ).clamp_min(1)
    m2 = zeros.index_add(0, s_seg[2:], d2) / zeros.index_add(
        0, s_seg[2:], same2.to(y.dtype)
    ).clamp_min(1)
    # The point before each curve's last one: the last sorted point of a curve is followed by
    # another curve (or the end); it has a predecessor of its own curve where same1 holds.
    last_sorted = torch.cat([s_seg[1:] != s_seg[:-1], same1.new_ones(1)])  # (L,)
    has_prev = last_sorted & torch.cat([same1.new_zeros(1), same1])  # (L,)
    idx = has_prev.nonzero().squeeze(1)
    y_prev = y_last.clone().index_copy_(0, s_seg[idx], s_y[idx - 1])
    scale = math.log(1e4)
    return [y_prev, 1.0 + torch.log(m1 + 1e-4) / scale, 1.0 + torch.log(m2 + 1e-4) / scale]


class _LastValueBumps(nn.Module):
    """Adds learned bumps around each query's last observed value to its logits.

    Real learning curves are often flat or slowly moving, and the best forecast is then a narrow
    peak at (or just beside) the last value, whose width is the curve's noise. A linear head on a
    d_model-wide vector learns such 0.001-wide peaks at any position only slowly; here the query
    picks amplitudes ``g`` (B, M, 2J) of fixed one-sided Gaussian bumps
    ``exp(-(o / w_j)^2)`` for ``o >= 0`` and ``o < 0`` (o = bucket centre - last value, widths
    ``w_j`` in score units) that are added to the logits of the buckets within ``±window`` of the
    last value's bucket. The amplitudes' layer starts at zero, so adding this head to a trained
    network leaves its output unchanged. Assumes K uniform buckets on [0, 1].
    """

    widths = (0.002, 0.005, 0.01, 0.02, 0.04)
    window = 0.128  # score units each side (3.2 of the widest width)

    def __init__(self, d_model: int, n_buckets: int) -> None:
        super().__init__()
        self.k = n_buckets
        self.w = max(1, math.ceil(self.window * n_buckets))
        self.amplitude = nn.Linear(d_model, 2 * len(self.widths))
        nn.init.zeros_(self.amplitude.weight)
        nn.init.zeros_(self.amplitude.bias)
        o = torch.arange(-self.w, self.w + 1, dtype=torch.float32)[:, None] / n_buckets
        g = torch.exp(-((o / torch.tensor(self.widths)) ** 2))  # (2W+1, J)
        table = torch.cat([g * (o >= 0), g * (o < 0)], dim=1)  # (2W+1, 2J)
        self.register_buffer("table", table.T.contiguous(), persistent=False)  # (2J, 2W+1)

    def forward(self, logits: Tensor, q: Tensor, y_last: Tensor, observed: Tensor) -> Tensor:
        """logits (B, M, K); q (B, M, d); y_last (B, M) in [0, 1]; observed (B, M) bool.

        Only the R queries of observed curves are touched (at inference most queries are new
        configurations, which get no bump). ``logits`` is changed in place (no (B*M, K) copy) and
        returned, reshaped: pass a tensor nothing else keeps.
        """
        b, m, k = logits.shape
        rows = observed.reshape(-1).nonzero().squeeze(1)  # (R,)
        if rows.numel() == 0:
            return logits
        g = self.amplitude(q.reshape(b * m, -1)[rows])  # (R, 2J)
        bump = (g @ self.table.to(g.dtype)).to(logits.dtype)  # (R, 2W+1)
        k0 = (y_last.reshape(-1)[rows] * k).long().clamp(0, k - 1)  # (R,) last value's bucket
        idx = k0[:, None] + torch.arange(-self.w, self.w + 1, device=k0.device)  # (R, 2W+1)
        inside = (idx >= 0) & (idx < k)
        flat = logits.reshape(b * m, k)
        sub = flat[rows].scatter_add(-1, idx.clamp(0, k - 1), bump * inside)  # (R, K)
        return flat.index_copy_(0, rows, sub).reshape(b, m, k)  # in place: no (B*M, K) copy


class CurveSetTransformer(nn.Module):
    """The PFN: ``forward(inp) -> logits (B, M, K)`` over the bar distribution's buckets."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed_config = _mlp(2 * config.max_hps, d, d)
        self.n_stats = n_curve_stats(config)
        self.embed_stats = _mlp(self.n_stats, d, d)
        self.embed_token = _mlp(4, d, d)
        self.token_config = nn.Linear(d, d)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.n_layers))
        self.embed_query = _mlp(6, d, d)
        self.query_curve = nn.Linear(d, d)
        self.query_layers = nn.ModuleList(
            nn.ModuleList(
                [
                    _CrossAttention(d, config.n_heads, config.hp_bias),
                    _FeedForward(d, config.d_ff),
                ]
            )
            for _ in range(config.n_query_layers)
        )
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, config.n_buckets))
        self.bumps = _LastValueBumps(d, config.n_buckets) if config.last_value_head else None

    def forward(self, inp: CurveSetInput) -> Tensor:
        """Logits (B, M, K) of every query's value: ``decode(inp, encode(inp))``."""
        return self.decode(inp, self.encode(inp))

    def encode(self, inp: CurveSetInput, *, isolated: bool = False) -> CurveEncoding:
        """The context layers: every curve's latent and statistics. Reads no query field.

        ``isolated``: no curve reads another, so each curve's encoding is the one it would get
        as the only curve of a task with its configuration. Many curves encoded alone (the
        single-curve view) then share one task, without padding each to the longest.
        """
        b, c, d_hp = inp.configs.shape
        if d_hp != self.config.max_hps:
            raise ValueError(
                f"configs have {d_hp} hyperparameter slots, model expects {self.config.max_hps}"
            )
        n_seg = b * c + 1  # flat curve index; the last one collects padding tokens
        offset = torch.arange(b, device=inp.ctx_curve.device)[:, None] * c
        seg = torch.where(inp.ctx_mask, inp.ctx_curve + offset, n_seg - 1).reshape(-1)  # (B*N,)

        hp = inp.hp_mask.to(inp.configs.dtype)[:, None, :].expand_as(inp.configs)  # (B, C, D)
        cfg = self.embed_config(torch.cat([inp.configs * hp, hp], dim=-1))  # (B, C, d)
        stats = _curve_stats(inp, seg, n_seg, self.config.last_value_head)  # (B, C, S)
        z = cfg + self.embed_stats(stats)  # (B, C, d) curve latents

        t, y = inp.ctx_t, inp.ctx_y
        tok = torch.stack([t, y, torch.log(t.clamp_min(1e-4)), y * t], dim=-1)  # (B, N, 4)
        cfg_flat = torch.cat([cfg.reshape(b * c, -1), cfg.new_zeros(1, cfg.shape[-1])])
        x = self.embed_token(tok) + self.token_config(cfg_flat[seg]).reshape(b, -1, cfg.shape[-1])

        # Only curves with context are read by others: a curve seen in the queries alone adds no
        # information, and this way every query's prediction is independent of the other queries.
        observed = inp.curve_mask & (stats[..., 0] > 0)  # (B, C)
        for i, layer in enumerate(self.layers):
            last = i + 1 == len(self.layers)
            z, x = layer(z, x, seg, n_seg, observed, tokens=not last, isolated=isolated)
        return CurveEncoding(z=z, stats=stats, observed=observed)

    def decode(self, inp: CurveSetInput, enc: CurveEncoding) -> Tensor:
        """The query layers: logits (B, M, K) of the queries of ``inp`` given the tasks' curves
        ``enc`` (from :meth:`encode`). Reads only the configurations, ``hp_mask`` and the query
        fields of ``inp``, so ``enc`` may be assembled from encodings of other inputs with the
        same curves."""
        z, stats, observed = enc.z, enc.stats, enc.observed
        c = z.shape[1]
        if inp.configs.shape[:2] != z.shape[:2]:
            raise ValueError(
                f"configs {tuple(inp.configs.shape[:2])} and encoding {tuple(z.shape[:2])} "
                "differ in tasks or curves"
            )
        # Queries: own curve's latent and statistics, plus where t_q lies relative to its context.
        q_idx = inp.qry_curve.clamp(0, c - 1)
        own = torch.gather(z, 1, q_idx[..., None].expand(-1, -1, z.shape[-1]))  # (B, M, d)
        own_stats = torch.gather(stats, 1, q_idx[..., None].expand(-1, -1, self.n_stats))
        tq = inp.qry_t
        t_last, y_last = own_stats[..., 2], own_stats[..., 3]
        q_feat = torch.stack(
            [tq, torch.log(tq.clamp_min(1e-4)), tq - t_last, own_stats[..., 0], t_last, y_last],
            dim=-1,
        )  # (B, M, 6)
        q = self.embed_query(q_feat) + self.query_curve(own)  # (B, M, d)
        memory, key_mask, kept = _observed_memory(z, observed)
        dist_cols = None  # the distance bias's columns, shared by every query block
        if self.config.hp_bias:
            hp = inp.hp_mask.to(inp.configs.dtype)[:, None, :]  # (B, 1, D)
            cfg_m = inp.configs * hp  # (B, C, D) masked configurations
            if kept is not None:  # one task: drop the unused slots, whose columns are all 0
                cfg_m = cfg_m[..., inp.hp_mask[0]]  # (1, C, D_used): fewer attention columns
            q_cfg = torch.gather(cfg_m, 1, q_idx[..., None].expand(-1, -1, cfg_m.shape[-1]))
            k_cfg = cfg_m if kept is None else cfg_m.index_select(1, kept)  # the kept keys'
            dist_cols = _distance_columns(q_cfg, k_cfg)
        for attend, ff in self.query_layers:
            q = ff(attend(q, memory, key_mask, dist_cols))
        logits = self.head(q)  # (B, M, K)
        if self.bumps is not None:
            logits = self.bumps(logits, q, y_last, own_stats[..., 0] > 0)
        return logits


@dataclass(frozen=True)
class CurveEncoding:
    """The curves of B tasks after the context layers (:meth:`CurveSetTransformer.encode`)."""

    z: Tensor  # (B, C, d) curve latents
    stats: Tensor  # (B, C, S) curve statistics (see _curve_stats)
    observed: Tensor  # (B, C) bool: curves with context points (the keys of the queries)


def upgrade_state_dict(
    state: dict[str, Tensor], source: ModelConfig, target: ModelConfig
) -> dict[str, Tensor]:
    """Weights of a ``source`` network as a ``target`` network that computes the same function.

    Supported: adding the last-value head (``source.last_value_head`` False, ``target`` True)
    and/or the hyperparameter-distance bias (``hp_bias`` False -> True), every other field equal.
    The new statistics enter with zero weights, the bumps' amplitudes and the biases' λ are
    zero, so the upgraded network's output equals the source's, and training can go on from it.

    Raises:
        ValueError: any other difference between the configs.
    """
    if source == target:
        return dict(state)
    added = replace(
        source,
        last_value_head=source.last_value_head or target.last_value_head,
        hp_bias=source.hp_bias or target.hp_bias,
    )
    if added != target:  # a field differs, or the target drops a part
        raise ValueError(f"cannot upgrade weights of {source} to {target}")
    out = dict(state)
    w = state["embed_stats.0.weight"]  # (d, 7) or (d, 10)
    if target.last_value_head and not source.last_value_head:
        out["embed_stats.0.weight"] = torch.cat([w, w.new_zeros(w.shape[0], _N_NOISE_STATS)], dim=1)
        n_amp = 2 * len(_LastValueBumps.widths)
        out["bumps.amplitude.weight"] = w.new_zeros(n_amp, target.d_model)
        out["bumps.amplitude.bias"] = w.new_zeros(n_amp)
    if target.hp_bias and not source.hp_bias:
        for i in range(target.n_query_layers):
            out[f"query_layers.{i}.0.hp_scale"] = w.new_zeros(target.n_heads)
    return out
