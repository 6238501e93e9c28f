"""The FT-PFN learning-curve family: four saturating basis curves, time bending, tail, noise.

Every function is pure and vectorised: parameters and times broadcast against each other, so one
call evaluates any number of curves at any number of times. Shape legend:
    ...  any leading (broadcast) dimensions, e.g. (R,) rows or (B, T) tokens
    K    the 4 basis curves, in the order pow, exp, log, hill

A basis curve rises from ``y0`` at ``x = 0`` to ``yinf - (yinf - y0) / prec`` at its saturation
time ``x = xsat`` and approaches ``yinf`` as ``x`` grows. After saturation time is bent by a rate
``R`` (``R < 0`` turns the curve back down); where the bent time becomes negative an exponential
tail takes over that keeps value and slope continuous at ``x = 0`` and decays to 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

N_BASIS = 4  # pow, exp, log, hill
# The slope at x = 0 is infinite for some shapes (alpha < 1); the tail uses the slope at this small
# fraction of the saturation time instead, which is finite and equal to the limit otherwise.
_SLOPE_OFFSET = 1e-6


@dataclass(frozen=True)
class CurveParams:
    """The parameters of a batch of curves (all tensors broadcast together; K = 4 bases)."""

    y0: Tensor  # (...) start value at t = 0
    yinf: Tensor  # (...) asymptote
    weights: Tensor  # (..., K) convex weights of the basis curves
    alpha: Tensor  # (..., K) shape parameters (alpha > 1 for the log basis, > 0 otherwise)
    xsat: Tensor  # (..., K) saturation times, in units of the full budget
    prec: Tensor  # (..., K) >= 1: at xsat the gap to yinf has shrunk to 1/prec of yinf - y0
    rate: Tensor  # (..., K) <= 1: post-saturation rate of time (negative = divergence)
    sigma: Tensor  # (...) standard deviation of the observation noise


def _log1p_expm1_times(k: Tensor, s: Tensor) -> Tensor:
    """``log(1 + (exp(k) - 1) * s)`` for ``k >= 0``, ``s >= 0``, without overflow for large k."""
    s_lo = s.clamp(0.0, 1.0)
    s_hi = s.clamp(min=1.0)
    below = torch.logaddexp(torch.log1p(-s_lo), torch.log(s_lo) + k)  # exact for s <= 1
    above = k + torch.log(s_hi - (s_hi - 1.0) * torch.exp(-k))  # exact for s >= 1
    return torch.where(s <= 1.0, below, above)


def _log_expm1(k: Tensor) -> Tensor:
    """``log(exp(k) - 1)`` for ``k >= 0`` without overflow (``-inf`` at 0)."""
    return k + torch.log1p(-torch.exp(-k))


def gap_coefficients(kind: int, alpha: Tensor, prec: Tensor) -> tuple[Tensor, Tensor]:
    """The per-curve constants ``(a, c)`` of the gap formula of basis ``kind`` (``basis_gap``).

    pow: ``(alpha, log(P) / alpha)``; exp: ``(alpha, log P)``; log: ``(log alpha, (P - 1) log
    alpha)``; hill: ``(alpha, P - 1)``. Shapes broadcast.
    """
    if kind == 0:
        return alpha, torch.log(prec) / alpha
    if kind == 1:
        return alpha, torch.log(prec)
    if kind == 2:
        log_a = torch.log(alpha)
        return log_a, (prec - 1.0) * log_a
    if kind == 3:
        return alpha, prec - 1.0
    raise ValueError(f"kind must be in 0..3, got {kind}")


def gap_from_coefficients(kind: int, s: Tensor, a: Tensor, c: Tensor) -> Tensor:
    """``basis_gap`` at ``s`` from the constants ``(a, c)`` of ``gap_coefficients``."""
    if kind == 0:  # pow: ((P^(1/a) - 1) s + 1)^(-a)
        return torch.exp(-a * _log1p_expm1_times(c, s))
    if kind == 1:  # exp: P^(-s^a)
        return torch.exp(-c * s.pow(a))
    if kind == 2:  # log: ln a / ln((a^P - a) s + a) = L / (L + ln(1 + (a^(P-1) - 1) s))
        return a / (a + _log1p_expm1_times(c, s))
    if kind == 3:  # hill: 1 / (s^a (P - 1) + 1)
        return 1.0 / (s.pow(a) * c + 1.0)
    raise ValueError(f"kind must be in 0..3, got {kind}")


def basis_gap(kind: int, s: Tensor, alpha: Tensor, prec: Tensor) -> Tensor:
    """The remaining fraction of the gap ``(yinf - y(x)) / (yinf - y0)`` of one basis curve.

    ``kind`` is 0 pow, 1 exp, 2 log, 3 hill; ``s = x / xsat >= 0`` is time relative to saturation.
    The gap is 1 at ``s = 0`` and ``1 / prec`` at ``s = 1`` for every kind. Shapes broadcast.
    """
    return gap_from_coefficients(kind, s, *gap_coefficients(kind, alpha, prec))


def basis_slope_at_zero(kind: int, alpha: Tensor, prec: Tensor) -> Tensor:
    """d(gap)/ds of ``basis_gap`` near ``s = 0``, negated (so >= 0); evaluated at a tiny offset.

    Multiplied by ``(yinf - y0) / xsat`` this is the slope of the curve in x at its start.
    """
    s = torch.full_like(alpha, _SLOPE_OFFSET)
    log_prec = torch.log(prec)
    if kind == 0:
        k = log_prec / alpha
        # d/ds (1 + m s)^(-a) = -a m (1 + m s)^(-a-1), with m = expm1(k) possibly huge.
        log_base = _log1p_expm1_times(k, s)
        return alpha * torch.exp(_log_expm1(k) - (alpha + 1.0) * log_base)
    if kind == 1:
        gap = torch.exp(-log_prec * s.pow(alpha))
        return gap * log_prec * alpha * s.pow(alpha - 1.0)
    if kind == 2:
        log_a = torch.log(alpha)
        k = (prec - 1.0) * log_a
        g = _log1p_expm1_times(k, s)
        # d/ds L / (L + g(s)) = -L g'(s) / (L + g)^2 with g' = m / (1 + m s), m = expm1(k).
        log_gprime = _log_expm1(k) - g
        return torch.exp(torch.log(log_a) + log_gprime - 2.0 * torch.log(log_a + g))
    if kind == 3:
        sa = s.pow(alpha)
        return (prec - 1.0) * alpha * s.pow(alpha - 1.0) / (sa * (prec - 1.0) + 1.0) ** 2
    raise ValueError(f"kind must be in 0..3, got {kind}")


def bend_time(t: Tensor, xsat: Tensor, rate: Tensor) -> Tensor:
    """Post-saturation time: ``x = t`` before ``xsat``, ``xsat + rate * (t - xsat)`` after."""
    return torch.where(t < xsat, t, xsat + rate * (t - xsat))


def tail_rate(
    kind: int, *, y0: Tensor, yinf: Tensor, alpha: Tensor, xsat: Tensor, prec: Tensor
) -> Tensor:
    """Rate ``slope / y0`` of the exponential tail ``y0 exp(x * rate)`` of a basis curve at x < 0.

    ``slope`` is the curve's slope at ``x = 0+`` (``basis_slope_at_zero``); an infinite rate (``y0``
    near 0) is capped at 1e30.
    """
    slope = (yinf - y0) * basis_slope_at_zero(kind, alpha, prec) / xsat
    return (slope / y0.clamp(min=1e-12)).nan_to_num(posinf=1e30)


def _with_tail(x: Tensor, y: Tensor, y0: Tensor, rate: Tensor) -> Tensor:
    """``y`` where ``x >= 0``, the tail ``y0 exp(x * rate)`` where ``x < 0``."""
    # x < 0 only; elsewhere the argument is clamped to 0 so inf * 0 never makes a NaN.
    tail = y0 * torch.exp(x.clamp(max=0.0) * rate)
    return torch.where(x >= 0.0, y, tail)


def basis_curve(
    kind: int,
    x: Tensor,
    *,
    y0: Tensor,
    yinf: Tensor,
    alpha: Tensor,
    xsat: Tensor,
    prec: Tensor,
) -> Tensor:
    """One basis curve at (bent) time ``x``, with the exponential tail for ``x < 0``.

    For ``x >= 0``: ``yinf - (yinf - y0) * basis_gap(kind, x / xsat)``. For ``x < 0``:
    ``y0 * exp(x * slope / y0)`` with ``slope`` the curve's slope at ``x = 0+``, so value and slope
    are continuous at 0 and the tail decays to 0. All arguments broadcast; returns their shape.
    """
    s = x.clamp(min=0.0) / xsat
    y = yinf - (yinf - y0) * basis_gap(kind, s, alpha, prec)
    rate = tail_rate(kind, y0=y0, yinf=yinf, alpha=alpha, xsat=xsat, prec=prec)
    return _with_tail(x, y, y0, rate)


@dataclass(frozen=True)
class PreparedCurves:
    """Curve parameters laid out for evaluation at many times (``prepare``).

    Basis fields come first, and the per-curve work of ``mean_curve`` (logarithms of shapes and
    precisions, the slopes of the tails) is done once, so that observations of the same curves
    only repeat the per-time work. Fields (...) or (K, ...) with the batch shape ``...``.
    """

    y0: Tensor  # (...)
    yinf: Tensor  # (...)
    sigma: Tensor  # (...)
    weights: Tensor  # (K, ...)
    xsat: Tensor  # (K, ...)
    rate: Tensor  # (K, ...)
    gap_a: Tensor  # (K, ...) the constants of each basis' gap formula (``gap_coefficients``)
    gap_c: Tensor  # (K, ...)
    tail_rate: Tensor  # (K, ...) (``tail_rate``)

    def take(self, index: Tensor) -> PreparedCurves:
        """The curves ``index`` (long, any shape I) of these curves with batch shape (R,).

        Fields become I or (K, *I), gathered at once.
        """
        fields = [getattr(self, f.name) for f in dataclasses.fields(self)]
        rows = [f.reshape(-1, f.shape[-1]) for f in fields]  # (1, R) or (K, R)
        packed = torch.cat(rows).index_select(1, index.flatten())  # (3 + 6K, n)
        parts = packed.split([r.shape[0] for r in rows])
        return PreparedCurves(
            *(
                p.view(index.shape) if f.ndim == 1 else p.view(-1, *index.shape)
                for f, p in zip(fields, parts, strict=True)
            )
        )


def prepare(params: CurveParams) -> PreparedCurves:
    """Lay out ``params`` for ``prepared_mean`` (see ``PreparedCurves``)."""
    batch = torch.broadcast_shapes(
        params.y0.shape,
        params.yinf.shape,
        params.sigma.shape,
        *(
            getattr(params, name).shape[:-1]
            for name in ("weights", "alpha", "xsat", "prec", "rate")
        ),
    )
    y0, yinf = params.y0.expand(batch), params.yinf.expand(batch)
    alpha, prec, xsat = (
        x.expand(*batch, N_BASIS) for x in (params.alpha, params.prec, params.xsat)
    )
    coefficients = [gap_coefficients(k, alpha[..., k], prec[..., k]) for k in range(N_BASIS)]
    rates = [
        tail_rate(k, y0=y0, yinf=yinf, alpha=alpha[..., k], xsat=xsat[..., k], prec=prec[..., k])
        for k in range(N_BASIS)
    ]

    def basis_first(x: Tensor) -> Tensor:  # (..., K) -> (K, *batch)
        return x.expand(*batch, N_BASIS).movedim(-1, 0)

    return PreparedCurves(
        y0=y0,
        yinf=yinf,
        sigma=params.sigma.expand(batch),
        weights=basis_first(params.weights),
        xsat=basis_first(xsat),
        rate=basis_first(params.rate),
        gap_a=torch.stack([a.expand(batch) for a, _ in coefficients]),
        gap_c=torch.stack([c.expand(batch) for _, c in coefficients]),
        tail_rate=torch.stack(rates),
    )


def prepared_mean(curves: PreparedCurves, t: Tensor) -> Tensor:
    """The noise-free curves at normalised time ``t`` (broadcast with the curves' batch shape)."""
    ndim = len(torch.broadcast_shapes(t.shape, curves.y0.shape))

    def aligned(x: Tensor) -> Tensor:  # (K, *batch) -> (K, 1, ..., 1, *batch), ndim after K
        return x.view(x.shape[0], *([1] * (ndim - x.ndim + 1)), *x.shape[1:])

    xsat = aligned(curves.xsat)
    x = bend_time(t, xsat, aligned(curves.rate))  # (K, ...)
    s = x.clamp(min=0.0) / xsat
    a, c = aligned(curves.gap_a), aligned(curves.gap_c)
    gap = torch.stack([gap_from_coefficients(k, s[k], a[k], c[k]) for k in range(N_BASIS)])
    y = curves.yinf - (curves.yinf - curves.y0) * gap  # (K, ...)
    y = _with_tail(x, y, curves.y0, aligned(curves.tail_rate))
    return (aligned(curves.weights) * y).sum(0)


def mean_curve(params: CurveParams, t: Tensor) -> Tensor:
    """The noise-free curve at normalised time ``t`` (broadcast with the parameters' ``...``)."""
    return prepared_mean(prepare(params), t)


def observe(
    curves: CurveParams | PreparedCurves, t: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """Noisy observations ``clip(mean_curve + N(0, sigma^2), 0, 1)`` at times ``t``."""
    if isinstance(curves, CurveParams):
        curves = prepare(curves)
    mean = prepared_mean(curves, t)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return (mean + curves.sigma * noise).clamp(0.0, 1.0)
