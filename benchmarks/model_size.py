"""Model size by quality per unit of forward time: networks of several sizes, trained alike.

Each size ``WIDTHxLAYERS`` (``d_model`` x encoder layers; heads = width / 32, FFN = 2 x width, the
rest as the ``cpu`` preset: prior, optimiser, batch of 8 tasks) is pretrained from scratch for the
same number of steps, so every network sees the same tasks. Then each is measured the same way:

* held-out FT-PFN prior log-likelihood at context shares 10/20/40/80% (``evaluate_prior``, its
  own seed stream, 128 tasks);
* with ``--data FILE.h5``: log-likelihood, MSE and coverage of ``pfn`` on recorded curves
  (``evaluate_surrogate``, one seed, context sizes 400 and 1000);
* the median forward time of the surrogate's predictive on one task of 1000 context points (50
  curves x 20 points, 10 hyperparameters) and 2000 queries, one thread.

Trainings are resumable (``--out`` keeps them): a second call with the same arguments only measures
(its "train s" is then the resume's, not the training's). Equal steps is equal data, not equal
compute: a smaller network also trains faster, and the table prints the training time of each.

    python benchmarks/model_size.py --sizes 64x2,128x4 --steps 600 \
        --data ../shared/data/taskset_dev.h5 --reference checkpoints/default
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pfn.evaluate import SurrogateEvalConfig, evaluate_prior, evaluate_surrogate
from pfn.surrogate import Surrogate
from pfn.train import pretrain, train_config


def size_config(width: int, layers: int, steps: int, seed: int):
    """The ``cpu`` preset with a network of that width and depth, trained ``steps`` steps."""
    base = train_config("cpu")
    model = dataclasses.replace(
        base.model, d_model=width, n_heads=max(1, width // 32), n_layers=layers, d_ff=2 * width
    )
    return dataclasses.replace(
        base, model=model, max_steps=steps, val_every=steps, checkpoint_every=max(1, steps // 4),
        seed=seed,
    )  # fmt: skip


def forward_ms(surrogate: Surrogate, repeats: int = 7) -> float:
    """Median ms of one predictive (1000 context points, 2000 queries), one thread."""
    rng = np.random.default_rng(0)
    c, pts, m = 50, 20, 2000
    configs = rng.random((c + m, 10))
    ctx_curve = np.repeat(np.arange(c), pts)
    ctx_t = np.tile(np.arange(1, pts + 1) / 50, c)
    ctx_y = rng.random(c * pts)
    qry_curve = np.concatenate([np.arange(c), rng.integers(c, c + m, m - c)])
    qry_t = np.full(m, 0.8)
    args = dict(ctx_curve=ctx_curve, ctx_t=ctx_t, ctx_y=ctx_y, qry_curve=qry_curve, qry_t=qry_t)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        surrogate.forecast(configs, **args)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            surrogate.forecast(configs, **args)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x2,128x4", help="comma-separated WIDTHxLAYERS")
    parser.add_argument("--steps", type=int, default=600, help="training steps of every size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="curve file for the real-curve columns")
    parser.add_argument("--out", default="runs/model_size", help="where the trainings go")
    parser.add_argument(
        "--reference", default=None, help="also measure this checkpoint (e.g. checkpoints/default)"
    )
    args = parser.parse_args()
    rows = []
    models: list[tuple[str, Path | None, float]] = []
    for size in args.sizes.split(","):
        width, layers = (int(x) for x in size.lower().split("x"))
        out = Path(args.out) / size
        start = time.perf_counter()
        result = pretrain(size_config(width, layers, args.steps, args.seed), out, progress=False)
        models.append((size, result.checkpoint.with_suffix(""), time.perf_counter() - start))
    if args.reference:
        models.append((f"reference {args.reference}", Path(args.reference), float("nan")))
    for name, path, train_s in models:
        sur = Surrogate.load(path)
        params = sum(p.numel() for p in sur.model.parameters())
        prior = evaluate_prior(sur, prior="ftpfn", n_tasks=128)
        row = [name, f"{params / 1e6:.2f} M", f"{train_s:.0f}"]
        row += [f"{prior.ll[f]:.3f}" for f in sorted(prior.ll)]
        if args.data:
            cfg = SurrogateEvalConfig(context_sizes=(400, 1000), seeds=1, methods=("pfn",))
            res = evaluate_surrogate(args.data, surrogate=sur, config=cfg, progress=False)
            for n in cfg.context_sizes:
                s = res.score("pfn", n)
                row += [f"{s.ll:.3f} / {s.mse:.5f} / {s.coverage:.3f}"]
        row.append(f"{forward_ms(sur):.0f}")
        rows.append(row)
    head = ["model", "parameters", "train s (this call)", "prior 10%", "20%", "40%", "80%"]
    if args.data:
        head += [f"{Path(args.data).name} N={n} (ll / mse / cover)" for n in (400, 1000)]
    head.append("forward ms")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
