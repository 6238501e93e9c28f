"""Paired comparison of two simulated-HPO results (``curvepfn evaluate hpo-compare``).

Two runs of ``curvepfn evaluate hpo`` on the same tables and seeds (e.g. two settings of the
optimiser) are compared run by run: for each (table, seed), the normalised regret of one optimizer
in result B minus that of one optimizer in result A, after the whole budget or (from the curves a
result stores, :mod:`bo.hpo_report`) after any number of steps. Pairing removes the spread between
tables, which dominates the standard errors of the means in ``results.md``; the same function
compares two optimizers of one result (A = B).

Shapes: ``R`` paired runs (tables x seeds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bo.hpo_report import load_result
from pfn.evaluate import standard_error

__all__ = ["PairedComparison", "compare_regret", "load_regrets"]


@dataclass(frozen=True)
class PairedComparison:
    """Normalised regret of ``optimizer_b`` in B minus that of ``optimizer_a`` in A after
    ``budget`` steps, paired by (table, seed): negative means B is better."""

    optimizer_a: str
    optimizer_b: str
    budget: int | None  # steps spent (None: the whole budget of results that do not say it)
    n_runs: int  # R
    mean: float  # mean of the R differences
    se: float  # its standard error (0 for one run)
    n_b_better: int  # runs where B's regret is lower
    n_b_worse: int
    n_equal: int
    # the two optimizers' settings where they differ, {name: (A's, B's)} (results written since
    # 2026-12-07 record them; an older result's are unknown: None)
    differing_settings: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        """One line, e.g. ``-0.0105 ± 0.0071 over 93 runs (B better in 26, worse in 23, equal
        in 44)``."""
        return (
            f"{self.mean:+.4f} ± {self.se:.4f} over {self.n_runs} runs (B better in "
            f"{self.n_b_better}, worse in {self.n_b_worse}, equal in {self.n_equal})"
        )


def _payload(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The ``results.json`` at ``path`` (the file or its folder), parsed."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict) or "runs" not in payload:
        raise ValueError(f"{path} is not a results.json of `curvepfn evaluate hpo`")
    return path, payload


def load_regrets(
    path: str | Path, optimizer: str, budget: int | None = None
) -> dict[tuple[str, int], float]:
    """``{(table, seed): regret after budget steps}`` of ``optimizer`` in a result of
    ``curvepfn evaluate hpo`` (``path``: its folder or its ``results.json``).

    Args:
        budget: steps spent; None: the whole budget of the result (read from ``results.json``
            alone, so results written before the curves were stored work too).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not such a result, ``optimizer`` is not in it, ``budget`` lies
            outside ``1 .. its budget``, or an earlier budget is asked of a result without curves.
    """
    return _regrets(*_payload(path), optimizer, budget)


def _regrets(
    path: Path, payload: dict[str, Any], optimizer: str, budget: int | None
) -> dict[tuple[str, int], float]:
    """:func:`load_regrets` of a parsed ``payload`` (``path`` names it in errors)."""
    found = sorted({run["optimizer"] for run in payload["runs"]})
    if optimizer not in found:
        raise ValueError(f"{path} has no runs of optimizer {optimizer!r} (it has {found})")
    total = payload.get("budget")
    if budget is None or budget == total:
        return {
            (run["table"], int(run["seed"])): float(run["final_regret"])
            for run in payload["runs"]
            if run["optimizer"] == optimizer
        }
    if total is None or not 1 <= budget <= total:
        raise ValueError(f"budget must lie in 1 .. {total} (the budget of {path}), got {budget}")
    result = load_result(path)
    o = result.optimizers.index(optimizer)
    keys = [(t, s) for t in result.tables for s in range(result.seeds)]
    return {k: float(result.regret[o, r, budget - 1]) for r, k in enumerate(keys)}


def compare_regret(
    a: str | Path,
    b: str | Path,
    *,
    optimizer_a: str = "freeze-thaw",
    optimizer_b: str | None = None,
    budget: int | None = None,
) -> PairedComparison:
    """Pair ``optimizer_b`` (default: ``optimizer_a``) in result ``b`` with ``optimizer_a`` in
    result ``a`` by (table, seed), after ``budget`` steps (None: the whole budget).

    Raises:
        ValueError: the two results do not hold the same (table, seed) runs, were simulated with
            different budgets or on files of different names or contents (a paired comparison of
            different runs would be silently wrong), an optimizer is missing, or ``budget``
            cannot be read (see :func:`load_regrets`).
    """
    optimizer_b = optimizer_a if optimizer_b is None else optimizer_b
    (path_a, pa), (path_b, pb) = _payload(a), _payload(b)
    for key in ("budget", "data"):
        va, vb = pa.get(key), pb.get(key)
        if key == "data" and va is not None and vb is not None:
            va, vb = Path(va).name, Path(vb).name
        if va != vb:
            raise ValueError(f"{path_a} has {key} {va!r}, {path_b} has {vb!r}: not comparable")
    sha_a, sha_b = pa.get("data_sha256"), pb.get("data_sha256")
    if sha_a and sha_b and sha_a != sha_b:
        raise ValueError(
            f"{path_a} and {path_b} were simulated on curve files of other contents (sha256 "
            f"{sha_a[:12]}… and {sha_b[:12]}…): not comparable"
        )
    ra = _regrets(path_a, pa, optimizer_a, budget)
    rb = _regrets(path_b, pb, optimizer_b, budget)
    if ra.keys() != rb.keys():
        only_a, only_b = sorted(ra.keys() - rb.keys()), sorted(rb.keys() - ra.keys())
        raise ValueError(
            f"the results hold different (table, seed) runs: {len(only_a)} only in A "
            f"(e.g. {only_a[:2]}), {len(only_b)} only in B (e.g. {only_b[:2]})"
        )
    keys = sorted(ra)
    diff = np.array([rb[k] - ra[k] for k in keys])  # (R,)
    return PairedComparison(
        optimizer_a=optimizer_a,
        optimizer_b=optimizer_b,
        budget=pa.get("budget") if budget is None else budget,
        n_runs=int(diff.size),
        mean=float(diff.mean()),
        se=standard_error(diff),
        n_b_better=int((diff < 0).sum()),
        n_b_worse=int((diff > 0).sum()),
        n_equal=int((diff == 0).sum()),
        differing_settings=_differing_settings(
            pa.get("settings", {}).get(optimizer_a), pb.get("settings", {}).get(optimizer_b)
        ),
    )


def _differing_settings(
    a: dict[str, Any] | None, b: dict[str, Any] | None
) -> dict[str, tuple[Any, Any]]:
    """``{name: (a's, b's)}`` where the settings differ; every name of the known side (None for
    the other) when one result predates recorded settings."""
    a, b = a or {}, b or {}
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}
