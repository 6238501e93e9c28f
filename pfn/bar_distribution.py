"""The bar distribution: the PFN's output, a piecewise-constant density over K buckets.

The network outputs logits over K buckets with borders ``b_0 < b_1 < ... < b_K``; bucket ``k`` is
``[b_k, b_{k+1})`` and has probability ``p_k = softmax(logits)_k`` spread uniformly over it, so the
density is ``p(y) = p_k / (b_{k+1} - b_k)`` there (Müller et al., 2022). Every method below is
exact for that density (no sampling or numeric integration) and vectorised over leading dims.

Shape legend:
    K    buckets (``borders`` has K + 1 entries)
    ...  any leading batch shape of the logits, e.g. ``(B, M)`` for B tasks with M queries each

Arguments:
    logits     (..., K)  float32 or bfloat16 (any float dtype); computed in float32
    y, threshold, q      a Python float or a tensor broadcastable with ``logits.shape[:-1]``
    results    (...)     float32, ``...`` being the broadcast of ``logits.shape[:-1]`` and the
                         shape of ``y`` / ``threshold`` / ``q``

Targets here are scores in [0, 1] (higher is better), so the default support is [0, 1] with no
unbounded tails; any finite borders are supported. Values outside ``[b_0, b_K]`` have zero
density (``log_prob`` is ``-inf`` there); ``nll``, the training loss, clamps them onto the support
(see there).

**Edge atoms** (``edge_atoms=True``): the priors clip every observation to [0, 1]
(``priors.curves.observe``), so a score often sits exactly on a bound (a run at 100% accuracy, a
diverged run at 0), and in the preset prior 95% of the top bucket's mass is exactly 1 and 86% of
the bottom bucket's exactly 0. With edge atoms the first and last buckets are read as point masses
at ``b_0`` and ``b_K`` by everything that describes the distribution (``cdf``, ``quantile``, the
moments, ``pi``, ``ei``, ``sample``); ``nll`` keeps the bucket density the network was trained on.
Without them a central interval never reaches the bound: the shipped network, given a run at 100%
for its last four of ten steps, put 14% of its mass in the top bucket and a 90% interval whose top
was 0.99965, excluding the value the run already had.
Tensor thresholds and values are float32, so one within float32 resolution of a bound
(``1 - 1e-9``) is read as the bound itself (``pi`` 0 above it, ``cdf`` 1 there); a single Python
float or 0-d threshold is kept in float64 (the one-threshold paths of ``pi`` and ``ei``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["BarDistribution", "equal_mass_borders", "uniform_borders"]

# Rows per block of :meth:`BarDistribution._expect`: (256, K) float32 temporaries, 1 MB at K = 1000.
_EXPECT_ROWS = 256


def _check_n_buckets(n_buckets: int) -> None:
    if isinstance(n_buckets, bool) or not isinstance(n_buckets, int) or n_buckets < 1:
        raise ValueError(f"n_buckets must be a positive int, got {n_buckets!r}")


def _check_range(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite, got low={low!r}, high={high!r}")
    if not low < high:
        raise ValueError(f"low must be smaller than high, got low={low!r}, high={high!r}")


def _check_borders(borders: Tensor, name: str = "borders") -> None:
    if borders.ndim != 1 or borders.numel() < 2:
        raise ValueError(f"{name} must be 1-D with at least 2 entries, got {tuple(borders.shape)}")
    if not bool(torch.isfinite(borders).all()):
        raise ValueError(f"{name} must be finite")
    if not bool((borders.diff() > 0).all()):
        raise ValueError(f"{name} must be strictly increasing (in float32)")


def uniform_borders(n_buckets: int, low: float = 0.0, high: float = 1.0) -> Tensor:
    """Borders of ``n_buckets`` equal-width buckets on ``[low, high]`` (FT-PFN: 1000 on [0, 1]).

    Returns:
        (K + 1,) float32 on the CPU, ``[low, ..., high]``.

    Raises:
        ValueError: ``n_buckets`` is not a positive int, or ``low``/``high`` are not finite with
            ``low < high``.
    """
    _check_n_buckets(n_buckets)
    _check_range(low, high)
    borders = torch.linspace(low, high, n_buckets + 1, dtype=torch.float64).float()  # (K + 1,)
    _check_borders(borders)
    return borders


def equal_mass_borders(
    samples: Tensor,
    n_buckets: int,
    low: float = 0.0,
    high: float = 1.0,
    *,
    min_width: float | None = None,
) -> Tensor:
    """Borders that put about equal mass of ``samples`` in each bucket (as LC-PFN's, minus tails).

    The interior borders are the ``k / K`` quantiles of ``samples`` (linear interpolation, as
    ``numpy.quantile``); the first and last are pinned to ``low`` and ``high``. Samples outside
    ``[low, high]`` are clipped onto it first. Atoms in the samples (e.g. many scores exactly 0 or
    1) make quantiles tie; every bucket is then widened to at least ``min_width`` by pushing tied
    borders up (and, near ``high``, down), so the result is strictly increasing and still starts at
    ``low`` and ends at ``high``. The many narrow buckets at an atom give it a high density, as
    they should.

    Args:
        samples: any shape, flattened; finite values.
        n_buckets: K, the number of buckets.
        low, high: the support.
        min_width: the smallest bucket width; must satisfy ``min_width * K < high - low``.
            Default ``(high - low) * min(1e-5, 0.5 / K)``, far above float32 resolution on [0, 1].

    Returns:
        (K + 1,) float32 on the CPU, strictly increasing, ``[low, ..., high]``.

    Raises:
        ValueError: empty or non-finite ``samples``, invalid ``n_buckets``/``low``/``high``, or a
            ``min_width`` that is not positive or leaves no room for K buckets.
    """
    _check_n_buckets(n_buckets)
    _check_range(low, high)
    if not isinstance(samples, Tensor):
        raise ValueError(f"samples must be a Tensor, got {type(samples).__name__}")
    if samples.numel() == 0:
        raise ValueError("samples must not be empty")
    k = n_buckets
    span = high - low
    if min_width is None:
        min_width = span * min(1e-5, 0.5 / k)
    if not (math.isfinite(min_width) and 0.0 < min_width and min_width * k < span):
        raise ValueError(
            f"min_width must be positive with min_width * n_buckets < high - low, got {min_width!r}"
        )
    # A one-off on the CPU in float64: exact enough, and works for every device's samples.
    x = samples.detach().to("cpu", torch.float64).flatten()  # (S,)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("samples must be finite (no NaN or inf)")
    x = x.clamp(low, high).sort().values  # (S,)

    # Quantile at level i/K: linear interpolation between order statistics (numpy's default).
    levels = torch.arange(1, k, dtype=torch.float64) / k  # (K - 1,)
    pos = levels * (x.numel() - 1)  # (K - 1,)
    lo_idx = pos.floor().long()
    hi_idx = pos.ceil().long()
    inner = x[lo_idx] + (pos - lo_idx) * (x[hi_idx] - x[lo_idx])  # (K - 1,)
    b = torch.cat([x.new_tensor([low]), inner, x.new_tensor([high])])  # (K + 1,)

    # Enforce b_i - b_{i-1} >= m with the least movement: first push borders up from `low`
    # (c_i = max_{j<=i}(b_j - j m) + i m), then pull them down from `high`
    # (d_i = min_{j>=i}(c_j - j m) + i m). Both keep every gap >= m, and m K < span keeps d_0 = low.
    i_m = torch.arange(k + 1, dtype=torch.float64) * min_width  # (K + 1,)
    c = torch.cummax(b - i_m, dim=0).values + i_m
    c[-1] = high
    d = torch.flip(torch.cummin(torch.flip(c - i_m, [0]), dim=0).values, [0]) + i_m
    d[0], d[-1] = low, high
    borders = d.float()  # (K + 1,)
    if not bool((borders.diff() > 0).all()):
        raise ValueError(f"min_width={min_width!r} is below float32 resolution; increase it")
    return borders


class BarDistribution(nn.Module):
    """A piecewise-constant density over fixed bucket borders, parameterised by logits.

    The borders are a float32 buffer: they move with ``.to(device)``, are saved in the
    ``state_dict``, and stay float32 when the module is cast to a lower precision (bfloat16 borders
    would merge neighbouring buckets). All methods accept logits of any float dtype and compute in
    float32; they are differentiable in the logits.
    """

    borders: Tensor  # (K + 1,)

    def __init__(self, borders: Tensor, *, edge_atoms: bool = False) -> None:
        """Build the distribution on fixed bucket borders.

        Args:
            borders: (K + 1,) strictly increasing finite values, K >= 1 (see ``uniform_borders``
                and ``equal_mass_borders``).
            edge_atoms: read the first and last buckets as point masses at ``b_0`` and ``b_K``
                (module docstring); needs K >= 3, so that a continuous bucket lies between them.

        Raises:
            ValueError: ``borders`` is not 1-D with >= 2 finite, strictly increasing entries, or
                has fewer than 4 with ``edge_atoms``.
        """
        super().__init__()
        borders = torch.as_tensor(borders).detach().clone().float()  # (K + 1,)
        _check_borders(borders)
        if edge_atoms and borders.numel() < 4:
            raise ValueError(f"edge_atoms needs K >= 3 buckets, got {borders.numel() - 1}")
        self.register_buffer("borders", borders)
        self.edge_atoms = bool(edge_atoms)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> BarDistribution:
        # nn.Module.to(dtype) / .half() / .bfloat16() cast floating buffers too; keep the borders
        # in float32 and take only the device from the cast.
        kept = self.borders
        super()._apply(fn, recurse)
        if self.borders.dtype != kept.dtype:
            self.borders = kept.to(self.borders.device)
        return self

    def extra_repr(self) -> str:
        return (
            f"n_buckets={self.n_buckets}, "
            f"support=[{float(self.borders[0]):g}, {float(self.borders[-1]):g}], "
            f"edge_atoms={self.edge_atoms}"
        )

    @property
    def n_buckets(self) -> int:
        """K, the number of buckets."""
        return self.borders.numel() - 1

    @property
    def widths(self) -> Tensor:
        """(K,) bucket widths ``b_{k+1} - b_k``."""
        return self.borders.diff()

    @property
    def centers(self) -> Tensor:
        """(K,) bucket midpoints (of the mass: with edge atoms, ``b_0`` and ``b_K`` at the ends)."""
        lo, hi = self._spans()
        return 0.5 * (lo + hi)

    def _spans(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """(K,) lower and upper ends of each bucket's mass: the borders, except that with edge
        atoms the first bucket spans ``[b_0, b_0]`` and the last ``[b_K, b_K]``."""
        borders = self.borders.to(dtype)
        lo, hi = borders[:-1], borders[1:]
        if self.edge_atoms:
            hi = torch.cat([lo[:1], hi[1:]])
            lo = torch.cat([lo[:-1], hi[-1:]])
        return lo, hi

    def _fraction(self, y: Tensor, *, above: bool) -> Tensor:
        """(..., K): the share of each bucket's mass strictly above ``y`` (``above``) or at or
        below it, for (...) values ``y``, in their dtype (float64 for the one-threshold paths).
        The share above is computed directly, not as 1 - the share below, so that small tails
        keep their relative precision."""
        lo, hi = self._spans(y.dtype)  # (K,)
        width = hi - lo
        y = y.unsqueeze(-1)  # (..., 1)
        clipped = torch.minimum(torch.maximum(y, lo), hi)
        part = (hi - clipped) if above else (clipped - lo)
        on_atom = (y < lo) if above else (y >= lo)  # a bucket of width 0: all or nothing
        return torch.where(width > 0, part / width.clamp(min=1e-30), on_atom.to(part.dtype))

    # ---- helpers -----------------------------------------------------------------------------

    def _check_logits(self, logits: Tensor) -> Tensor:
        """The logits as float32, after checking their last dim is K."""
        if not isinstance(logits, Tensor) or not logits.is_floating_point():
            raise ValueError("logits must be a floating-point Tensor of shape (..., K)")
        if logits.ndim == 0 or logits.shape[-1] != self.n_buckets:
            raise ValueError(
                f"logits must have shape (..., {self.n_buckets}), got {tuple(logits.shape)}"
            )
        return logits.float()

    def _values(self, logits: Tensor, value: float | Tensor, name: str) -> Tensor:
        """``value`` as float32 on the logits' device, broadcast with ``logits.shape[:-1]``."""
        v = torch.as_tensor(value, dtype=torch.float32, device=logits.device)
        try:
            shape = torch.broadcast_shapes(logits.shape[:-1], v.shape)
        except RuntimeError as err:
            raise ValueError(
                f"{name} of shape {tuple(v.shape)} does not broadcast with the logits' leading "
                f"shape {tuple(logits.shape[:-1])}"
            ) from err
        return v.expand(shape)

    def _expect(self, logits: Tensor, vec: Tensor) -> Tensor:
        """``sum_k p_k vec_k``: (..., K) logits and a (K,) vector of per-bucket values -> (...)
        float32, without building the (..., K) probabilities.

        Worked out as ``sum_k e_k vec_k / sum_k e_k`` with ``e = exp(logits - max)``, on a CPU
        in blocks of :data:`_EXPECT_ROWS` rows: for the thousands of candidates of one optimiser
        decision the (M, K) softmax and product were fresh multi-megabyte temporaries, and their
        page faults cost more than the arithmetic (a GPU takes all rows at once). With a
        non-negative ``vec`` (PI's shares, EI's improvements) every term is non-negative, so
        small tails keep their relative precision, as with the softmax. (A product and a sum
        rather than a matrix-vector product, which autocast would run in half precision.)
        """
        flat = self._check_logits(logits)
        shape = flat.shape[:-1]
        flat = flat.reshape(-1, self.n_buckets)
        vec = vec.to(flat.dtype)
        out = flat.new_empty(flat.shape[0])
        rows = _EXPECT_ROWS if flat.device.type == "cpu" else max(1, flat.shape[0])
        for start in range(0, flat.shape[0], rows):
            block = flat[start : start + rows]  # (R, K)
            e = (block - block.amax(-1, keepdim=True)).exp_()
            out[start : start + rows] = (e * vec).sum(-1) / e.sum(-1)
        return out.reshape(shape)

    def _mass_below(self, probs: Tensor, y: Tensor) -> Tensor:
        """P(Y <= y): (..., K) probs and (...) y -> (...). A sum of non-negative terms."""
        return (probs * self._fraction(y, above=False)).sum(-1)

    def _mass_above(self, probs: Tensor, y: Tensor) -> Tensor:
        """P(Y > y): (..., K) probs and (...) y -> (...). Summed directly, not as 1 - cdf, so
        small tail probabilities keep their relative precision."""
        return (probs * self._fraction(y, above=True)).sum(-1)

    # ---- densities ---------------------------------------------------------------------------

    def log_probs(self, logits: Tensor) -> Tensor:
        """Log bucket probabilities: (..., K) logits -> (..., K) ``log_softmax``."""
        return torch.log_softmax(self._check_logits(logits), dim=-1)

    def probs(self, logits: Tensor) -> Tensor:
        """Bucket probabilities: (..., K) logits -> (..., K), summing to 1 over the last dim."""
        return torch.softmax(self._check_logits(logits), dim=-1)

    def nll(self, logits: Tensor, y: float | Tensor) -> Tensor:
        """Negative log density of ``y``: the PFN training loss.

        ``-log p(y) = -log_softmax(logits)_k + log(b_{k+1} - b_k)`` for the bucket ``k`` holding
        ``y``. Buckets are ``[b_k, b_{k+1})``, the last one closed. ``y`` outside ``[b_0, b_K]`` is
        clamped onto the support (so a target just outside still trains the edge bucket instead
        of giving an infinite loss); targets in [0, 1] with the default borders are never clamped.

        Args:
            logits: (..., K).
            y: a float or a tensor broadcastable with ``logits.shape[:-1]``.

        Returns:
            (...) float32; ``+inf`` where ``y`` falls in a bucket of probability 0.
        """
        log_p = self.log_probs(logits)  # (..., K)
        y = self._values(logits, y, "y")  # (...)
        inner = self.borders[1:-1].contiguous()  # (K - 1,)
        k = torch.bucketize(y.clamp(self.borders[0], self.borders[-1]), inner, right=True)  # (...)
        log_p = log_p.expand(*k.shape, self.n_buckets)  # (..., K)
        log_pk = log_p.gather(-1, k.unsqueeze(-1)).squeeze(-1)  # (...)
        return self.widths.log()[k] - log_pk

    def log_prob(self, logits: Tensor, y: float | Tensor) -> Tensor:
        """Log density of ``y``: ``-nll(logits, y)`` on the support ``[b_0, b_K]``, ``-inf``
        outside it (no clamping, unlike ``nll``), NaN for a NaN ``y``; (..., K), (...) -> (...).
        """
        y = self._values(logits, y, "y")
        out = -self.nll(logits, y)
        out = torch.where((y < self.borders[0]) | (y > self.borders[-1]), -math.inf, out)
        return torch.where(torch.isnan(y), math.nan, out)

    # ---- moments -----------------------------------------------------------------------------

    def mean(self, logits: Tensor) -> Tensor:
        """E[Y] = sum_k p_k c_k over the ``centers`` (``(b_k + b_{k+1}) / 2``; with edge atoms
        ``b_0`` and ``b_K`` at the ends): (..., K) -> (...)."""
        return self._expect(logits, self.centers)

    def variance(self, logits: Tensor) -> Tensor:
        """Var[Y] = sum_k p_k ((c_k - E[Y])^2 + w_k^2 / 12) (law of total variance, no
        cancellation): (..., K) -> (...)."""
        probs = self.probs(logits)  # (..., K)
        lo, hi = self._spans()  # (K,): with edge atoms, the ends have width 0
        centers = 0.5 * (lo + hi)
        mean = (probs * centers).sum(-1, keepdim=True)  # (..., 1)
        spread = (centers - mean).square() + (hi - lo).square() / 12  # (..., K)
        return (probs * spread).sum(-1)

    # ---- distribution function ---------------------------------------------------------------

    def cdf(self, logits: Tensor, y: float | Tensor) -> Tensor:
        """P(Y <= y), piecewise linear: 0 below ``b_0``, 1 above ``b_K`` (with edge atoms it
        jumps by ``p_0`` at ``b_0`` and by ``p_{K-1}`` at ``b_K``).

        Args:
            logits: (..., K).
            y: a float or a tensor broadcastable with ``logits.shape[:-1]``.

        Returns:
            (...) float32 in [0, 1].
        """
        y = self._values(logits, y, "y")
        return self._mass_below(self.probs(logits), y).clamp(0.0, 1.0)

    def quantile(self, logits: Tensor, q: float | Tensor) -> Tensor:
        """The q-quantile ``inf{y : cdf(y) >= q}``, the exact inverse of the piecewise-linear cdf.

        Buckets of probability 0 are skipped (the cdf is flat there), so ``quantile(cdf(y)) == y``
        wherever the density at ``y`` is positive. ``q = 0`` gives ``b_0``; ``q = 1`` gives the
        upper border of the last bucket with positive probability. With edge atoms, every ``q``
        that falls in the first (last) bucket's mass gives ``b_0`` (``b_K``).

        Args:
            logits: (..., K).
            q: levels in [0, 1]; a float or a tensor broadcastable with ``logits.shape[:-1]``.

        Returns:
            (...) float32 in ``[b_0, b_K]``.

        Raises:
            ValueError: some ``q`` is outside [0, 1] or NaN.
        """
        probs = self.probs(logits)  # (..., K)
        q = self._values(logits, q, "q")  # (...)
        if not bool(((q >= 0) & (q <= 1)).all()):
            raise ValueError("q must lie in [0, 1]")
        upper = probs.cumsum(-1)  # (..., K): P(Y < b_{k+1})
        upper = upper / upper[..., -1:]  # the last is then exactly 1, so q = 1 lands in a bucket
        # The bucket holding the quantile: the first k with P(Y < b_{k+1}) >= q.
        k = (upper < q.unsqueeze(-1)).sum(-1).clamp(max=self.n_buckets - 1)  # (...)
        shape = k.shape + (self.n_buckets,)
        k_ = k.unsqueeze(-1)
        p_k = probs.expand(shape).gather(-1, k_).squeeze(-1)  # (...)
        below = (upper.expand(shape).gather(-1, k_).squeeze(-1) - p_k).clamp(min=0.0)  # (...)
        # p_k > 0 except at q = 0 with an empty first bucket; a safe divisor keeps gradients finite.
        positive = p_k > 0
        frac = torch.where(positive, (q - below) / torch.where(positive, p_k, 1.0), 0.0)
        lo, hi = self._spans()  # (K,)
        return lo[k] + frac.clamp(0.0, 1.0) * (hi - lo)[k]

    # ---- acquisition quantities --------------------------------------------------------------

    def pi(self, logits: Tensor, threshold: float | Tensor) -> Tensor:
        """Probability of improvement P(Y > threshold) (the MFPI score), exact.

        Summed bucket by bucket rather than as ``1 - cdf``, so that tiny probabilities far in the
        upper tail keep their relative precision (they decide argmaxes when thresholds are high).

        Args:
            logits: (..., K).
            threshold: a float or a tensor broadcastable with ``logits.shape[:-1]``.

        Returns:
            (...) float32 in [0, 1]; 1 below ``b_0``, 0 above ``b_K``.
        """
        logits = self._check_logits(logits)
        if isinstance(threshold, float) or (isinstance(threshold, Tensor) and threshold.ndim == 0):
            # One threshold for all (the acquisition's case): the shares above it are one (K,)
            # vector, worked out in float64 so that a threshold a hair below a border (or below
            # an edge atom) is not rounded onto it, then weighed with the probabilities.
            t = torch.as_tensor(float(threshold), dtype=torch.float64, device=logits.device)
            return self._expect(logits, self._fraction(t, above=True)).clamp(0.0, 1.0)
        threshold = self._values(logits, threshold, "threshold")
        return self._mass_above(self.probs(logits), threshold).clamp(0.0, 1.0)

    def ei(self, logits: Tensor, threshold: float | Tensor) -> Tensor:
        """Expected improvement E[max(Y - threshold, 0)], the exact integral.

        Bucket k contributes ``p_k / w_k * ∫_{max(T, b_k)}^{b_{k+1}} (y - T) dy``, i.e.
        ``p_k (b_{k+1} - l)(b_{k+1} + l - 2T) / (2 w_k)`` with ``l = clamp(T, b_k, b_{k+1})``:
        ``p_k (c_k - T)`` for buckets wholly above T, 0 for those below (an edge atom at ``a``:
        ``p_k max(a - T, 0)``). Every factor is non-negative, so there is no cancellation. Below
        the support this is ``E[Y] - T``.

        Args:
            logits: (..., K).
            threshold: a float or a tensor broadcastable with ``logits.shape[:-1]``.

        Returns:
            (...) float32, >= 0.
        """
        logits = self._check_logits(logits)
        if isinstance(threshold, float) or (isinstance(threshold, Tensor) and threshold.ndim == 0):
            # One threshold for all (the acquisition's case): the per-bucket integrals are one
            # (K,) vector instead of (..., K) temporaries.
            t = torch.as_tensor(float(threshold), dtype=torch.float64, device=logits.device)
            return self._expect(logits, self._improvement(t))
        t = self._values(logits, threshold, "threshold").unsqueeze(-1)  # (..., 1)
        return (self.probs(logits) * self._improvement(t)).sum(-1)

    def _improvement(self, t: Tensor) -> Tensor:
        """Each bucket's ``E[max(Y - t, 0) | bucket]``: (..., 1) or () thresholds -> (..., K), in
        the dtype of ``t``."""
        lo, hi = self._spans(t.dtype)  # (K,)
        width = hi - lo
        inside = torch.minimum(torch.maximum(t, lo), hi)
        spread = (hi - inside) / width.clamp(min=1e-30) * (0.5 * ((hi - t) + (inside - t)))
        return torch.where(width > 0, spread, (lo - t).clamp(min=0.0))

    def ucb(self, logits: Tensor, *, q: float | Tensor = 0.9) -> Tensor:
        """Upper confidence bound: the upper ``q``-quantile of Y (default 0.9).

        Why a quantile rather than ``mean + beta * std``: the predictive is bounded and often
        skewed or bimodal (a curve may plateau or diverge), where ``mean + beta * std`` can leave
        the support and ignores the shape; the quantile stays in ``[b_0, b_K]``, is exact here, and
        for a Gaussian equals ``mean + Phi^{-1}(q) std`` (q = 0.9 is beta ~ 1.28), so it is the
        same knob with a scale-free meaning: "a value Y exceeds with probability 1 - q".

        Args:
            logits: (..., K).
            q: level in [0, 1]; a float or a tensor broadcastable with ``logits.shape[:-1]``.

        Returns:
            (...) float32. With edge atoms, every distribution with more than ``1 - q`` of its mass
            in the top bucket gets exactly ``b_K`` (ties, which the acquisitions break at random).
        """
        return self.quantile(logits, q)

    # ---- sampling ----------------------------------------------------------------------------

    def sample(
        self, logits: Tensor, n: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw Y: a bucket by its probability, then a uniform position inside it (on the bound
        for an edge atom).

        Args:
            logits: (..., K).
            n: number of draws per distribution; None for one draw without the leading sample dim.
            generator: a ``torch.Generator`` on the logits' device, for reproducible draws.

        Returns:
            (...) float32 if ``n`` is None, else (n, ...) (sample dim first, as
            ``torch.distributions``).

        Raises:
            ValueError: ``n`` is not a positive int.
        """
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"n must be a positive int or None, got {n!r}")
        probs = self.probs(logits)  # (..., K)
        lead = probs.shape[:-1]
        draws = 1 if n is None else n
        flat = probs.reshape(-1, self.n_buckets)  # (L, K)
        k = torch.multinomial(flat, draws, replacement=True, generator=generator)  # (L, n)
        u = torch.rand(k.shape, generator=generator, device=probs.device)  # (L, n)
        lo, hi = self._spans()  # (K,): edge atoms have width 0, so their draws sit on them
        y = lo[k] + u * (hi - lo)[k]  # (L, n)
        # u < 1, yet rounding in b_k + u w_k may reach b_{k+1}; keep draws inside their bucket.
        y = torch.minimum(y, hi[k])
        y = y.T.reshape(draws, *lead)  # (n, ...)
        return y[0] if n is None else y
