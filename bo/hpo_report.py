"""The files of a simulated-HPO result (``curvepfn evaluate hpo``): written, loaded back, merged.

A result folder holds

* ``results.json``: the settings, the summary at the report budgets, one record per run, and the
  mean regret and rank curves;
* ``curves.npz``: every run's incumbent score and normalised regret after every step, so that the
  result can be loaded back (:func:`load_result`), compared at any budget
  (``curvepfn evaluate hpo-compare --budget``) and merged with another on the same tables and
  seeds (:func:`merge_results`, ``curvepfn evaluate hpo-merge``): a new setting of freeze-thaw,
  simulated alone, is then ranked against baselines simulated earlier, step by step, as if all had
  run together (every run is seeded by its table and seed alone, so it would be the same);
* ``results.md``, ``regret.png``, ``rank.png``: the table and the plots.

Shapes: ``O`` optimizers, ``R`` runs per optimizer (tables x seeds, table-major), ``B`` budget in
steps.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from bo.hpo_benchmark import HPOEvalResult, RunRecord, assemble_result

__all__ = ["load_result", "markdown_table", "merge_results", "select", "write_hpo_report"]

_REGRET_FLOOR = 1e-4  # regret 0 drawn at this height on the log-scale plot
CURVES_FILE = "curves.npz"


def markdown_table(result: HPOEvalResult) -> str:
    """Mean normalised regret (± s.e.) and mean rank per optimizer at each reporting budget;
    the best of each column in bold."""
    budgets = result.report_budgets
    lines = [
        f"Data `{Path(result.data).name}`: {len(result.tables)} table(s) x {result.seeds} "
        f"seed(s), budget {result.budget} steps; normalised regret ↓ (mean ± s.e.) and average "
        "rank ↓; per search, the runs started (restarts of a configuration included) and the "
        "distinct configurations run.",
        "",
        "| optimizer | "
        + " | ".join(f"regret @{b} | rank @{b}" for b in budgets)
        + " | runs started | configurations |",
        "|---|" + "---|---|" * len(budgets) + "---|---|",
    ]
    best_reg = {b: min(result.summary_for(o, b).regret for o in result.optimizers) for b in budgets}
    best_rank = {b: min(result.summary_for(o, b).rank for o in result.optimizers) for b in budgets}
    for opt in result.optimizers:
        cells = []
        for b in budgets:
            s = result.summary_for(opt, b)
            reg, rk = f"{s.regret:.4f} ± {s.regret_se:.4f}", f"{s.rank:.2f}"
            cells.append(f"**{reg}**" if s.regret == best_reg[b] else reg)
            cells.append(f"**{rk}**" if s.rank == best_rank[b] else rk)
        runs = [r for r in result.runs if r.optimizer == opt]
        starts, configs = np.mean([r.n_starts for r in runs]), np.mean([r.n_configs for r in runs])
        lines.append(f"| {opt} | " + " | ".join(cells) + f" | {starts:.1f} | {configs:.1f} |")
    return "\n".join(lines) + "\n"


def write_hpo_report(result: HPOEvalResult, out_dir: str | Path) -> list[Path]:
    """Write ``results.json``, ``curves.npz``, ``results.md``, ``regret.png`` and ``rank.png``
    to ``out_dir`` (see the module docstring); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "data": result.data,
        "data_sha256": result.data_sha256,
        "tables": list(result.tables),
        "optimizers": list(result.optimizers),
        "seeds": result.seeds,
        "budget": result.budget,
        "report_budgets": list(result.report_budgets),
        "settings": result.settings,
        "summary": [asdict(s) for s in result.summary],
        "runs": [asdict(r) for r in result.runs],
        # (O, B) curves, by optimizer
        "mean_regret": dict(zip(result.optimizers, result.mean_regret().tolist(), strict=True)),
        "regret_se": dict(zip(result.optimizers, result.regret_se().tolist(), strict=True)),
        "mean_rank": dict(zip(result.optimizers, result.mean_rank().tolist(), strict=True)),
    }
    paths = [out / name for name in ("results.json", CURVES_FILE, "results.md", "regret.png",
                                      "rank.png")]  # fmt: skip
    paths[0].write_text(json.dumps(payload, indent=1) + "\n")
    np.savez_compressed(paths[1], scores=result.scores, regret=result.regret)
    paths[2].write_text(markdown_table(result))
    _plot(result, paths[3], regret=True)
    _plot(result, paths[4], regret=False)
    return paths


def _plot(result: HPOEvalResult, path: Path, *, regret: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(1, result.budget + 1)
    mean = result.mean_regret() if regret else result.mean_rank()  # (O, B)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for o, opt in enumerate(result.optimizers):
        if regret:
            se = result.regret_se()[o]
            lo = np.maximum(mean[o] - se, _REGRET_FLOOR)
            hi = np.maximum(mean[o] + se, _REGRET_FLOOR)
            (line,) = ax.plot(x, np.maximum(mean[o], _REGRET_FLOOR), label=opt)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        else:
            ax.plot(x, mean[o], label=opt)
    if regret:
        ax.set_yscale("log")
        ax.set_ylabel(f"mean normalised regret (± s.e.; floor {_REGRET_FLOOR:g})")
    else:
        ax.set_ylabel("average rank (1 = best)")
        ax.set_ylim(0.9, len(result.optimizers) + 0.1)
    ax.set_xlabel("steps spent")
    ax.set_title(
        f"{Path(result.data).name}: {len(result.tables)} table(s) x {result.seeds} seed(s)"
    )
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def load_result(path: str | Path) -> HPOEvalResult:
    """A result written by :func:`write_hpo_report`, loaded back (``path``: its folder or its
    ``results.json``). The ranks and the summary are worked out again from the curves.

    Raises:
        FileNotFoundError: no such folder or file, or no ``results.json`` in the folder.
        ValueError: the file is not such a result, or it has no ``curves.npz`` beside it (results
            written before 2026-12-07: only their final regrets can be read,
            :func:`bo.hpo_compare.load_regrets`), or the curves are unreadable or disagree with
            ``results.json`` (other shapes, other final regrets, runs missing).
    """
    path = Path(path)
    if path.is_dir():
        folder = path
    elif path.is_file():
        folder = path.parent
    else:
        raise FileNotFoundError(f"no result at {path}: give its folder or its results.json")
    payload = json.loads((folder / "results.json").read_text())
    keys = ("data", "tables", "optimizers", "seeds", "budget", "report_budgets", "runs")
    if not isinstance(payload, dict) or any(k not in payload for k in keys):
        raise ValueError(f"{folder / 'results.json'} is not a result of `curvepfn evaluate hpo`")
    if not (folder / CURVES_FILE).exists():
        raise ValueError(
            f"{folder} has no {CURVES_FILE} (written before the curves were stored): only its "
            "final regrets can be compared (`curvepfn evaluate hpo-compare` without --budget); "
            "run `curvepfn evaluate hpo` again to merge it or compare it at other budgets"
        )
    try:
        with np.load(folder / CURVES_FILE, allow_pickle=False) as curves:
            scores, regret = curves["scores"], curves["regret"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{folder / CURVES_FILE} is unreadable: {err}") from err
    optimizers, tables = tuple(payload["optimizers"]), tuple(payload["tables"])
    seeds, budget = int(payload["seeds"]), int(payload["budget"])
    shape = (len(optimizers), len(tables) * seeds, budget)
    if scores.shape != shape or regret.shape != shape:
        raise ValueError(
            f"{folder / CURVES_FILE} holds curves of shape {scores.shape} and {regret.shape}, "
            f"results.json describes {shape} (optimizers, runs, steps)"
        )
    report_budgets = tuple(int(b) for b in payload["report_budgets"])
    if not all(1 <= b <= budget for b in report_budgets):
        raise ValueError(f"report budgets {report_budgets} must lie in 1 .. {budget}")
    try:
        runs = [RunRecord(**run) for run in payload["runs"]]
    except TypeError as err:
        raise ValueError(f"{folder / 'results.json'} has run records of another format") from err
    _check_runs(folder, runs, optimizers, tables, seeds, regret)
    return assemble_result(
        data=payload["data"],
        tables=tables,
        seeds=seeds,
        budget=budget,
        report_budgets=report_budgets,
        optimizers=optimizers,
        scores=scores,
        regret=regret,
        runs=runs,
        settings=payload.get("settings", {}),
        data_sha256=payload.get("data_sha256"),
    )


def _check_runs(
    folder: Path,
    runs: Sequence[RunRecord],
    optimizers: Sequence[str],
    tables: Sequence[str],
    seeds: int,
    regret: np.ndarray,
) -> None:
    """Every (optimizer, table, seed) has one record, whose final regret is the last step of its
    curve in ``regret`` (O, R, B): else the two files are not of one result (a curves.npz left
    from another run, say)."""
    final = {(r.optimizer, r.table, r.seed): r.final_regret for r in runs}
    for o, name in enumerate(optimizers):
        for r, (table, seed) in enumerate((t, s) for t in tables for s in range(seeds)):
            value = final.get((name, table, seed))
            if value is None or not np.isclose(value, regret[o, r, -1], rtol=0, atol=1e-12):
                what = "no record" if value is None else f"final regret {value}"
                raise ValueError(
                    f"{folder}: results.json has {what} for {name} on {table} seed {seed}, "
                    f"{CURVES_FILE} ends at {regret[o, r, -1]}: the files are not of one result"
                )
    if len(final) != len(runs) or len(runs) != len(optimizers) * len(tables) * seeds:
        raise ValueError(f"{folder}: results.json holds runs of other optimizers or seeds")


def select(
    result: HPOEvalResult, optimizers: Sequence[str], labels: Sequence[str] | None = None
) -> HPOEvalResult:
    """The result of some of its optimizers, in the order given, ranked among themselves, and
    renamed to ``labels`` if given (e.g. ``freeze-thaw`` -> ``ft-pool1``, so that two settings of
    one optimizer can be merged).

    Raises:
        ValueError: an optimizer is not in the result, none or one twice is given, or the labels
            are not one distinct name per optimizer.
    """
    missing = [name for name in optimizers if name not in result.optimizers]
    if missing or not optimizers or len(set(optimizers)) != len(optimizers):
        raise ValueError(
            f"choose optimizers of the result, each once: got {list(optimizers)}, the result "
            f"has {list(result.optimizers)}"
        )
    labels = list(optimizers) if labels is None else list(labels)
    if len(labels) != len(optimizers) or len(set(labels)) != len(labels) or not all(labels):
        raise ValueError(f"give one distinct label per optimizer: {list(optimizers)} -> {labels}")
    label_of = dict(zip(optimizers, labels, strict=True))
    index = [result.optimizers.index(name) for name in optimizers]
    runs = [
        replace(run, optimizer=label_of[run.optimizer])
        for run in _runs_in_order(result.runs, optimizers, result.tables)
    ]
    return assemble_result(
        data=result.data,
        tables=result.tables,
        seeds=result.seeds,
        budget=result.budget,
        report_budgets=result.report_budgets,
        optimizers=tuple(labels),
        scores=result.scores[index],
        regret=result.regret[index],
        runs=runs,
        settings={label_of[n]: result.settings[n] for n in optimizers if n in result.settings},
        data_sha256=result.data_sha256,
    )


def merge_results(results: Sequence[HPOEvalResult]) -> HPOEvalResult:
    """One result of the optimizers of several results on the same tables, seeds and budget
    (and a curve file of the same name and, where both recorded it, the same sha256), ranked
    among all of them; the report budgets are those
    of every part. Pick optimizers first with :func:`select` where two results share one.

    Raises:
        ValueError: no result, results of other tables, seeds, budgets or files, or an optimizer
            name in two of them.
    """
    if not results:
        raise ValueError("give at least one result to merge")
    first = results[0]
    for other in results[1:]:
        for what, a, b in (
            ("curve file", Path(first.data).name, Path(other.data).name),
            ("budget", first.budget, other.budget),
            ("seeds", first.seeds, other.seeds),
            ("tables", sorted(first.tables), sorted(other.tables)),
        ):
            if a != b:
                raise ValueError(f"cannot merge results of other {what}: {a!r} and {b!r}")
    hashes = {r.data_sha256 for r in results} - {None}  # None: written before it was recorded
    if len(hashes) > 1:
        raise ValueError(
            f"cannot merge results of other curve file contents: {Path(first.data).name} has "
            f"{len(hashes)} different sha256 among them"
        )
    names = [name for r in results for name in r.optimizers]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(
            f"optimizer(s) {', '.join(twice)} in more than one result: pick one result's with "
            "RESULT:OPTIMIZERS (e.g. hpo_new:freeze-thaw hpo_base:random,hyperband,asha), or "
            "rename one with RESULT:NAME=LABEL (e.g. hpo_pool1:freeze-thaw=ft-pool1)"
        )
    order = [
        np.array([r.tables.index(t) * r.seeds + s for t in first.tables for s in range(r.seeds)])
        for r in results
    ]  # each result's runs in the first's (table, seed) order
    settings = {}
    for r in results:
        settings.update(r.settings)
    return assemble_result(
        data=first.data,
        tables=first.tables,
        seeds=first.seeds,
        budget=first.budget,
        report_budgets=tuple(sorted({b for r in results for b in r.report_budgets})),
        optimizers=tuple(names),
        scores=np.concatenate([r.scores[:, idx] for r, idx in zip(results, order, strict=True)]),
        regret=np.concatenate([r.regret[:, idx] for r, idx in zip(results, order, strict=True)]),
        runs=_runs_in_order([run for r in results for run in r.runs], names, first.tables),
        settings=settings,
        data_sha256=next(iter(hashes), None),
    )


def _runs_in_order(
    runs: Sequence[RunRecord], optimizers: Sequence[str], tables: Sequence[str]
) -> list[RunRecord]:
    """The records of ``optimizers`` ordered as :class:`HPOEvalResult` keeps them: by table (in
    the order of ``tables``), then seed, then optimizer."""
    by_key = {(r.table, r.seed, r.optimizer): r for r in runs}
    seeds = sorted({r.seed for r in runs})
    return [by_key[(t, s, o)] for t in tables for s in seeds for o in optimizers]
