"""Recorded learning curves: reading the shared HDF5 layout into :class:`CurveTable` objects.

The layout (one group per task; see ``../shared/data/README.md``): ``curves`` (C, T) float32 with
NaN for "not recorded", ``steps`` (T,), raw ``configs`` (C, H) with ``config_names``,
``config_log_scale``, ``config_is_int``, optionally ``config_categories`` (then one column holds a
category index) and ``seeds``; group attributes ``metric``, ``higher_is_better``, ``x_axis``,
``metric_lower_bound``, ``metric_upper_bound`` (``inf`` for an unbounded side).

A table also carries the hyperparameters encoded to [0, 1] for the network (``configs``):

* a numeric column is min-max scaled over the table's rows, after a log for log-scale columns
  (a constant column becomes 0.5);
* the categorical column becomes one one-hot dimension per category (so ``D`` can exceed ``H``).

Evaluations at steps <= 0 (the value before training, e.g. TaskSet's first column) are dropped:
the prior's curves start at t > 0, and a run's value before any training says nothing about its
hyperparameters. Nothing here depends on a task's name.

Shapes: ``C`` curves (runs), ``T`` recorded steps, ``H`` raw hyperparameters, ``D`` encoded ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

__all__ = ["CurveTable", "EncodedConfigs", "encode_configs", "read_curve_tables"]

TIME_MODES = ("index", "step")


@dataclass(frozen=True, eq=False)
class CurveTable:
    """One task of recorded curves.

    ``times(mode)`` gives the normalised time of each recorded step: ``"step"`` (default) is
    ``t = step / steps[-1]``, the definition :meth:`pfn.surrogate.Surrogate.predict_final` uses;
    ``"index"`` treats every recorded evaluation as one step of fidelity (``t = i / T`` for the
    i-th, 1-based). The two agree on evenly spaced grids. On geometric grids (LCDB's training-set
    sizes 16, 23, 32, ...) "step" puts the observed prefixes at small t, i.e. tells the network
    how much budget is left; it measured better there (held-out log-likelihood 1.07 against 0.76
    with the preview model at N = 1000).
    """

    name: str
    curves: np.ndarray  # (C, T) raw metric values; NaN = not recorded; may be ±inf or huge
    steps: np.ndarray  # (T,) raw x positions, increasing, all > 0
    configs: np.ndarray  # (C, D) hyperparameters encoded to [0, 1]
    raw_configs: np.ndarray  # (C, H) as stored
    hp_names: tuple[str, ...]  # (D,) names of the encoded dimensions ("name=category" for one-hot)
    metric: str
    higher_is_better: bool
    lower_bound: float | None  # None: unbounded below
    upper_bound: float | None  # None: unbounded above
    x_axis: str
    # the encoded dimensions of each raw hyperparameter, in order: (j,) for a numeric one, the
    # consecutive one-hot dimensions of a categorical one; () means one group per dimension
    hp_groups: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        d = self.configs.shape[1]
        if len(self.hp_names) != d:
            raise ValueError(f"{len(self.hp_names)} hp_names for {d} encoded dimensions")
        if not self.hp_groups:
            object.__setattr__(self, "hp_groups", tuple((j,) for j in range(d)))
        flat = [j for group in self.hp_groups for j in group]
        if flat != list(range(d)) or not all(self.hp_groups):
            raise ValueError(
                f"hp_groups {self.hp_groups} must split the {d} encoded dimensions into "
                "non-empty consecutive runs, in order"
            )

    @property
    def n_curves(self) -> int:
        """C."""
        return int(self.curves.shape[0])

    @property
    def n_steps(self) -> int:
        """T."""
        return int(self.curves.shape[1])

    def times(self, mode: str = "step") -> np.ndarray:
        """(T,) normalised times in (0, 1], the last being 1."""
        if mode == "index":
            return np.arange(1, self.n_steps + 1, dtype=np.float64) / self.n_steps
        if mode == "step":
            return self.steps / self.steps[-1]
        raise ValueError(f"time mode must be one of {TIME_MODES}, got {mode!r}")


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


@dataclass(frozen=True, eq=False)
class EncodedConfigs:
    """Hyperparameters encoded to [0, 1] (:func:`encode_configs`)."""

    values: np.ndarray  # (C, D) in [0, 1]
    names: tuple[str, ...]  # (D,) "name" for a numeric dimension, "name=category" for one-hot
    groups: tuple[tuple[int, ...], ...]  # (H,) the encoded dimensions of each raw column


def encode_configs(
    raw: np.ndarray,
    *,
    names: list[str],
    log_scale: np.ndarray,
    categories: list[str] | None,
) -> EncodedConfigs:
    """Encode raw hyperparameters to [0, 1] (see the module docstring).

    Args:
        raw: (C, H) raw values.
        names: (H,) column names.
        log_scale: (H,) bool, log-scale columns (must be > 0).
        categories: names of the k categories when one column is a category index in [0, k).

    Returns:
        The (C, D) encoded configs, the names of their dimensions, and the dimensions of each
        raw column (a categorical's one-hot block stays one group).

    Raises:
        ValueError: NaN/inf values, a non-positive log-scale value, or no (or several ambiguous)
            columns that can hold the category index.
    """
    raw = np.asarray(raw, dtype=np.float64)
    c, h = raw.shape
    if not np.isfinite(raw).all():
        raise ValueError("configs contain NaN or inf")
    cat_col = None
    if categories:
        k = len(categories)
        fits = [
            j
            for j in range(h)
            if np.all(raw[:, j] == np.round(raw[:, j]))
            and raw[:, j].min() >= 0
            and raw[:, j].max() < k
        ]
        if h == 1 and fits:
            cat_col = 0
        elif len(fits) == 1:
            cat_col = fits[0]
        else:
            raise ValueError(
                f"config_categories has {k} entries but {len(fits)} columns could hold the "
                "category index; cannot tell which column is categorical"
            )
    cols, out_names, groups = [], [], []
    for j in range(h):
        first = len(out_names)
        x = raw[:, j]
        if j == cat_col:
            assert categories is not None
            onehot = np.zeros((c, len(categories)))
            onehot[np.arange(c), x.astype(int)] = 1.0
            cols.append(onehot)
            out_names += [f"{names[j]}={cat}" for cat in categories]
            groups.append(tuple(range(first, len(out_names))))
            continue
        if log_scale[j]:
            if (x <= 0).any():
                raise ValueError(f"log-scale hyperparameter {names[j]!r} has values <= 0")
            x = np.log(x)
        lo, hi = x.min(), x.max()
        cols.append(((x - lo) / (hi - lo) if hi > lo else np.full(c, 0.5))[:, None])
        out_names.append(names[j])
        groups.append((first,))
    encoded = np.concatenate(cols, axis=1) if cols else np.zeros((c, 0))
    return EncodedConfigs(np.clip(encoded, 0.0, 1.0), tuple(out_names), tuple(groups))


def _bound(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_curve_tables(path: str | Path, tasks: list[str] | None = None) -> list[CurveTable]:
    """Read the tasks of an HDF5 file in the shared layout.

    Args:
        path: the file.
        tasks: group names to read (in this order); None for all, in file order.

    Returns:
        One :class:`CurveTable` per task.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown task name, or a group that does not follow the layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no curve file at {path}")
    out = []
    with h5py.File(path, "r") as fh:
        names = list(fh.keys())
        if tasks is not None:
            unknown = [t for t in tasks if t not in fh]
            if unknown:
                raise ValueError(f"{path} has no task(s) {unknown}; it has {names}")
            names = list(tasks)
        for name in names:
            out.append(_read_group(fh[name], f"{path}:{name}"))
    return out


def _read_group(g: h5py.Group, where: str) -> CurveTable:
    missing = [k for k in ("curves", "steps", "configs") if k not in g]
    if missing:
        raise ValueError(f"{where} lacks dataset(s) {missing}")
    curves = np.asarray(g["curves"][:], dtype=np.float64)
    steps = np.asarray(g["steps"][:], dtype=np.float64)
    raw = np.asarray(g["configs"][:], dtype=np.float64)
    if curves.ndim != 2 or steps.shape != (curves.shape[1],) or raw.shape[:1] != curves.shape[:1]:
        raise ValueError(
            f"{where}: shapes do not match: curves {curves.shape}, steps {steps.shape}, configs "
            f"{raw.shape}"
        )
    if raw.ndim == 1:
        raw = raw[:, None]
    if not (np.isfinite(steps).all() and (np.diff(steps) > 0).all()):
        raise ValueError(f"{where}: steps must be finite and increasing")
    keep = steps > 0
    if not keep.any():
        raise ValueError(f"{where}: no step > 0")
    h = raw.shape[1]
    hp_names = _text(g["config_names"][:]) if "config_names" in g else [f"x{j}" for j in range(h)]
    log_scale = (
        np.asarray(g["config_log_scale"][:], dtype=bool)
        if "config_log_scale" in g
        else np.zeros(h, dtype=bool)
    )
    categories = _text(g["config_categories"][:]) if "config_categories" in g else None
    try:
        encoded = encode_configs(raw, names=hp_names, log_scale=log_scale, categories=categories)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    attrs = g.attrs
    if "higher_is_better" not in attrs:
        raise ValueError(f"{where} lacks the attribute higher_is_better")
    return CurveTable(
        name=g.name.lstrip("/"),
        curves=curves[:, keep],
        steps=steps[keep],
        configs=encoded.values,
        raw_configs=raw,
        hp_names=encoded.names,
        metric=str(attrs.get("metric", "metric")),
        higher_is_better=bool(attrs["higher_is_better"]),
        lower_bound=_bound(attrs.get("metric_lower_bound")),
        upper_bound=_bound(attrs.get("metric_upper_bound")),
        x_axis=str(attrs.get("x_axis", "step")),
        hp_groups=encoded.groups,
    )
