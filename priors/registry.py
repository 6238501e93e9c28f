"""Priors by name, and their configs as JSON-ready dicts (for stores and training checkpoints).

Names:
    ``"ftpfn"``    ``priors.ftpfn.FTPFNPrior``: many curves per task, with hyperparameters.
    ``"lcpfn"``    ``priors.lcpfn.LCPFNPrior``: one curve per task, no hyperparameters.
    ``"mixture"``  ``MixturePrior`` of the two, by default 0.9 FT-PFN / 0.1 LC-PFN per batch. FT-PFN
                   tasks are what the freeze-thaw surrogate is for; the 10% of single-curve tasks
                   keep the network good at the LC-PFN use case (one curve, no hyperparameters,
                   e.g. early stopping) at little cost to the main one.

A config dict is ``{"name": <name>, "config": {<field>: <value>, ...}}``; nested configs (the
mixture's components) are nested dicts, and JSON lists are read back as tuples.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from priors.base import Prior
from priors.ftpfn import FTPFNPrior, FTPFNPriorConfig
from priors.lcpfn import LCPFNPrior, LCPFNPriorConfig
from priors.mixture import MixturePrior

PRIOR_NAMES = ("ftpfn", "lcpfn", "mixture")


@dataclass(frozen=True, kw_only=True)
class MixturePriorConfig:
    """The named ``"mixture"`` prior: FT-PFN and LC-PFN batches, picked by weight per batch."""

    ftpfn: FTPFNPriorConfig = field(default_factory=FTPFNPriorConfig)  # FT-PFN component
    lcpfn: LCPFNPriorConfig = field(default_factory=LCPFNPriorConfig)  # LC-PFN component
    ftpfn_weight: float = 0.9  # relative frequency of FT-PFN batches
    lcpfn_weight: float = 0.1  # relative frequency of LC-PFN batches

    def __post_init__(self) -> None:
        # Components given as dicts (JSON, or overrides of make_prior) become configs.
        for part, cls in (("ftpfn", FTPFNPriorConfig), ("lcpfn", LCPFNPriorConfig)):
            value = getattr(self, part)
            if isinstance(value, dict):
                object.__setattr__(self, part, _build_config(cls, value))
            elif not isinstance(value, cls):
                raise ValueError(f"{part} must be a {cls.__name__} or a dict, got {value!r}")
        for name in ("ftpfn_weight", "lcpfn_weight"):
            w = getattr(self, name)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"{name} must be a positive number, got {w!r}")
            if w <= 0:
                raise ValueError(f"{name} must be a positive number, got {w!r}")
        if self.ftpfn.max_hps != self.lcpfn.max_hps:
            raise ValueError(
                f"the components must share max_hps, got ftpfn.max_hps={self.ftpfn.max_hps} and "
                f"lcpfn.max_hps={self.lcpfn.max_hps}"
            )


_CONFIG_CLASSES: dict[str, type] = {
    "ftpfn": FTPFNPriorConfig,
    "lcpfn": LCPFNPriorConfig,
    "mixture": MixturePriorConfig,
}


def _check_name(name: str) -> None:
    if name not in PRIOR_NAMES:
        raise ValueError(f"unknown prior {name!r}; valid priors: {', '.join(PRIOR_NAMES)}")


def _build_config(cls: type, values: dict[str, Any]) -> Any:
    """``cls(**values)`` with JSON lists as tuples and dicts of nested config fields as configs."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) for {cls.__name__}: {', '.join(unknown)}")
    built = {}
    for key, value in values.items():
        f = known[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            value = _build_config(type(default), value)
        built[key] = _from_json(value)
    return cls(**built)


def make_prior_config(name: str, **overrides: Any) -> Any:
    """The config of prior ``name`` with its defaults replaced by ``overrides``.

    For ``"mixture"``, ``ftpfn=`` and ``lcpfn=`` take a component config or a dict of overrides of
    its defaults (``make_prior("mixture", ftpfn={"seq_len": 200})``), and an override that is not a
    field of ``MixturePriorConfig`` (for example ``max_hps``) goes to every component that has a
    field of that name.
    """
    _check_name(name)
    if name != "mixture":
        return _build_config(_CONFIG_CLASSES[name], overrides)
    own = {f.name for f in dataclasses.fields(MixturePriorConfig)}
    mixture = _build_config(MixturePriorConfig, {k: v for k, v in overrides.items() if k in own})
    shared = {k: v for k, v in overrides.items() if k not in own}
    components = {"ftpfn": mixture.ftpfn, "lcpfn": mixture.lcpfn}
    for key in shared:
        if not any(key in {f.name for f in dataclasses.fields(c)} for c in components.values()):
            raise ValueError(f"unknown option for prior 'mixture' and its components: {key}")
    for part, config in components.items():
        names = {f.name for f in dataclasses.fields(config)}
        try:
            components[part] = dataclasses.replace(
                config, **{k: v for k, v in shared.items() if k in names}
            )
        except ValueError as err:
            raise ValueError(f"mixture component {part!r}: {err}") from None
    return dataclasses.replace(mixture, **components)


def build_prior(config: Any) -> Prior:
    """The prior described by ``config`` (any config of ``PRIOR_NAMES``)."""
    name = prior_name(config)
    if name == "lcpfn":
        return LCPFNPrior(config)
    if name == "ftpfn":
        return FTPFNPrior(config)
    return MixturePrior(
        [build_prior(config.ftpfn), build_prior(config.lcpfn)],
        [config.ftpfn_weight, config.lcpfn_weight],
        config=config,
    )


def make_prior(name: str, **overrides: Any) -> Prior:
    """The prior ``name`` (one of ``PRIOR_NAMES``) with config fields set by ``overrides``."""
    return build_prior(make_prior_config(name, **overrides))


def prior_name(config: Any) -> str:
    """The registry name of a prior config; ValueError for anything else."""
    for name, cls in _CONFIG_CLASSES.items():
        if type(config) is cls:
            return name
    raise ValueError(f"not a registered prior config: {type(config).__name__}")


def prior_config_to_dict(config: Any) -> dict[str, Any]:
    """``{"name": ..., "config": {...}}``, JSON-serialisable, for a config of ``PRIOR_NAMES``."""
    return {"name": prior_name(config), "config": _fields_to_dict(config)}


def prior_config_from_dict(data: dict[str, Any]) -> Any:
    """The config written by ``prior_config_to_dict`` (missing fields take their defaults)."""
    if not isinstance(data, dict) or set(data) != {"name", "config"}:
        raise ValueError("a prior config dict has exactly the keys 'name' and 'config'")
    _check_name(data["name"])
    return _build_config(_CONFIG_CLASSES[data["name"]], dict(data["config"]))


def prior_from_dict(data: dict[str, Any]) -> Prior:
    """The prior whose config ``prior_config_to_dict`` wrote."""
    return build_prior(prior_config_from_dict(data))


def _fields_to_dict(config: Any) -> dict[str, Any]:
    return {f.name: _to_json(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields_to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    # Config dataclasses are frozen and hold sequences as tuples.
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value
