"""Measure which bucket borders to use: equal width on [0, 1] or equal prior mass.

Trains the same small network twice on the same prior stream, once per border scheme, and
prints the held-out validation log-likelihood (higher is better) at each context fraction.

    python benchmarks/bucket_borders.py --steps 300
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace

import torch

from pfn.model import ModelConfig
from pfn.train import pretrain, train_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--buckets", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = replace(
        train_config("tiny"),
        model=ModelConfig(d_model=64, n_heads=4, n_layers=2, d_ff=128, n_buckets=args.buckets),
        prior={"name": "ftpfn", "seq_len": 300, "n_configs": 300},
        batch_size=8,
        max_steps=args.steps,
        val_batches=8,
        val_every=args.steps,
        checkpoint_every=args.steps,
    )
    results = {}
    for borders in ("uniform", "equal-mass"):
        with tempfile.TemporaryDirectory() as out:
            cfg = replace(base, borders=borders)
            results[borders] = pretrain(cfg, out, accelerator="cpu", progress=False).val_ll
    fracs = sorted(results["uniform"], key=float)
    print(f"{args.steps} steps, {args.buckets} buckets; validation log-likelihood by context share")
    print(f"{'borders':>12} " + " ".join(f"{f:>7}" for f in fracs))
    for name, ll in results.items():
        print(f"{name:>12} " + " ".join(f"{ll[f]:>7.3f}" for f in fracs))


if __name__ == "__main__":
    main()
