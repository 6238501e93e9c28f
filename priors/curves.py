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


def basis_gap(kind: int, s: Tensor, alpha: Tensor, prec: Tensor) -> Tensor:
    """The remaining fraction of the gap ``(yinf - y(x)) / (yinf - y0)`` of one basis curve.

    ``kind`` is 0 pow, 1 exp, 2 log, 3 hill; ``s = x / xsat >= 0`` is time relative to saturation.
    The gap is 1 at ``s = 0`` and ``1 / prec`` at ``s = 1`` for every kind. Shapes broadcast.
    """
    log_prec = torch.log(prec)
    if kind == 0:  # pow: ((P^(1/a) - 1) s + 1)^(-a)
        return torch.exp(-alpha * _log1p_expm1_times(log_prec / alpha, s))
    if kind == 1:  # exp: P^(-s^a)
        return torch.exp(-log_prec * s.pow(alpha))
    if kind == 2:  # log: ln a / ln((a^P - a) s + a) = L / (L + ln(1 + (a^(P-1) - 1) s))
        log_a = torch.log(alpha)
        return log_a / (log_a + _log1p_expm1_times((prec - 1.0) * log_a, s))
    if kind == 3:  # hill: 1 / (s^a (P - 1) + 1)
        return 1.0 / (s.pow(alpha) * (prec - 1.0) + 1.0)
    raise ValueError(f"kind must be in 0..3, got {kind}")


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
    delta = yinf - y0
    s = x.clamp(min=0.0) / xsat
    y = yinf - delta * basis_gap(kind, s, alpha, prec)
    slope = delta * basis_slope_at_zero(kind, alpha, prec) / xsat
    y0_safe = y0.clamp(min=1e-12)
    # x < 0 only; elsewhere the argument is clamped to 0 so inf * 0 never makes a NaN.
    tail = y0 * torch.exp(x.clamp(max=0.0) * (slope / y0_safe).nan_to_num(posinf=1e30))
    return torch.where(x >= 0.0, y, tail)


def mean_curve(params: CurveParams, t: Tensor) -> Tensor:
    """The noise-free curve at normalised time ``t`` (broadcast with the parameters' ``...``)."""
    y: Tensor | float = 0.0
    for kind in range(N_BASIS):
        x = bend_time(t, params.xsat[..., kind], params.rate[..., kind])
        yk = basis_curve(
            kind,
            x,
            y0=params.y0,
            yinf=params.yinf,
            alpha=params.alpha[..., kind],
            xsat=params.xsat[..., kind],
            prec=params.prec[..., kind],
        )
        y = y + params.weights[..., kind] * yk
    assert isinstance(y, Tensor)
    return y


def observe(params: CurveParams, t: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Noisy observations ``clip(mean_curve + N(0, sigma^2), 0, 1)`` at times ``t``."""
    mean = mean_curve(params, t)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return (mean + params.sigma * noise).clamp(0.0, 1.0)
