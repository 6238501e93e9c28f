"""The search space of the freeze-thaw optimiser, and its encoding into the unit cube.

A `Space` is an ordered mapping of names to `Float`, `Int` and `Categorical` parameters. The
surrogate network sees a configuration as a point of ``[0, 1]^D`` (``D = Space.dim``):

- a `Float` or `Int` is one dimension: min-max scaled, after taking the log when ``log=True``;
  an `Int` is scaled like a float and decoding rounds to the nearest integer in range;
- a `Categorical` with ``k`` choices is ``k`` one-hot dimensions; decoding takes the argmax.

Configurations are plain ``dict``s of Python values (``float``, ``int``, the choice object).
`CandidateTable` is a fixed set of configurations, for tabular benchmarks and fixed grids.

Legend: ``N`` configurations, ``D`` encoded dimensions, ``P`` parameters.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal

import numpy as np

SPACE_FORMAT_VERSION = 1  # of `Space.to_dict`; bumped when the layout changes


# --- parameters --------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    """A real number, but not a bool (``True`` is an ``int`` in Python, never a sensible bound)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_bounds(kind: str, low: Any, high: Any, log: bool) -> None:
    """Shared validation of `Float` and `Int` bounds; raises ValueError naming the bad argument."""
    for arg, value in (("low", low), ("high", high)):
        if not is_number(value):
            raise ValueError(f"{kind}: {arg} must be a real number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{kind}: {arg} must be finite, got {value!r}")
    if not low < high:
        raise ValueError(f"{kind}: low must be < high, got low={low!r}, high={high!r}")
    if not isinstance(log, (bool, np.bool_)):
        raise ValueError(f"{kind}: log must be a bool, got {log!r}")
    if log and low <= 0:
        raise ValueError(f"{kind}: log=True needs low > 0, got low={low!r}")


@dataclass(frozen=True)
class Float:
    """A real hyperparameter in ``[low, high]``; ``log=True`` searches it on a log scale."""

    low: float
    high: float
    _: KW_ONLY
    log: bool = False  # scale as log(value): learning rates, weight decays, ...

    def __post_init__(self) -> None:
        _check_bounds("Float", self.low, self.high, self.log)
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))
        object.__setattr__(self, "log", bool(self.log))


@dataclass(frozen=True)
class Int:
    """An integer hyperparameter in ``[low, high]`` (both included); ``log=True`` as for `Float`.

    Bounds may be given as integral floats (``8.0``); they are stored as ``int``.
    """

    low: int
    high: int
    _: KW_ONLY
    log: bool = False  # scale as log(value): widths, batch sizes, ...

    def __post_init__(self) -> None:
        _check_bounds("Int", self.low, self.high, self.log)
        for arg in ("low", "high"):
            value = getattr(self, arg)
            if not float(value).is_integer():
                raise ValueError(f"Int: {arg} must be an integer, got {value!r}")
            object.__setattr__(self, arg, int(value))
        object.__setattr__(self, "log", bool(self.log))


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds; anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def _choice_key(value: Any) -> tuple[str, Any]:
    """Identity of a choice: bools apart from numbers (``True == 1`` in Python), ``1 == 1.0``."""
    value = _plain(value)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, numbers.Real):
        return ("number", value)
    return ("other", value)


@dataclass(frozen=True)
class Categorical:
    """An unordered hyperparameter taking one of ``choices`` (str, int, float or bool values).

    Choices must be distinct: ``1`` and ``1.0`` are the same choice, ``True`` and ``1`` are not.
    A single choice is allowed (a parameter held fixed, one always-hot dimension) so that a space
    can pin a parameter without changing its layout.
    """

    choices: tuple[str | int | float | bool, ...]

    def __post_init__(self) -> None:
        if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Sequence):
            raise ValueError(
                f"Categorical: choices must be a sequence (list or tuple), got {self.choices!r}"
            )
        choices = tuple(_plain(c) for c in self.choices)
        if not choices:
            raise ValueError("Categorical: choices must not be empty")
        seen: set[tuple[str, Any]] = set()
        for choice in choices:
            if not isinstance(choice, (str, int, float, bool)):
                raise ValueError(
                    f"Categorical: choices must be str, int, float or bool, got {choice!r}"
                )
            if isinstance(choice, float) and not math.isfinite(choice):
                raise ValueError(f"Categorical: float choices must be finite, got {choice!r}")
            key = _choice_key(choice)
            if key in seen:
                raise ValueError(f"Categorical: choices must be distinct, {choice!r} repeats")
            seen.add(key)
        object.__setattr__(self, "choices", choices)

    def index(self, value: Any) -> int:
        """Position of ``value`` among the choices; ValueError when it is not one of them."""
        try:
            key = _choice_key(value)
            for i, choice in enumerate(self.choices):
                if _choice_key(choice) == key:
                    return i
        except (TypeError, ValueError):  # e.g. an array: incomparable, so not a choice
            pass
        raise ValueError(f"{value!r} is not one of the choices {list(self.choices)!r}")


Param = Float | Int | Categorical


def _param_to_dict(param: Param) -> dict[str, Any]:
    """JSON-ready description of one parameter."""
    if isinstance(param, Categorical):
        return {"type": "categorical", "choices": list(param.choices)}
    kind = "float" if isinstance(param, Float) else "int"
    return {"type": kind, "low": param.low, "high": param.high, "log": param.log}


def _param_from_dict(name: str, data: Mapping[str, Any]) -> Param:
    """Inverse of `_param_to_dict`; ValueError naming the parameter on a malformed entry."""
    kind = data.get("type")
    try:
        if kind == "float":
            return Float(data["low"], data["high"], log=data.get("log", False))
        if kind == "int":
            return Int(data["low"], data["high"], log=data.get("log", False))
        if kind == "categorical":
            return Categorical(data["choices"])
    except KeyError as err:
        raise ValueError(f"parameter {name!r}: missing field {err.args[0]!r}") from None
    except ValueError as err:
        raise ValueError(f"parameter {name!r}: {err}") from None
    raise ValueError(f"parameter {name!r}: unknown type {kind!r}")


# --- numeric scaling ---------------------------------------------------------------------------


def _to_unit(param: Float | Int, value: np.ndarray) -> np.ndarray:
    """Values in ``[low, high]`` -> ``[0, 1]`` (after the log for log-scaled parameters)."""
    if param.log:
        lo, hi = math.log(param.low), math.log(param.high)
        return (np.log(value) - lo) / (hi - lo)
    return (value - param.low) / (param.high - param.low)


def _from_unit(param: Float | Int, u: np.ndarray) -> np.ndarray:
    """``[0, 1]`` -> values in ``[low, high]`` (floats; `Int` rounding is the caller's)."""
    u = np.clip(u, 0.0, 1.0)
    if param.log:
        lo, hi = math.log(param.low), math.log(param.high)
        value = np.exp(lo + u * (hi - lo))
    else:
        value = param.low + u * (param.high - param.low)
    # exp/log round-off may step just outside, or miss an end point: both are exact here
    value = np.where(u <= 0.0, param.low, np.where(u >= 1.0, param.high, value))
    return np.clip(value, param.low, param.high)


def _round_int(param: Int, value: np.ndarray) -> np.ndarray:
    """Nearest integers within ``[low, high]``, as int64."""
    return np.clip(np.rint(value), param.low, param.high).astype(np.int64)


def _sample_values(param: Param, u: np.ndarray) -> list[Any]:
    """One uniform number per sample, ``u`` (N,), -> N values uniform over the parameter.

    An `Int` gets every integer with equal mass (equal mass in log space for ``log=True``):
    rounding a decoded value would give the two end points half the mass of the others.
    """
    if isinstance(param, Categorical):
        idx = np.minimum((u * len(param.choices)).astype(np.int64), len(param.choices) - 1)
        return [param.choices[i] for i in idx]
    if isinstance(param, Float):
        return [float(v) for v in _from_unit(param, u)]
    if param.log:  # widen by half a step each side so that every integer owns a cell
        lo, hi = math.log(param.low - 0.5), math.log(param.high + 0.5)
        value = np.exp(lo + u * (hi - lo))
    else:
        value = param.low - 0.5 + u * (param.high - param.low + 1)
    return [int(v) for v in _round_int(param, value)]


# --- space -------------------------------------------------------------------------------------


def _check_count(arg: str, n: Any) -> int:
    """A non-negative integer count, or ValueError naming ``arg``."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"{arg} must be a non-negative integer, got {n!r}")
    return int(n)


def _check_seed(seed: Any) -> int:
    """A non-negative integer seed, or ValueError naming ``seed``."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


class Space:
    """An ordered set of named hyperparameters and their encoding into ``[0, 1]^dim``.

    ``params`` maps names to `Float`, `Int` or `Categorical`; its insertion order is the order of
    the encoded dimensions. Spaces compare equal when names, order and parameters agree.
    """

    def __init__(self, params: Mapping[str, Param]) -> None:
        if not isinstance(params, Mapping):
            raise ValueError(f"params must be a mapping of names to parameters, got {params!r}")
        if not params:
            raise ValueError("params must hold at least one parameter")
        for name, param in params.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"params: names must be non-empty strings, got {name!r}")
            if not isinstance(param, (Float, Int, Categorical)):
                raise ValueError(
                    f"params: parameter {name!r} must be a Float, Int or Categorical, got {param!r}"
                )
        self._params: dict[str, Param] = dict(params)
        self._slices: dict[str, slice] = {}  # name -> its encoded dimensions
        start = 0
        for name, param in self._params.items():
            width = len(param.choices) if isinstance(param, Categorical) else 1
            self._slices[name] = slice(start, start + width)
            start += width
        self._dim = start

    # -- description --

    @property
    def params(self) -> Mapping[str, Param]:
        """The parameters by name, in encoding order (a copy)."""
        return dict(self._params)

    @property
    def names(self) -> list[str]:
        """Parameter names in encoding order."""
        return list(self._params)

    @property
    def dim(self) -> int:
        """Number of encoded dimensions: 1 per `Float` / `Int`, k per k-way `Categorical`."""
        return self._dim

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """The encoded dimensions of each parameter, in encoding order: ``(j,)`` for a `Float` or
        `Int`, the k one-hot dimensions of a k-way `Categorical`."""
        return tuple(tuple(range(s.start, s.stop)) for s in self._slices.values())

    @property
    def encoded_names(self) -> list[str]:
        """One label per encoded dimension: ``"name"``, or ``"name=choice"`` for one-hot dims."""
        labels = []
        for name, param in self._params.items():
            if isinstance(param, Categorical):
                labels.extend(f"{name}={choice}" for choice in param.choices)
            else:
                labels.append(name)
        return labels

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Space):
            return NotImplemented
        return list(self._params.items()) == list(other._params.items())

    def __hash__(self) -> int:
        return hash(tuple(self._params.items()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name!r}: {param!r}" for name, param in self._params.items())
        return f"Space({{{inner}}})"

    # -- validation --

    def validate(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``config`` against the space; returns it as plain Python values in space order.

        Raises ValueError naming the parameter for a missing or unknown key, a value of the wrong
        type (a bool or str for a number, a non-integral value for an `Int`), NaN, a value out of
        bounds, or a value that is not among a `Categorical`'s choices. An `Int` accepts integral
        floats (``3.0`` -> ``3``); a `Categorical` matches numbers by value (``2.0`` -> ``2``).
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"config must be a mapping of names to values, got {config!r}")
        missing = [name for name in self._params if name not in config]
        if missing:
            raise ValueError(f"config is missing parameter(s) {', '.join(map(repr, missing))}")
        unknown = [name for name in config if name not in self._params]
        if unknown:
            raise ValueError(
                f"config has unknown parameter(s) {', '.join(map(repr, unknown))}; "
                f"the space has {self.names!r}"
            )
        return {
            name: self._check_value(name, param, config[name])
            for name, param in self._params.items()
        }

    def contains(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config`` is a valid configuration of the space (see `validate`)."""
        try:
            self.validate(config)
        except ValueError:
            return False
        return True

    @staticmethod
    def _check_value(name: str, param: Param, value: Any) -> Any:
        """One validated value as a plain Python object; ValueError naming ``name``."""
        if isinstance(param, Categorical):
            try:
                return param.choices[param.index(value)]
            except ValueError as err:
                raise ValueError(f"parameter {name!r}: {err}") from None
        kind = type(param).__name__
        if not is_number(value):
            raise ValueError(
                f"parameter {name!r} ({kind}) needs a number, got {type(value).__name__} {value!r}"
            )
        value = _plain(value)
        if math.isnan(value):
            raise ValueError(f"parameter {name!r} ({kind}) is NaN")
        if isinstance(param, Int):
            if not float(value).is_integer():
                raise ValueError(f"parameter {name!r} (Int) needs an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if not param.low <= value <= param.high:
            raise ValueError(
                f"parameter {name!r} = {value!r} is out of bounds [{param.low}, {param.high}]"
            )
        return value

    # -- encoding --

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        """A configuration -> its point in ``[0, 1]^dim``, float64 of shape (D,).

        Validates first (see `validate`).
        """
        values = self.validate(config)
        x = np.zeros(self._dim)  # (D,)
        for name, param in self._params.items():
            where = self._slices[name]
            if isinstance(param, Categorical):
                x[where.start + param.index(values[name])] = 1.0
            else:
                x[where.start] = _to_unit(param, np.float64(values[name]))
        return x

    def encode_many(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Many configurations -> float64 array of shape (N, D); (0, D) for an empty sequence."""
        if isinstance(configs, Mapping):
            raise ValueError("configs must be a sequence of configurations, got one mapping")
        rows = [self.encode(config) for config in configs]
        return np.stack(rows) if rows else np.zeros((0, self._dim))  # (N, D)

    def decode_many(self, X: np.ndarray) -> list[dict[str, Any]]:
        """Points of shape (N, D) -> N configurations of plain Python values.

        Coordinates outside ``[0, 1]`` are clipped; an `Int` rounds to the nearest integer in
        range; a `Categorical` takes the argmax of its one-hot block (the first on ties).
        Raises ValueError on a wrong shape or a non-finite entry.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self._dim:
            raise ValueError(f"X must have shape (n, {self._dim}), got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X must be finite (it holds NaN or inf)")
        columns: dict[str, list[Any]] = {}
        for name, param in self._params.items():
            block = X[:, self._slices[name]]  # (N, 1) or (N, k)
            if isinstance(param, Categorical):
                columns[name] = [param.choices[i] for i in block.argmax(axis=1)]
            elif isinstance(param, Int):
                columns[name] = [int(v) for v in _round_int(param, _from_unit(param, block[:, 0]))]
            else:
                columns[name] = [float(v) for v in _from_unit(param, block[:, 0])]
        return [{name: columns[name][i] for name in self._params} for i in range(X.shape[0])]

    def decode(self, x: np.ndarray) -> dict[str, Any]:
        """A point of shape (D,) -> a configuration; the inverse of `encode` (see `decode_many`).

        ``decode(encode(c)) == c`` exactly for `Int` and `Categorical` values and up to floating
        round-off for `Float` values.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self._dim,):
            raise ValueError(f"x must have shape ({self._dim},), got {x.shape}")
        return self.decode_many(x[None, :])[0]

    # -- proposing configurations --

    def sample(
        self, n: int, *, seed: int, method: Literal["sobol", "random"] = "sobol"
    ) -> list[dict[str, Any]]:
        """``n`` configurations spread over the space, deterministic in ``seed``.

        ``method="sobol"`` takes the first ``n`` points of a scrambled Sobol sequence in
        ``[0, 1]^P`` (one dimension per parameter, a categorical included), ``"random"`` i.i.d.
        uniform points; each coordinate maps to a value uniform over its parameter (log-uniform for
        ``log=True``; every integer or choice equally likely).
        """
        n = _check_count("n", n)
        U = self._unit_points(n, seed, method)  # (N, P)
        columns = {
            name: _sample_values(param, U[:, j])
            for j, (name, param) in enumerate(self._params.items())
        }
        return [{name: columns[name][i] for name in self._params} for i in range(n)]

    def _unit_points(self, n: int, seed: int, method: str) -> np.ndarray:
        """(N, P) points of [0, 1]^P, one coordinate per parameter: Sobol or i.i.d. uniform."""
        seed = _check_seed(seed)
        n_params = len(self._params)
        if method == "sobol":
            return _sobol(n, n_params, seed)
        if method == "random":
            return np.random.default_rng(seed).random((n, n_params))
        raise ValueError(f"method must be 'sobol' or 'random', got {method!r}")

    def sample_encoded(
        self, n: int, *, seed: int, method: Literal["sobol", "random"] = "sobol"
    ) -> np.ndarray:
        """The points of `sample` (same seed, same configurations), encoded: (N, D).

        Vectorised (no dicts), for the thousands of candidates an optimiser scores per decision.
        """
        n = _check_count("n", n)
        U = self._unit_points(n, seed, method)  # (N, P)
        X = np.zeros((n, self._dim))
        for j, (name, param) in enumerate(self._params.items()):
            where = self._slices[name]
            if isinstance(param, Categorical):
                k = len(param.choices)
                idx = np.minimum((U[:, j] * k).astype(np.int64), k - 1)
                X[np.arange(n), where.start + idx] = 1.0
            elif isinstance(param, Float):
                X[:, where.start] = _to_unit(param, _from_unit(param, U[:, j]))
            else:
                values = np.asarray(_sample_values(param, U[:, j]), dtype=np.float64)
                X[:, where.start] = _to_unit(param, values)
        return X

    def perturb(
        self,
        config: Mapping[str, Any],
        n: int,
        *,
        scale: float = 0.1,
        change_prob: float = 0.1,
        seed: int,
    ) -> list[dict[str, Any]]:
        """``n`` configurations near ``config``; see `perturb_encoded`."""
        X = self.perturb_encoded(config, n, scale=scale, change_prob=change_prob, seed=seed)
        return self.decode_many(X)

    def perturb_encoded(
        self,
        config: Mapping[str, Any],
        n: int,
        *,
        scale: float = 0.1,
        change_prob: float = 0.1,
        seed: int,
    ) -> np.ndarray:
        """``n`` configurations near ``config``, encoded (N, D), to propose candidates around an
        incumbent (no dicts: fast for thousands of candidates).

        Every `Float` / `Int` coordinate gets Gaussian noise of standard deviation ``scale`` in the
        encoded space, clipped to ``[0, 1]`` (an `Int` then rounds, so a small ``scale`` may leave
        it unchanged). Every `Categorical` switches, with probability ``change_prob``, to one of
        its other choices drawn uniformly. The results may repeat ``config`` or each other.
        """
        n = _check_count("n", n)
        seed = _check_seed(seed)
        if not is_number(scale) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
        if not is_number(change_prob) or not 0 <= change_prob <= 1:
            raise ValueError(f"change_prob must be in [0, 1], got {change_prob!r}")
        base = self.validate(config)
        x = self.encode(base)  # (D,)
        rng = np.random.default_rng(seed)
        X = np.repeat(x[None, :], n, axis=0)  # (N, D)
        for name, param in self._params.items():
            where = self._slices[name]
            if not isinstance(param, Categorical):
                u = np.clip(X[:, where.start] + scale * rng.normal(size=n), 0, 1)
                if isinstance(param, Int):  # snap to the encoding of the nearest integer
                    u = _to_unit(param, _round_int(param, _from_unit(param, u)).astype(float))
                X[:, where.start] = u
                continue
            k = len(param.choices)
            change = rng.random(n) < change_prob  # (N,)
            # a uniform draw among the k - 1 other choices: skip over the current one
            current = param.index(base[name])
            other = rng.integers(0, max(k - 1, 1), size=n)
            new = np.where(other >= current, other + 1, other)
            new = np.where(change & (k > 1), new, current)
            X[:, where] = 0.0
            X[np.arange(n), where.start + new] = 1.0
        return X

    # -- storage --

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (with ``format_version``); see `from_dict`."""
        return {
            "format_version": SPACE_FORMAT_VERSION,
            "params": [
                {"name": name, **_param_to_dict(param)} for name, param in self._params.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Space:
        """The space described by ``data`` (as written by `to_dict`, possibly via JSON)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"data must be a mapping, got {data!r}")
        version = data.get("format_version")
        if version != SPACE_FORMAT_VERSION:
            raise ValueError(
                f"data: format_version {version!r} is not the supported {SPACE_FORMAT_VERSION}"
            )
        entries = data.get("params")
        if not isinstance(entries, Sequence) or isinstance(entries, str):
            raise ValueError("data: 'params' must be a list of parameter entries")
        params: dict[str, Param] = {}
        for entry in entries:
            if not isinstance(entry, Mapping) or "name" not in entry:
                raise ValueError(f"data: every parameter entry needs a 'name', got {entry!r}")
            name = entry["name"]
            if name in params:
                raise ValueError(f"data: parameter {name!r} appears twice")
            params[name] = _param_from_dict(name, entry)
        return cls(params)

    @classmethod
    def from_configspace(cls, cs: Any) -> Space:
        """Convert a ``ConfigSpace.ConfigurationSpace`` (the optional ``ConfigSpace`` package).

        Supports ``UniformFloatHyperparameter``, ``UniformIntegerHyperparameter`` (both with their
        ``log`` flag) and ``CategoricalHyperparameter`` (its ``weights``, a sampling prior, are
        ignored). Raises ValueError for any other hyperparameter type, or a space with conditions
        or forbidden clauses, and ImportError when ``ConfigSpace`` is not installed.
        """
        try:
            import ConfigSpace
        except ImportError as err:
            raise ImportError(
                "Space.from_configspace needs the ConfigSpace package: pip install ConfigSpace"
            ) from err
        if not isinstance(cs, ConfigSpace.ConfigurationSpace):
            raise ValueError(f"cs must be a ConfigSpace.ConfigurationSpace, got {cs!r}")
        # ConfigSpace >= 1.0 has properties and a Mapping interface; older versions getters
        conditions = cs.conditions if hasattr(cs, "conditions") else cs.get_conditions()
        forbidden = (
            cs.forbidden_clauses if hasattr(cs, "forbidden_clauses") else cs.get_forbiddens()
        )
        if conditions:
            raise ValueError("cs: conditional hyperparameters are not supported")
        if forbidden:
            raise ValueError("cs: forbidden clauses are not supported")
        hps = list(cs.values()) if hasattr(cs, "values") else cs.get_hyperparameters()
        params: dict[str, Param] = {}
        for hp in hps:
            # exact types: e.g. BetaFloatHyperparameter subclasses UniformFloatHyperparameter
            if type(hp) is ConfigSpace.UniformFloatHyperparameter:
                params[hp.name] = Float(float(hp.lower), float(hp.upper), log=bool(hp.log))
            elif type(hp) is ConfigSpace.UniformIntegerHyperparameter:
                params[hp.name] = Int(int(hp.lower), int(hp.upper), log=bool(hp.log))
            elif type(hp) is ConfigSpace.CategoricalHyperparameter:
                params[hp.name] = Categorical(list(hp.choices))
            else:
                raise ValueError(
                    f"cs: hyperparameter {hp.name!r} has unsupported type {type(hp).__name__}; "
                    "supported: UniformFloat, UniformInteger, Categorical"
                )
        return cls(params)


def _sobol(n: int, d: int, seed: int) -> np.ndarray:
    """The first ``n`` points of a scrambled, seeded Sobol sequence in ``[0, 1]^d``: (n, d)."""
    from scipy.stats import qmc

    if n == 0:
        return np.zeros((0, d))
    # scipy >= 1.15 names the generator `rng` (`seed` is on its way out); a Generator works for both
    rng_kw = "rng" if "rng" in inspect.signature(qmc.Sobol).parameters else "seed"
    engine = qmc.Sobol(d, scramble=True, **{rng_kw: np.random.default_rng(seed)})
    # a power of two keeps the sequence balanced (and scipy quiet); the first n are the same points
    return engine.random_base2(max(0, math.ceil(math.log2(n))))[:n]


# --- candidate tables --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CandidateTable:
    """A fixed set of candidate configurations: a tabular benchmark, or a user's grid.

    Build with `from_configs` (validated against a `Space`) or `from_encoded` (points already in
    ``[0, 1]^D``, whose configurations are then ``{dim_name: coordinate}``).
    """

    encoded: np.ndarray  # (N, D) float64 in [0, 1], read-only
    configs: tuple[dict[str, Any], ...]  # N configurations, in the order of `encoded`
    _: KW_ONLY
    space: Space | None = None  # the space of `configs`; None for `from_encoded`
    # the encoded dimensions of each parameter (see `Space.groups`); None: those of `space`, or
    # one parameter per dimension without a space
    groups: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.encoded.ndim != 2 or self.encoded.shape[0] != len(self.configs):
            raise ValueError(
                f"encoded must have shape (len(configs), dim) = ({len(self.configs)}, dim), "
                f"got {self.encoded.shape}"
            )
        if self.groups is None:
            groups = self.space.groups if self.space is not None else _singletons(self.dim)
        else:
            groups = tuple(tuple(int(j) for j in g) for g in self.groups)
            if sorted(j for g in groups for j in g) != list(range(self.dim)) or not all(groups):
                raise ValueError(
                    f"groups must split the {self.dim} encoded dims into non-empty parts, "
                    f"got {self.groups!r}"
                )
        object.__setattr__(self, "groups", groups)

    @classmethod
    def from_configs(cls, space: Space, configs: Sequence[Mapping[str, Any]]) -> CandidateTable:
        """A table of ``configs`` (at least one), each validated and encoded by ``space``."""
        if not isinstance(space, Space):
            raise ValueError(f"space must be a Space, got {space!r}")
        if isinstance(configs, Mapping) or not isinstance(configs, Sequence) or not configs:
            raise ValueError("configs must be a non-empty sequence of configurations")
        checked = []
        for i, config in enumerate(configs):
            try:
                checked.append(space.validate(config))
            except ValueError as err:
                raise ValueError(f"configs[{i}]: {err}") from None
        encoded = space.encode_many(checked)  # (N, D)
        encoded.flags.writeable = False
        return cls(encoded, tuple(checked), space=space)

    @classmethod
    def from_encoded(
        cls,
        encoded: np.ndarray,
        *,
        names: Sequence[str] | None = None,
        groups: Sequence[Sequence[int]] | None = None,
    ) -> CandidateTable:
        """A table of points already encoded, ``encoded`` (N, D) in ``[0, 1]``.

        ``names`` labels the D dimensions (default ``"x0"``, ``"x1"``, ...); ``config(i)`` is then
        ``{names[j]: encoded[i, j]}``. ``groups`` gives the dimensions of each parameter when
        some parameter spans several (a one-hot categorical); default: one per dimension.
        """
        X = np.array(encoded, dtype=np.float64)  # a copy the caller cannot change
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"encoded must have shape (n, dim) with n, dim >= 1, got {X.shape}")
        if not np.isfinite(X).all() or X.min() < 0 or X.max() > 1:
            raise ValueError("encoded must be finite and in [0, 1]")
        labels = [f"x{j}" for j in range(X.shape[1])] if names is None else list(names)
        if len(labels) != X.shape[1]:
            raise ValueError(f"names must have {X.shape[1]} entries, got {len(labels)}")
        if len(set(labels)) != len(labels) or not all(isinstance(s, str) for s in labels):
            raise ValueError(f"names must be distinct strings, got {labels!r}")
        X.flags.writeable = False
        configs = tuple(
            {label: float(v) for label, v in zip(labels, row, strict=True)} for row in X
        )
        return cls(X, configs, groups=None if groups is None else tuple(map(tuple, groups)))

    @property
    def dim(self) -> int:
        """Number of encoded dimensions D."""
        return self.encoded.shape[1]

    def __len__(self) -> int:
        return self.encoded.shape[0]

    def config(self, i: int) -> dict[str, Any]:
        """The ``i``-th configuration (a fresh dict); IndexError when out of range."""
        return dict(self.configs[i])


def _singletons(dim: int) -> tuple[tuple[int, ...], ...]:
    """One group per encoded dimension."""
    return tuple((j,) for j in range(dim))


def random_order(groups: Sequence[Sequence[int]], rng: np.random.Generator) -> np.ndarray:
    """(D,) a random order of the encoded dimensions that keeps each parameter's dimensions
    together: the ``groups`` (see `Space.groups`) shuffled, and each group's dimensions (a
    categorical's one-hot) shuffled within it. ``X[:, order]`` is then an encoding of the same
    configurations in which every parameter is again one contiguous block."""
    parts = [rng.permutation(np.asarray(g, dtype=np.int64)) for g in groups]
    order = [parts[i] for i in rng.permutation(len(parts))]
    return np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
