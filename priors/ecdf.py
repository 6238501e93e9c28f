"""The empirical CDF of raw random-MLP outputs, which turns them into uniform numbers.

FT-PFN draws each curve parameter by pushing a raw network output through this CDF (giving a
uniform number) and then through the inverse CDF of the parameter's target distribution. The
table is estimated once, by our own code with a fixed seed, from many random networks on random
inputs (all outputs pooled: they are exchangeable), and shipped as ``ecdf_table.npz`` (quantiles
at the levels ``(i + 0.5) / K``). Regenerate it with ``python -m priors.ecdf``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from priors.random_mlp import RandomMLPConfig, draw_mlps, evaluate_mlps

TABLE_PATH = Path(__file__).with_name("ecdf_table.npz")
N_QUANTILES = 2048
N_OUTPUTS = 23  # outputs per network, as in the FT-PFN prior
TABLE_SEED = 20240601
# Cells of the evenly spaced grid over the table's range that locates a raw value among the
# quantiles (a lookup and a step or two instead of a binary search, which is slow on the CPU). At
# this resolution no three adjacent cells of the shipped table hold two quantiles: one step.
N_CELLS = 65536


@dataclass(frozen=True)
class ECDFTable:
    """Quantiles of the raw outputs at evenly spaced levels, with a grid to look values up."""

    quantiles: Tensor  # (K,) increasing raw values
    levels: Tensor  # (K,) their CDF values, (i + 0.5) / K
    # Derived lookup grid (see ``to_uniform``): the quantiles padded with +inf; per grid cell the
    # number of quantiles below the previous cell, where a scan starts; the longest scan needed;
    # the steps between neighbouring quantiles and levels.
    padded: Tensor = field(init=False, repr=False)  # (K + 1,)
    scan_start: Tensor = field(init=False, repr=False)  # (G,) long
    n_steps: int = field(init=False, repr=False)
    quantile_step: Tensor = field(init=False, repr=False)  # (K - 1,) q[i + 1] - q[i]
    level_step: Tensor = field(init=False, repr=False)  # (K - 1,) levels[i + 1] - levels[i]

    def __post_init__(self) -> None:
        q = self.quantiles
        k = q.numel()
        q64 = q.double()
        edges = torch.linspace(float(q64[0]), float(q64[-1]), N_CELLS + 1, dtype=torch.float64)
        below = torch.searchsorted(q64, edges.to(q.device))  # (G + 1,) quantiles below each edge
        below = torch.cat([below, below.new_full((1,), k)])  # (G + 2,): everything below +inf
        cell = torch.arange(N_CELLS, device=q.device)
        # A computed cell may be off by one through rounding: scan from one cell back to one ahead.
        start = below[(cell - 1).clamp(min=0)]
        end = below[(cell + 2).clamp(max=N_CELLS + 1)]
        object.__setattr__(self, "padded", torch.cat([q, q.new_full((1,), math.inf)]))
        object.__setattr__(self, "scan_start", start)
        object.__setattr__(self, "n_steps", int((end - start).max()))
        object.__setattr__(self, "quantile_step", q[1:] - q[:-1])
        object.__setattr__(self, "level_step", self.levels[1:] - self.levels[:-1])

    def to(self, device: torch.device | str) -> ECDFTable:
        """The same table on ``device``."""
        return ECDFTable(self.quantiles.to(device), self.levels.to(device))


def levels(n_quantiles: int) -> Tensor:
    """The CDF levels ``(i + 0.5) / K`` of a table with ``K`` quantiles."""
    return (torch.arange(n_quantiles, dtype=torch.float64) + 0.5) / n_quantiles


def estimate_table(
    *,
    n_networks: int = 20_000,
    rows_per_network: int = 64,
    min_inputs: int = 1,
    max_inputs: int = 10,
    n_quantiles: int = N_QUANTILES,
    mlp: RandomMLPConfig | None = None,
    seed: int = TABLE_SEED,
    chunk: int = 500,
) -> ECDFTable:
    """Estimate the table from ``n_networks`` random networks, deterministically from ``seed``.

    Each network gets ``d ~ U{min_inputs..max_inputs}`` inputs and ``rows_per_network`` uniform
    input rows; all ``N_OUTPUTS`` outputs of all rows are pooled.
    """
    mlp = mlp or RandomMLPConfig()
    gen = torch.Generator().manual_seed(seed)
    outs = []
    for start in range(0, n_networks, chunk):
        b = min(chunk, n_networks - start)
        draw = draw_mlps(mlp, b, generator=gen)
        d = torch.randint(min_inputs, max_inputs + 1, (b,), generator=gen)
        hp_mask = torch.arange(max_inputs) < d[:, None]  # (b, D)
        x = torch.rand(b, rows_per_network, max_inputs, generator=gen)
        rows = torch.full((b,), rows_per_network)
        y = evaluate_mlps(
            draw, x, rows=rows, hp_mask=hp_mask, n_outputs=N_OUTPUTS, config=mlp, generator=gen
        )
        outs.append(y.flatten())
    values = torch.cat(outs).double().sort().values
    lv = levels(n_quantiles)
    pos = lv * values.numel() - 0.5  # (K,) fractional ranks
    lo = pos.floor().long().clamp(0, values.numel() - 1)
    hi = (lo + 1).clamp(max=values.numel() - 1)
    frac = pos - lo
    quantiles = values[lo] * (1 - frac) + values[hi] * frac
    return ECDFTable(quantiles.float(), lv.float())


def save_table(table: ECDFTable, path: Path = TABLE_PATH) -> None:
    """Write the table's quantiles to ``path`` (``.npz``)."""
    np.savez_compressed(path, quantiles=table.quantiles.numpy().astype(np.float32))


@lru_cache(maxsize=1)
def _load_cpu(path: str) -> ECDFTable:
    quantiles = torch.from_numpy(np.load(path)["quantiles"]).float()
    return ECDFTable(quantiles, levels(quantiles.numel()).float())


def load_table(path: Path = TABLE_PATH) -> ECDFTable:
    """The shipped table (on the CPU; move it with ``.to``)."""
    return _load_cpu(str(path))


def to_uniform(raw: Tensor, table: ECDFTable) -> Tensor:
    """Map raw outputs to uniform numbers in ``[0.5/K, 1 - 0.5/K]`` by linear interpolation.

    Works elementwise on any shape; ``table`` must be on ``raw``'s device. Values outside the
    table's range map to the extreme levels, so the result is never 0 or 1.
    """
    q = table.quantiles
    k = q.numel()
    flat = raw.reshape(-1).to(q.dtype)  # (n,)
    # The number of quantiles below each value (what a left binary search gives): start at the
    # value's grid cell and step over the few quantiles that can lie in between.
    lo, hi = q[0], q[-1]
    cell = (flat - lo).mul_(N_CELLS / (hi - lo)).clamp_(0, N_CELLS - 1).long()
    i = table.scan_start.index_select(0, cell)  # (n,)
    for _ in range(table.n_steps):
        i += table.padded.index_select(0, i) < flat
    j = i.clamp_(1, k - 1).sub_(1)  # q[j] <= raw < q[j + 1], inside the table
    frac = (flat - q.index_select(0, j)).div_(table.quantile_step.index_select(0, j))
    frac.clamp_(0.0, 1.0).mul_(table.level_step.index_select(0, j))
    return table.levels.index_select(0, j).add_(frac).view(raw.shape)


def main(argv: list[str] | None = None) -> None:
    """Regenerate the shipped table: ``python -m priors.ecdf [--networks N] [--out PATH]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=TABLE_PATH)
    args = parser.parse_args(argv)
    table = estimate_table(n_networks=args.networks)
    save_table(table, args.out)
    print(f"wrote {table.quantiles.numel()} quantiles to {args.out}")


if __name__ == "__main__":
    main()
