"""The inference API: partial learning curves in, predictive distributions out.

A :class:`Surrogate` wraps a trained :class:`~pfn.model.CurveSetTransformer` and its
:class:`~pfn.bar_distribution.BarDistribution`. It works in the network's own units:

* a :class:`Curve` is one configuration (hyperparameters in [0, 1]) with its observed prefix: scores
  ``y`` in [0, 1] (higher is better) at normalised times ``t`` in (0, 1] (``t = step / max_step``);
* :meth:`Surrogate.predict` reads all context curves and predicts the queried curves at the
  queried times, returning one :class:`Prediction` per query curve. The predictive mixes two
  readings of the network, the *context view* (all curves, one forward pass) and the
  *single-curve view* (each queried curve alone, batched and cached): see :class:`Surrogate`.

For raw metrics (losses, unbounded values, diverged runs) :meth:`Surrogate.predict_final` does the
scaling with a :class:`~pfn.scaling.MetricScaler` and reports the predicted final value with an
interval in the metric's own units.

Shapes: ``L`` query times of one curve, ``K`` buckets, ``n`` samples, ``D`` hyperparameters.

Example::

    sur = Surrogate.load()  # the shipped checkpoint
    ctx = [Curve([0.1, 0.5], t=[0.1, 0.2], y=[0.3, 0.4]), Curve([0.9, 0.2], t=[0.1], y=[0.2])]
    pred = sur.predict(ctx, [Curve([0.1, 0.5], t=[1.0]), Curve([0.4, 0.4], t=[0.5, 1.0])])
    pred[0].quantile(0.5), pred[1].pi(0.45)
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from pfn.bar_distribution import BarDistribution, uniform_borders
from pfn.checkpoint import Checkpoint, load_checkpoint
from pfn.forecast import BarForecast, ViewMixture
from pfn.model import CurveEncoding, CurveSetInput, CurveSetTransformer, ModelConfig
from pfn.scaling import MetricScaler

__all__ = ["Curve", "FinalPrediction", "Prediction", "RawRun", "Surrogate"]

DEFAULT_CHECKPOINT = "default"  # checkpoints/default.pt + checkpoints/default.json
# Weight of the single-curve view in the predictive (see `Surrogate`), chosen on the development
# curves (checkpoints/README.md, "The predictive: two views").
DEFAULT_SINGLE_WEIGHT = 0.1
# Curves whose single-curve encoding a Surrogate keeps (least recently used dropped first; ~0.6 kB
# plus 16 bytes per point each). An optimiser asks about the same paused runs again and again
# (as long as its score map, refitted at each decision, leaves their scores unchanged).
SINGLE_VIEW_CACHE_SIZE = 16384


def _as_array(value: ArrayLike, name: str) -> np.ndarray:
    """``value`` as a read-only 1-D float64 array (a scalar becomes length 1)."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {value!r}") from err
    arr = np.atleast_1d(arr)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class Curve:
    """One configuration's learning curve in the network's units.

    Args:
        config: (D,) hyperparameters in [0, 1]; D may be 0. Two curves with equal values are the
            same configuration.
        t: (L,) normalised steps in (0, 1] (``step / max_step``): observed steps of a context
            curve, or the steps to predict of a query curve.
        y: (L,) observed scores in [0, 1], higher is better; None for a query curve.

    Inputs are converted to read-only float64 arrays (scalars to length 1).

    Raises:
        ValueError: a value is NaN, inf or non-numeric, ``config`` is outside [0, 1], ``t`` is
            outside (0, 1], ``y`` is outside [0, 1], or ``y`` and ``t`` differ in length.
    """

    config: np.ndarray
    t: np.ndarray
    y: np.ndarray | None = None

    def __post_init__(self) -> None:
        config = _as_array(self.config, "Curve.config")
        if ((config < 0) | (config > 1)).any():
            raise ValueError("Curve.config must lie in [0, 1] (normalise hyperparameters first)")
        t = _as_array(self.t, "Curve.t")
        if ((t <= 0) | (t > 1)).any():
            raise ValueError(
                f"Curve.t must lie in (0, 1] (t = step / max_step), got min {t.min()}, "
                f"max {t.max()}"
            )
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "t", t)
        if self.y is not None:
            y = _as_array(self.y, "Curve.y")
            if ((y < 0) | (y > 1)).any():
                raise ValueError(
                    "Curve.y must lie in [0, 1] (scores, higher is better; map raw metrics with "
                    "pfn.scaling.MetricScaler)"
                )
            if y.shape != t.shape:
                raise ValueError(f"Curve.y has {y.shape[0]} values but Curve.t has {t.shape[0]}")
            object.__setattr__(self, "y", y)

    @property
    def key(self) -> tuple[float, ...]:
        """The configuration as a hashable tuple: the curve's identity."""
        return tuple(self.config.tolist())


@dataclass(frozen=True, eq=False)
class Prediction:
    """The predictive distribution of one query curve at its L query times.

    All methods return float64 numpy arrays of shape (L,) (``sample``: (n, L)), in score units.
    """

    config: np.ndarray  # (D,) the curve's hyperparameters
    t: np.ndarray  # (L,) the query times
    logits: Tensor  # (L, K) float32 on the CPU; their softmax is the bucket probabilities
    distribution: BarDistribution = field(repr=False)  # on the CPU

    def _out(self, x: Tensor) -> np.ndarray:
        return x.detach().double().numpy()

    def _arg(self, value: ArrayLike) -> Tensor | float:
        """A float or an (L,) array as a tensor that broadcasts with the (L,) query times; a
        single number stays a Python float (kept in float64 by ``pi`` and ``ei``, so a threshold
        a hair below 1 is not rounded onto the top border)."""
        if np.ndim(value) == 0:
            return float(value)  # type: ignore[arg-type]
        return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=torch.float32)

    def mean(self) -> np.ndarray:
        """E[y]: (L,)."""
        return self._out(self.distribution.mean(self.logits))

    def variance(self) -> np.ndarray:
        """Var[y]: (L,)."""
        return self._out(self.distribution.variance(self.logits))

    def quantile(self, q: ArrayLike) -> np.ndarray:
        """The q-quantile, q in [0, 1] (a float or (L,)): (L,). ``quantile(0.5)`` is the median."""
        return self._out(self.distribution.quantile(self.logits, self._arg(q)))

    def cdf(self, y: ArrayLike) -> np.ndarray:
        """P(Y <= y) for a float or (L,) ``y``: (L,)."""
        return self._out(self.distribution.cdf(self.logits, self._arg(y)))

    def log_prob(self, y: ArrayLike) -> np.ndarray:
        """Log density at a float or (L,) ``y``: (L,)."""
        return self._out(self.distribution.log_prob(self.logits, self._arg(y)))

    def pi(self, threshold: ArrayLike) -> np.ndarray:
        """Probability of improvement P(Y > threshold), threshold a float or (L,): (L,)."""
        return self._out(self.distribution.pi(self.logits, self._arg(threshold)))

    def ei(self, threshold: ArrayLike) -> np.ndarray:
        """Expected improvement E[max(Y - threshold, 0)], threshold a float or (L,): (L,)."""
        return self._out(self.distribution.ei(self.logits, self._arg(threshold)))

    def ucb(self, *, q: float = 0.9) -> np.ndarray:
        """Upper confidence bound: the upper ``q``-quantile (see ``BarDistribution.ucb``): (L,)."""
        return self._out(self.distribution.ucb(self.logits, q=q))

    def sample(self, n: int = 1, generator: torch.Generator | None = None) -> np.ndarray:
        """``n`` joint-free draws per query time (each time sampled independently): (n, L)."""
        return self._out(self.distribution.sample(self.logits, n, generator=generator))


@dataclass(frozen=True, eq=False)
class RawRun:
    """One training run in raw units, for :meth:`Surrogate.predict_final`.

    Args:
        steps: (n,) steps of the observations, in (0, max_step] (epochs, optimiser steps, ...).
        values: (n,) raw metric values; NaN and ±inf mark diverged points (scored as the worst).
        config: (D,) hyperparameters normalised to [0, 1], or None (then no run may have one).
    """

    steps: ArrayLike
    values: ArrayLike
    config: ArrayLike | None = None


@dataclass(frozen=True, eq=False)
class FinalPrediction:
    """What :meth:`Surrogate.predict_final` says about one run, in the metric's own units.

    ``final``, ``lower`` and ``upper`` are at ``max_step``; the ``*_path`` arrays give the same at
    every predicted step (``steps``, the last being ``max_step``). Because the metric <-> score map
    is monotone, the median and the central interval are exact images of the score-space ones.
    """

    run: Hashable  # the run's key (mapping input) or index (sequence input)
    final: float  # predicted median of the metric at max_step
    lower: float  # lower end of the central `interval` at max_step (lower <= upper)
    upper: float  # upper end
    interval: float  # probability mass of [lower, upper], e.g. 0.9
    steps: np.ndarray  # (L,) raw steps predicted, increasing, steps[-1] == max_step
    median_path: np.ndarray  # (L,) predicted median at each step
    lower_path: np.ndarray  # (L,)
    upper_path: np.ndarray  # (L,)
    score: Prediction  # the score-space predictive at t = steps / max_step
    scaler: MetricScaler  # the metric <-> score map used (shared by all runs of the call)


class Surrogate:
    """A trained curve-set PFN ready for prediction (eval mode, no gradients).

    Build it with :meth:`load` (a checkpoint file, or the shipped default) or
    :meth:`from_checkpoint`.

    **The predictive: two views.** The network reads a task two ways: the *context view* (every
    curve with its hyperparameters, the way it was pretrained) and the *single-curve view* (each
    queried curve alone, without hyperparameters: :meth:`forecast_single`). The predictive of a
    curve with observed points is their mixture ``(1 - w) p_context + w p_single`` with
    ``w = single_weight``; that of a curve without points (a new configuration) is the context
    view, since alone it would read nothing and give the prior's spread over all tasks. The
    single-curve view is a hedge against tasks whose curves are less related than the prior's: on
    the development curves a small weight raised the log-likelihood and the interval coverage of
    both TaskSet and LCDB, and mixing it into unseen configurations' predictive lowered their
    log-likelihood (``checkpoints/README.md``). ``single_weight = 0`` gives the context view alone
    (one forward pass instead of two). :meth:`forecast_single` is the single-curve view alone.

    Attributes:
        model: the network, in eval mode on ``device``.
        distribution: its output distribution (the bucket borders), on ``device``.
        device: where the forward pass runs; predictions are returned on the CPU.
        single_weight: ``w`` above, in [0, 1].
    """

    def __init__(
        self,
        model: CurveSetTransformer,
        distribution: BarDistribution,
        *,
        device: str | torch.device = "cpu",
        single_weight: float = DEFAULT_SINGLE_WEIGHT,
    ) -> None:
        """Wrap a network and its output distribution (both moved to ``device``, eval mode).

        Raises:
            ValueError: the bucket counts differ, or ``single_weight`` is outside [0, 1].
        """
        self.single_weight = single_weight  # validated by the property
        if model.config.n_buckets != distribution.n_buckets:
            raise ValueError(
                f"the model has {model.config.n_buckets} output buckets but the distribution "
                f"has {distribution.n_buckets}"
            )
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.distribution = distribution.to(self.device)
        # Predictions live on the CPU; they share this copy.
        self._cpu_distribution = BarDistribution(
            distribution.borders.detach().cpu(), edge_atoms=distribution.edge_atoms
        )
        self._new_cache()

    def _new_cache(self) -> None:
        """An empty cache of the single-curve view's encodings by curve (its float64 points'
        bytes), valid for the weights they were computed with (see ``_weights_key``); a lock,
        since callers may share a Surrogate."""
        self._single_cache: OrderedDict[tuple[bytes, bytes], tuple[Tensor, Tensor, Tensor]] = (
            OrderedDict()
        )
        self._single_cache_key: tuple | None = None
        self._single_cache_lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Pickled without the cache and its lock (e.g. inside a Ray Tune scheduler)."""
        state = self.__dict__.copy()
        for name in ("_single_cache", "_single_cache_key", "_single_cache_lock"):
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._new_cache()

    def clear_cache(self) -> None:
        """Forget the single-curve view's cached encodings.

        The cache notices every change of the weights made through torch (an optimiser step,
        ``load_state_dict``, a new parameter or module, a device or dtype move). Call this after
        writing to a parameter's ``.data`` in place, which torch does not record.
        """
        with self._single_cache_lock:
            self._single_cache.clear()
            self._single_cache_key = None

    @property
    def single_weight(self) -> float:
        """Weight of the single-curve view in the predictive, in [0, 1] (see the class)."""
        return self._single_weight

    @single_weight.setter
    def single_weight(self, value: float) -> None:
        self._single_weight = _check_weight(value)

    @property
    def config(self) -> ModelConfig:
        """The network's configuration."""
        return self.model.config

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Checkpoint,
        *,
        device: str | torch.device = "cpu",
        single_weight: float = DEFAULT_SINGLE_WEIGHT,
    ) -> Surrogate:
        """Build from a loaded :class:`~pfn.checkpoint.Checkpoint` (``single_weight``: see the
        class).

        On borders spanning exactly [0, 1] whose edge buckets are no wider than ``1 / K`` (every
        shipped and pretrained network) the output distribution reads its edge buckets as atoms at
        0 and 1 (``BarDistribution``, ``edge_atoms``), since the priors clip their scores there.
        """
        if ckpt.model.last_value_head and not torch.allclose(
            ckpt.borders, uniform_borders(ckpt.model.n_buckets), atol=1e-6
        ):
            raise ValueError(
                "a network with the last-value head needs uniform bucket borders on [0, 1]"
            )
        model = CurveSetTransformer(ckpt.model)
        model.load_state_dict(ckpt.state_dict)
        # Every prior clips its scores to [0, 1], so on borders spanning exactly that range the
        # edge buckets stand for the scores on the bounds (``BarDistribution``, edge atoms), as
        # long as they are narrow: no wider than a bucket of equal-width borders.
        b, k = ckpt.borders, ckpt.model.n_buckets
        on_unit = float(b[0]) == 0.0 and float(b[-1]) == 1.0
        narrow = max(float(b[1] - b[0]), float(b[-1] - b[-2])) <= 1.0001 / k
        edge_atoms = on_unit and narrow and k >= 3
        dist = BarDistribution(ckpt.borders, edge_atoms=edge_atoms)
        return cls(model, dist, device=device, single_weight=single_weight)

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        single_weight: float = DEFAULT_SINGLE_WEIGHT,
    ) -> Surrogate:
        """Load a checkpoint (``NAME``, ``NAME.pt`` or ``NAME.json``; see :mod:`pfn.checkpoint`).

        Args:
            path: the checkpoint; None for the one shipped in the ``checkpoints`` package
                (``checkpoints/default.pt`` + ``.json``). Nothing is downloaded.
            device: where the network runs.
            single_weight: weight of the single-curve view in the predictive (see the class).

        Raises:
            FileNotFoundError: the checkpoint (or, with None, the shipped one) is missing.
            ValueError: the checkpoint is corrupt or of an unknown format version.
        """
        if path is None:
            root = Path(str(files("checkpoints")))
            path = root / DEFAULT_CHECKPOINT
            missing = [
                p for p in (path.with_suffix(".pt"), path.with_suffix(".json")) if not p.is_file()
            ]
            if missing:
                raise FileNotFoundError(
                    f"the shipped checkpoint is absent ({', '.join(map(str, missing))} not "
                    "found). Pretrain one with `curvepfn pretrain --config small --out runs/small` "
                    f"and copy runs/small/model.pt and model.json to {root}/default.pt and "
                    f"{root}/default.json, or pass the path of a checkpoint"
                )
        return cls.from_checkpoint(
            load_checkpoint(path), device=device, single_weight=single_weight
        )

    # ---- prediction in score units ------------------------------------------------------------

    def predict(self, context: Sequence[Curve], query: Sequence[Curve]) -> list[Prediction]:
        """Predict the query curves given all context curves (one forward pass per view).

        The context curves and the query curves form one task. A query curve whose ``config``
        equals a context curve's (exactly, value by value) *is* that curve: its observed points are
        its context. Any other query curve is a new configuration without observations (query
        curves sharing a new config are one new curve). Context curves may share a config (e.g.
        repeated seeds): they are then distinct curves, but cannot be queried by that config.

        New configurations join the task as unobserved curves, as in pretraining: each reads the
        observed curves, but no curve reads an unobserved one, so every prediction is independent
        of the other queries (other curves, other times).

        Args:
            context: observed curves (``y`` given); a curve may have no points.
            query: curves to predict (``y`` None) at their ``t``, each with at least one ``t``.

        Returns:
            One :class:`Prediction` per query curve, in the order of ``query``.

        Raises:
            ValueError: empty ``query``; a context curve without ``y`` or a query curve with
                ``y`` or without ``t``; configs of different lengths or longer than the model's
                ``max_hps``; a query config matching several context curves.
        """
        if len(query) == 0:
            raise ValueError("query is empty: give at least one curve to predict")
        for i, c in enumerate(context):
            if c.y is None:
                raise ValueError(f"context curve {i} has no y: context curves must be observed")
        for i, c in enumerate(query):
            if c.y is not None:
                raise ValueError(f"query curve {i} has y: query curves take y=None")
            if c.t.size == 0:
                raise ValueError(f"query curve {i} has no t to predict")
        self._check_configs([*context, *query])
        index: dict[tuple[float, ...], int] = {}
        ambiguous: set[tuple[float, ...]] = set()
        for i, c in enumerate(context):
            if c.key in index:
                ambiguous.add(c.key)
            index.setdefault(c.key, i)
        curves = list(context)
        targets: list[tuple[int, np.ndarray]] = []
        for i, c in enumerate(query):
            if c.key in ambiguous:
                raise ValueError(
                    f"query curve {i} has config {list(c.key)}, shared by several context curves;"
                    " give context curves distinct configs to query them"
                )
            if c.key not in index:
                index[c.key] = len(curves)
                curves.append(Curve(c.config, t=[], y=[]))
            targets.append((index[c.key], c.t))
        return self._predict(curves, targets)

    # ---- prediction from arrays (no Curve objects; for loops over many curves) -----------------

    def forecast(
        self,
        configs: ArrayLike,
        *,
        ctx_curve: ArrayLike,
        ctx_t: ArrayLike,
        ctx_y: ArrayLike,
        qry_curve: ArrayLike,
        qry_t: ArrayLike,
        single_weight: float | None = None,
    ) -> BarForecast:
        """One task given as arrays: the array twin of :meth:`predict`.

        The mixture of :meth:`forecast_views` as one bar distribution; arguments, errors and
        shapes as there.

        Returns:
            The (M,) forecast.
        """
        return self.forecast_views(
            configs, ctx_curve=ctx_curve, ctx_t=ctx_t, ctx_y=ctx_y, qry_curve=qry_curve,
            qry_t=qry_t, single_weight=single_weight,
        ).mixed()  # fmt: skip

    def forecast_views(
        self,
        configs: ArrayLike,
        *,
        ctx_curve: ArrayLike,
        ctx_t: ArrayLike,
        ctx_y: ArrayLike,
        qry_curve: ArrayLike,
        qry_t: ArrayLike,
        single_weight: float | None = None,
    ) -> ViewMixture:
        """One task given as arrays, its predictive kept as its two views (see the class).

        Use it where only PI, EI or the mean are needed and many queries read the single-curve
        view on few distinct rows or not at all (an optimiser's decision: only the paused runs'
        queries read it, and no new configuration's): the single view's share is worked out once
        per distinct row, and the (M, K) mixture is not built.

        Curves are identified by their row in ``configs`` (rows may be equal, e.g. repeated
        seeds), so any curve can be queried.

        Args:
            configs: (C, D) hyperparameters in [0, 1] (D may be 0).
            ctx_curve: (N,) int curve index in [0, C) of each context point.
            ctx_t: (N,) times in (0, 1].
            ctx_y: (N,) scores in [0, 1].
            qry_curve: (M,) int curve index of each query.
            qry_t: (M,) query times in (0, 1].
            single_weight: weight of the single-curve view (see the class); None: the
                surrogate's ``single_weight``.

        Returns:
            The (M,) two-view predictive.

        Raises:
            ValueError: shapes, ranges or indices are invalid, D > ``max_hps``, or
                ``single_weight`` is outside [0, 1].
        """
        w = self.single_weight if single_weight is None else _check_weight(single_weight)
        cfg = np.asarray(configs, dtype=np.float64)
        if cfg.ndim != 2:
            raise ValueError(f"configs must be (C, D), got shape {cfg.shape}")
        c, d = cfg.shape
        if d > self.config.max_hps:
            raise ValueError(
                f"configs have {d} hyperparameters, more than the model's max_hps="
                f"{self.config.max_hps}"
            )
        if not np.isfinite(cfg).all() or ((cfg < 0) | (cfg > 1)).any():
            raise ValueError("configs must lie in [0, 1]")
        arrays = {}
        for name, value, kind in (
            ("ctx_curve", ctx_curve, "index"),
            ("ctx_t", ctx_t, "t"),
            ("ctx_y", ctx_y, "y"),
            ("qry_curve", qry_curve, "index"),
            ("qry_t", qry_t, "t"),
        ):
            arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
            if arr.ndim != 1 or not np.isfinite(arr).all():
                raise ValueError(f"{name} must be a 1-D array of finite numbers")
            bad = {
                "index": (arr < 0) | (arr >= c) | (arr != np.round(arr)),
                "t": (arr <= 0) | (arr > 1),
                "y": (arr < 0) | (arr > 1),
            }[kind]
            if bad.any():
                what = {"index": f"integers in [0, {c})", "t": "in (0, 1]", "y": "in [0, 1]"}
                raise ValueError(f"{name} must hold values {what[kind]}")
            arrays[name] = arr
        if not arrays["ctx_curve"].size == arrays["ctx_t"].size == arrays["ctx_y"].size:
            raise ValueError("ctx_curve, ctx_t and ctx_y must have the same length")
        if arrays["qry_curve"].size != arrays["qry_t"].size or arrays["qry_t"].size == 0:
            raise ValueError("qry_curve and qry_t must have the same, non-zero length")
        inp = self._arrays_input(cfg[None], **{k: v[None] for k, v in arrays.items()})
        with torch.no_grad():  # not inference_mode: the logits stay usable without a copy
            logits = self.model(inp)[0].float().cpu()  # (M, K)
        return self._views(logits, w, **arrays)

    def forecast_single(
        self, curves: Sequence[tuple[ArrayLike, ArrayLike]], qry_t: ArrayLike
    ) -> BarForecast:
        """Each curve alone, without hyperparameters (the LC-PFN use), batched.

        Args:
            curves: per curve its observed (t, y), each (n_i,), n_i >= 0.
            qry_t: (M,) one query time per curve (M = len(curves)).

        Returns:
            The (M,) forecast: entry i is curve i's value at ``qry_t[i]`` given only its own points.
        """
        qt = np.atleast_1d(np.asarray(qry_t, dtype=np.float64))
        b = len(curves)
        if b == 0 or qt.shape != (b,):
            raise ValueError(f"give one query time per curve: {b} curves, qry_t {qt.shape}")
        if not np.isfinite(qt).all() or ((qt <= 0) | (qt > 1)).any():
            raise ValueError("qry_t must lie in (0, 1]")
        pts = []
        for i, (t, y) in enumerate(curves):
            t = np.atleast_1d(np.asarray(t, np.float64))
            y = np.atleast_1d(np.asarray(y, np.float64))
            if t.shape != y.shape or t.ndim != 1:
                raise ValueError(f"curve {i}: t and y must be 1-D of the same length")
            if (
                not (np.isfinite(t).all() and np.isfinite(y).all())
                or ((t <= 0) | (t > 1)).any()
                or ((y < 0) | (y > 1)).any()
            ):
                raise ValueError(f"curve {i}: t must lie in (0, 1] and y in [0, 1]")
            pts.append((np.full(t.size, i), t, y))
        ctx_curve, ctx_t, ctx_y = (np.concatenate(a) for a in zip(*pts, strict=True))
        rows, row_of = self._single_view(ctx_curve, ctx_t, ctx_y, np.arange(b), qt)
        return BarForecast(rows[row_of], self._cpu_distribution)

    def mix_single_view(
        self,
        logits: Tensor,
        w: float,
        *,
        ctx_curve: np.ndarray,
        ctx_t: np.ndarray,
        ctx_y: np.ndarray,
        qry_curve: np.ndarray,
        qry_t: np.ndarray,
    ) -> Tensor:
        """The predictive of one task from its context view: ``logits`` mixed with weight ``w``
        with the single-curve view of the queries on curves with points (returned as they are
        for ``w = 0``, and the rows of queries on curves without points as log-probabilities).

        Args:
            logits: (M, K) the network's output for the task (the context view), on the CPU.
            w: weight of the single-curve view, in [0, 1].
            ctx_curve, ctx_t, ctx_y: (N,) the task's context points (float64 arrays).
            qry_curve, qry_t: (M,) its queries.

        Returns:
            (M, K) log-probabilities of the buckets (``logits`` itself for ``w = 0``).

        Raises:
            ValueError: ``w`` is outside [0, 1] (or NaN).
        """
        return self._views(
            logits, w, ctx_curve=ctx_curve, ctx_t=ctx_t, ctx_y=ctx_y, qry_curve=qry_curve,
            qry_t=qry_t,
        ).mixed().logits  # fmt: skip

    def _views(
        self,
        logits: Tensor,
        w: float,
        *,
        ctx_curve: np.ndarray,
        ctx_t: np.ndarray,
        ctx_y: np.ndarray,
        qry_curve: np.ndarray,
        qry_t: np.ndarray,
    ) -> ViewMixture:
        """The two views of one task from its context view ``logits`` (M, K) on the CPU. The
        single-curve view is computed for the queries on curves with points only (none for
        ``w = 0``)."""
        w = _check_weight(w)
        context = BarForecast(logits, self._cpu_distribution)
        index = np.full(len(qry_curve), -1, dtype=np.int64)  # -1: the context view alone
        reads = np.isin(qry_curve, ctx_curve)  # curves without points: nothing to read alone
        if w == 0.0 or not reads.any():
            return ViewMixture(context, None, index, w)
        rows, index[reads] = self._single_view(
            ctx_curve, ctx_t, ctx_y, np.asarray(qry_curve)[reads], np.asarray(qry_t)[reads]
        )
        return ViewMixture(context, BarForecast(rows, self._cpu_distribution), index, w)

    def _single_view(
        self,
        ctx_curve: np.ndarray,
        ctx_t: np.ndarray,
        ctx_y: np.ndarray,
        qry_curve: np.ndarray,
        qry_t: np.ndarray,
    ) -> tuple[Tensor, np.ndarray]:
        """Each query read from its own curve's points alone: (U, K) log-probabilities of the
        U distinct (curve, time) pairs (CPU), and (M,) the pair of each query.

        One row per queried curve that has points, plus one row shared by the queried curves
        without points (they all read nothing), each distinct query time asked once per row.
        The rows' curves are encoded alone (``_encode_single``: cached, one task), and
        their queries decoded in one pass. Inputs: (N,) context and (M,) query arrays.
        """
        ctx_curve, ctx_t, ctx_y, qry_curve, qry_t = (
            np.asarray(a, dtype=np.float64) for a in (ctx_curve, ctx_t, ctx_y, qry_curve, qry_t)
        )  # float64: the cache keys are the points' bytes
        key = np.where(np.isin(qry_curve, ctx_curve), qry_curve, -1.0)  # -1: no points
        pairs, pair_of = np.unique(np.stack([key, qry_t]), axis=1, return_inverse=True)
        rows, row_of_pair = np.unique(pairs[0], return_inverse=True)  # pairs sorted by row
        slot = np.arange(pairs.shape[1]) - np.searchsorted(row_of_pair, row_of_pair)
        sel = np.isin(ctx_curve, rows)
        order = np.lexsort((ctx_t[sel], ctx_curve[sel]))  # by curve, then time
        ct, cy = ctx_t[sel][order], ctx_y[sel][order]
        row_of_pt = np.searchsorted(rows, ctx_curve[sel][order])  # non-decreasing
        ends = np.searchsorted(row_of_pt, np.arange(rows.size + 1))  # row r: ends[r]:ends[r+1]
        enc = self._encode_single(
            [(ct[a:b], cy[a:b]) for a, b in zip(ends[:-1], ends[1:], strict=True)]
        )
        r, m = rows.size, int(slot.max()) + 1
        q_t, q_mask = np.ones((r, m)), np.zeros((r, m), dtype=bool)
        q_t[row_of_pair, slot], q_mask[row_of_pair, slot] = pairs[1], True
        inp = self._arrays_input(  # decode reads the configurations and the queries only
            np.zeros((r, 1, 0)),
            ctx_curve=np.zeros((r, 1)),
            ctx_t=np.ones((r, 1)),
            ctx_y=np.zeros((r, 1)),
            qry_curve=np.zeros((r, m)),
            qry_t=q_t,
            qry_mask=q_mask,
        )
        with torch.no_grad():
            out = self.model.decode(inp, enc).float().cpu().log_softmax(-1)  # (R, m, K)
        return out[row_of_pair, slot], pair_of.reshape(-1)

    def _encode_single(self, curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> CurveEncoding:
        """Each curve's (t, y) points, time-ordered, encoded as a task of its own without
        hyperparameters: a (R, 1, ·) encoding for R curves.

        Encodings are cached by the points' (float64) bytes for the current weights, so a curve
        asked about again with the same scores is not encoded again. The curves to encode share
        one task, each reading only itself (``encode(isolated=True)``), so no curve is padded to
        the longest; a task holds at most :data:`SINGLE_PASS_POINTS` points (or one longer curve
        alone), to bound memory.
        """
        keys = [(t.tobytes(), y.tobytes()) for t, y in curves]
        weights = None if self.model.training else self._weights_key()  # None: no caching
        parts: list[tuple[Tensor, Tensor, Tensor] | None] = [None] * len(curves)
        if weights is not None:
            with self._single_cache_lock:
                if weights != self._single_cache_key:
                    self._single_cache.clear()
                    self._single_cache_key = weights
                parts = [self._single_cache.get(k) for k in keys]
                for k, part in zip(keys, parts, strict=True):
                    if part is not None:
                        self._single_cache.move_to_end(k)
        todo = np.array([i for i, part in enumerate(parts) if part is None], dtype=np.int64)
        sizes = np.array([curves[i][0].size for i in todo], dtype=np.int64)
        chunk = _chunks(sizes, SINGLE_PASS_POINTS)  # (T,) task of each row to encode
        for p in np.unique(chunk):
            in_task = chunk == p
            idx = todo[in_task]  # (R,) rows of this task, one curve each
            t = np.concatenate([curves[i][0] for i in idx] + [np.ones(1)])
            y = np.concatenate([curves[i][1] for i in idx] + [np.zeros(1)])
            pad = np.arange(t.size) == t.size - 1  # one masked point: a task needs >= 1
            inp = self._arrays_input(
                np.zeros((1, idx.size, 0)),
                ctx_curve=np.append(np.repeat(np.arange(idx.size), sizes[in_task]), 0)[None],
                ctx_t=t[None],
                ctx_y=y[None],
                qry_curve=np.zeros((1, 1)),
                qry_t=np.ones((1, 1)),
                ctx_mask=~pad[None],
            )
            with torch.no_grad():
                enc = self.model.encode(inp, isolated=True)
            for j, i in enumerate(idx):  # copies, so a cached row does not keep its task alive
                parts[i] = (
                    enc.z[0, j : j + 1].clone(),
                    enc.stats[0, j : j + 1].clone(),
                    enc.observed[0, j : j + 1].clone(),
                )
        if todo.size and weights is not None:
            with self._single_cache_lock:
                if weights == self._single_cache_key:  # else the weights changed meanwhile
                    for i in todo:
                        self._single_cache[keys[i]] = parts[i]
                    while len(self._single_cache) > SINGLE_VIEW_CACHE_SIZE:
                        self._single_cache.popitem(last=False)
        z, stats, observed = (torch.stack(x) for x in zip(*parts, strict=True))
        return CurveEncoding(z=z, stats=stats, observed=observed)  # (R, 1, d), (R, 1, S), (R, 1)

    def _weights_key(self) -> tuple | None:
        """Changes whenever the network's weights may have: another module or parameter,
        tensors moved or replaced (storage), or changed in place (torch's version counter,
        bumped by every in-place write such as an optimiser step or ``load_state_dict``; not
        by writes to ``.data``, see :meth:`clear_cache`). None for weights without a version
        counter (made under ``torch.inference_mode``): nothing is cached for them."""
        params = tuple(self.model.parameters())
        if any(q.is_inference() for q in params):
            return None
        return (id(self.model), *((id(q), q.data_ptr(), q._version) for q in params))

    def _arrays_input(
        self,
        configs: np.ndarray,
        *,
        ctx_curve: np.ndarray,
        ctx_t: np.ndarray,
        ctx_y: np.ndarray,
        qry_curve: np.ndarray,
        qry_t: np.ndarray,
        ctx_mask: np.ndarray | None = None,
        qry_mask: np.ndarray | None = None,
    ) -> CurveSetInput:
        """Validated arrays -> CurveSetInput: configs (B, C, D), the rest (B, N) / (B, M)."""
        b, c, d = configs.shape
        dev = self.device
        padded = np.zeros((b, c, self.config.max_hps), dtype=np.float32)
        padded[:, :, :d] = configs
        hp_mask = torch.zeros(b, self.config.max_hps, dtype=torch.bool, device=dev)
        hp_mask[:, :d] = True
        mask = np.ones(ctx_t.shape, dtype=bool) if ctx_mask is None else ctx_mask

        def f32(x: np.ndarray) -> Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.float32), device=dev)

        def i64(x: np.ndarray) -> Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.int64), device=dev)

        return CurveSetInput(
            configs=f32(padded),
            hp_mask=hp_mask,
            curve_mask=torch.ones(b, c, dtype=torch.bool, device=dev),
            ctx_curve=i64(ctx_curve),
            ctx_t=f32(ctx_t),
            ctx_y=f32(ctx_y),
            ctx_mask=torch.as_tensor(mask, device=dev),
            qry_curve=i64(qry_curve),
            qry_t=f32(qry_t),
            qry_mask=torch.as_tensor(
                np.ones(qry_t.shape, dtype=bool) if qry_mask is None else qry_mask, device=dev
            ),
        )

    def _check_configs(self, curves: Sequence[Curve]) -> None:
        lengths = {c.config.size for c in curves}
        if len(lengths) > 1:
            raise ValueError(
                f"all curves must have configs of the same length, got lengths {sorted(lengths)}"
            )
        d = lengths.pop() if lengths else 0
        if d > self.config.max_hps:
            raise ValueError(
                f"configs have {d} hyperparameters, more than the model's max_hps="
                f"{self.config.max_hps}"
            )

    def _predict(
        self, curves: Sequence[Curve], targets: Sequence[tuple[int, np.ndarray]]
    ) -> list[Prediction]:
        """The predictive of ``curves`` (context points from their y) at targets, each a curve
        index and its (L,) query times. Returns one Prediction per target."""
        configs, arrays = self._task_arrays(curves, targets)
        inp = self._arrays_input(configs[None], **{k: v[None] for k, v in arrays.items()})
        with torch.no_grad():  # not inference_mode: the logits stay usable without a copy
            logits = self.model(inp)[0].float().cpu()  # (M, K)
        logits = self.mix_single_view(logits, self.single_weight, **arrays)
        out, start = [], 0
        for curve, t in targets:
            stop = start + t.size
            out.append(
                Prediction(
                    config=curves[curve].config,
                    t=t,
                    logits=logits[start:stop],  # (L, K)
                    distribution=self._cpu_distribution,
                )
            )
            start = stop
        return out

    @staticmethod
    def _task_arrays(
        curves: Sequence[Curve], targets: Sequence[tuple[int, np.ndarray]]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The task as arrays: configs (C, D), and ctx_curve, ctx_t, ctx_y (N,) and qry_curve,
        qry_t (M,), the keyword arguments of ``_arrays_input`` and ``mix_single_view``."""
        d = curves[0].config.size if curves else 0
        configs = np.stack([cv.config for cv in curves]) if curves else np.zeros((0, d))
        observed = [(i, cv) for i, cv in enumerate(curves) if cv.y is not None and cv.t.size]
        arrays = {
            "ctx_curve": np.concatenate([np.full(cv.t.size, i) for i, cv in observed] or [[]]),
            "ctx_t": np.concatenate([cv.t for _, cv in observed] or [[]]),
            "ctx_y": np.concatenate([cv.y for _, cv in observed] or [[]]),
            "qry_curve": np.concatenate([np.full(t.size, i) for i, t in targets]),
            "qry_t": np.concatenate([t for _, t in targets]),
        }
        return configs, {k: v.astype(np.float64) for k, v in arrays.items()}

    # ---- prediction in metric units -----------------------------------------------------------

    def predict_final(
        self,
        runs: Sequence[RawRun] | Mapping[Hashable, RawRun],
        *,
        max_step: float,
        higher_is_better: bool,
        lower_bound: float | None = None,
        upper_bound: float | None = None,
        interval: float = 0.9,
        steps: ArrayLike | None = None,
    ) -> list[FinalPrediction]:
        """Predict every run's metric at ``max_step`` (and optionally at other steps), raw units.

        All runs form one task (one forward pass per view, see the class). Their values are mapped
        to scores with a :class:`~pfn.scaling.MetricScaler` fitted to each run's best finite value
        (diverged points score 0), steps become ``t = step / max_step``, and each run is queried as
        its own curve (even when runs share a config, e.g. repeated seeds, or have none).

        Args:
            runs: the runs, as a sequence (identified by position) or a mapping (by key).
            max_step: the budget whose value is predicted; every observed step must be in
                (0, max_step].
            higher_is_better: False for losses.
            lower_bound, upper_bound: known bounds of the metric (None: unbounded).
            interval: probability mass of the reported central interval, in (0, 1).
            steps: extra raw steps in (0, max_step] to predict along the way (for plots);
                ``max_step`` is always predicted, last.

        Returns:
            One :class:`FinalPrediction` per run, in input order.

        Raises:
            ValueError: no runs; steps outside (0, max_step]; steps and values of different
                lengths; some runs with a config and some without; a bad interval or bounds.
        """
        keys = list(runs.keys()) if isinstance(runs, Mapping) else list(range(len(runs)))
        items = [runs[k] for k in keys]
        if not items:
            raise ValueError("no runs to predict")
        if not (math.isfinite(max_step) and max_step > 0):
            raise ValueError(f"max_step must be a positive number, got {max_step}")
        if not 0.0 < interval < 1.0:
            raise ValueError(f"interval must lie in (0, 1), got {interval}")
        with_config = [r.config is not None for r in items]
        if any(with_config) and not all(with_config):
            raise ValueError("either every run has a config or none has")
        parsed = [self._parse_run(k, r, max_step) for k, r in zip(keys, items, strict=True)]
        scaler = MetricScaler.fit_runs(
            [v for _, v, _ in parsed],
            higher_is_better=higher_is_better,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
        )
        curves = [Curve(cfg, t=s / max_step, y=scaler.to_score(v)) for s, v, cfg in parsed]
        self._check_configs(curves)
        query_steps = self._query_steps(steps, max_step)  # (L,)
        t = np.minimum(query_steps / max_step, 1.0)
        preds = self._predict(curves, [(i, t) for i in range(len(curves))])
        q_lo = (1.0 - interval) / 2
        out = []
        for key, pred in zip(keys, preds, strict=True):
            median = scaler.to_metric(pred.quantile(0.5))
            a = scaler.to_metric(pred.quantile(q_lo))
            b = scaler.to_metric(pred.quantile(1.0 - q_lo))
            lower, upper = np.minimum(a, b), np.maximum(a, b)
            out.append(
                FinalPrediction(
                    run=key,
                    final=float(median[-1]),
                    lower=float(lower[-1]),
                    upper=float(upper[-1]),
                    interval=interval,
                    steps=query_steps,
                    median_path=median,
                    lower_path=lower,
                    upper_path=upper,
                    score=pred,
                    scaler=scaler,
                )
            )
        return out

    @staticmethod
    def _parse_run(
        key: Hashable, run: RawRun, max_step: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, values, config) of one run as arrays, validated."""
        try:
            s = np.atleast_1d(np.asarray(run.steps, dtype=np.float64))
            v = np.atleast_1d(np.asarray(run.values, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise ValueError(f"run {key!r}: steps and values must be numeric") from err
        if s.ndim != 1 or s.shape != v.shape:
            raise ValueError(
                f"run {key!r}: steps and values must be 1-D of the same length, got shapes "
                f"{s.shape} and {v.shape}"
            )
        if not np.isfinite(s).all() or ((s <= 0) | (s > max_step)).any():
            raise ValueError(
                f"run {key!r}: steps must lie in (0, max_step={max_step:g}], got "
                f"{s.min() if s.size else 'none'}..{s.max() if s.size else 'none'}"
            )
        cfg = np.zeros(0) if run.config is None else np.asarray(run.config, dtype=np.float64)
        return s, v, cfg

    @staticmethod
    def _query_steps(steps: ArrayLike | None, max_step: float) -> np.ndarray:
        """Sorted unique query steps ending with ``max_step``: (L,)."""
        extra = np.zeros(0) if steps is None else np.atleast_1d(np.asarray(steps, np.float64))
        if (
            extra.ndim != 1
            or not np.isfinite(extra).all()
            or ((extra <= 0) | (extra > max_step)).any()
        ):
            raise ValueError(f"steps must be a 1-D list of values in (0, max_step={max_step:g}]")
        return np.unique(np.append(extra, max_step))


#: The most context points encoded in one task by the single-curve view (``_encode_single``; a
#: longer curve goes alone): bounds its memory (tens of MB for the shipped network) however many
#: curves are asked about.
SINGLE_PASS_POINTS = 16384


def _chunks(sizes: np.ndarray, cap: int) -> np.ndarray:
    """Consecutive rows of ``sizes`` (R,) points grouped greedily into tasks of at most ``cap``
    points (a row longer than ``cap`` alone): (R,) task ids, non-decreasing."""
    out = np.zeros(len(sizes), dtype=np.int64)
    task, total = 0, 0
    for i, n in enumerate(sizes):
        if total and total + n > cap:
            task, total = task + 1, 0
        out[i], total = task, total + int(n)
    return out


def _check_weight(w: float) -> float:
    """``w`` as a float in [0, 1], or a ValueError."""
    w = float(w)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"single_weight must lie in [0, 1], got {w}")
    return w
