"""Throughput of the FT-PFN prior at the reference shape (batches of 25 tasks x 1000 tokens).

Run: ``python benchmarks/prior_throughput.py [--device cpu|cuda] [--batches 20] [--workers 2]``.
On the CPU it prints tasks/s and tokens/s with 1 and 2 threads (one process), then for
``priors.threaded.ThreadedPrior`` (``--workers`` Python threads, each sampling a part of the
batch) with one intra-op thread per worker (its default) and with the process's 2 intra-op threads
left alone, and the process CPU time per batch (all threads), which other load on the machine
disturbs much less than the wall clock; on CUDA the time of one batch.
"""

from __future__ import annotations

import argparse
import time

import torch

from priors.base import Prior
from priors.ftpfn import FTPFNPrior, FTPFNPriorConfig
from priors.threaded import ThreadedPrior


def measure(
    prior: Prior, device: torch.device, batches: int, batch_size: int
) -> tuple[float, float]:
    """Wall and process CPU seconds per batch, after one warm-up batch (synchronised on CUDA)."""
    gen = torch.Generator(device=device).manual_seed(0)
    prior.sample(batch_size, generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        prior.sample(batch_size, generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / batches, (time.process_time() - cpu_start) / batches


def main() -> None:
    """Print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--workers", type=int, default=2, help="threads of the threaded sampler")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = FTPFNPriorConfig()
    prior = FTPFNPrior(config)
    tokens = args.batch_size * config.seq_len
    if device.type == "cpu":
        previous = torch.get_num_threads()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            sec, cpu_sec = measure(prior, device, args.batches, args.batch_size)
            print(
                f"cpu threads={threads}: {args.batch_size / sec:8.1f} tasks/s "
                f"{tokens / sec:10.0f} tokens/s ({sec * 1e3:.1f} ms per batch, "
                f"{cpu_sec * 1e3:.1f} ms CPU time)"
            )
        # The process stays at 2 intra-op threads; each sampler gets its own pool (a worker
        # thread keeps the setting it found when it first ran a parallel op).
        for intra_op, label in ((1, "1"), (None, "2 (left alone)")):
            with ThreadedPrior(prior, args.workers, intra_op_threads=intra_op) as threaded:
                sec, cpu_sec = measure(threaded, device, args.batches, args.batch_size)
            print(
                f"cpu threaded workers={args.workers} intra-op threads={label}: "
                f"{args.batch_size / sec:8.1f} tasks/s "
                f"{tokens / sec:10.0f} tokens/s ({sec * 1e3:.1f} ms per batch, "
                f"{cpu_sec * 1e3:.1f} ms CPU time)"
            )
        torch.set_num_threads(previous)
    else:
        sec, _ = measure(prior, device, args.batches, args.batch_size)
        print(
            f"{device}: {sec * 1e3:.2f} ms per batch of {args.batch_size} x {config.seq_len} "
            f"({args.batch_size / sec:.0f} tasks/s)"
        )
    if device.type == "cpu" and torch.cuda.is_available():
        sec, _ = measure(prior, torch.device("cuda"), args.batches, args.batch_size)
        print(f"cuda: {sec * 1e3:.2f} ms per batch of {args.batch_size} x {config.seq_len}")


if __name__ == "__main__":
    main()
