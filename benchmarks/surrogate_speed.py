"""Forward time and peak memory of the surrogate at growing context sizes.

N context points = N/20 curves x 20 points each, 10 hyperparameters, M = 2000 queries, batch of one
task (how a freeze-thaw loop calls it). Median of ``--repeats`` timed forward passes after one
warm-up. Peak memory is the growth of the process's peak RSS during the forward passes, measured
in a fresh child process per N (resident memory sampled every millisecond during one cold
forward pass, minus the resident memory of the loaded model and inputs).

    python benchmarks/surrogate_speed.py                 # the shipped checkpoint's model size
    python benchmarks/surrogate_speed.py --config small  # a pretraining variant's size
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import threading
import time

import torch

from pfn.model import CurveSetInput, CurveSetTransformer, ModelConfig

POINTS_PER_CURVE = 20
N_HPS = 10


def make_input(n_context: int, n_queries: int, max_hps: int, seed: int = 0) -> CurveSetInput:
    """One task: n_context/20 curves with 20 observed points each, queries spread over them."""
    g = torch.Generator().manual_seed(seed)
    c = max(1, n_context // POINTS_PER_CURVE)
    configs = torch.zeros(1, c, max_hps)
    configs[..., :N_HPS] = torch.rand(1, c, N_HPS, generator=g)
    hp_mask = torch.zeros(1, max_hps, dtype=torch.bool)
    hp_mask[:, :N_HPS] = True
    steps = torch.arange(1, POINTS_PER_CURVE + 1).repeat(c)[None]  # (1, N)
    return CurveSetInput(
        configs=configs,
        hp_mask=hp_mask,
        curve_mask=torch.ones(1, c, dtype=torch.bool),
        ctx_curve=torch.arange(c).repeat_interleave(POINTS_PER_CURVE)[None],
        ctx_t=steps / 100.0,
        ctx_y=torch.rand(1, c * POINTS_PER_CURVE, generator=g),
        ctx_mask=torch.ones(1, c * POINTS_PER_CURVE, dtype=torch.bool),
        qry_curve=torch.randint(0, c, (1, n_queries), generator=g),
        qry_t=torch.rand(1, n_queries, generator=g) * 0.8 + 0.2,
        qry_mask=torch.ones(1, n_queries, dtype=torch.bool),
    )


def _measure(model_cfg: dict, n: int, m: int, repeats: int, threads: int, out: mp.Queue) -> None:
    torch.set_num_threads(threads)
    cfg = ModelConfig.from_dict(model_cfg)
    net = CurveSetTransformer(cfg).eval()
    inp = make_input(n, m, cfg.max_hps)
    with torch.inference_mode():
        net(inp)  # warm-up (allocator, kernels)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            net(inp)
            times.append(time.perf_counter() - start)
    out.put(statistics.median(times))


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _cold_peak(model_cfg: dict, n: int, m: int, threads: int, out: mp.Queue) -> None:
    """Peak resident memory growth of one cold forward pass, sampled every millisecond."""
    torch.set_num_threads(threads)
    cfg = ModelConfig.from_dict(model_cfg)
    net = CurveSetTransformer(cfg).eval()
    inp = make_input(n, m, cfg.max_hps)
    base = _rss_mib()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with torch.inference_mode():
        net(inp)
    done.set()
    sampler.join()
    out.put(max(peak, _rss_mib()) - base)


def _in_child(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=None,
        help="pretraining variant (tiny|small|base); default: shipped checkpoint",
    )
    parser.add_argument("--sizes", default="400,1000,1800,4000,10000")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    if args.config is None:
        from pfn.surrogate import Surrogate

        cfg = Surrogate.load().config
        source = "shipped checkpoint"
    else:
        from pfn.train import train_config

        cfg = train_config(args.config).model
        source = f"train_config({args.config!r})"
    n_params = sum(p.numel() for p in CurveSetTransformer(cfg).parameters())
    print(f"model: {source}: {cfg}  ({n_params / 1e6:.2f} M parameters)")
    print(
        f"torch {torch.__version__}, {args.threads} threads, M = {args.queries} queries, "
        f"median of {args.repeats}"
    )
    print(f"{'N':>7} {'curves':>7} {'forward s':>10} {'peak MiB (cold)':>16}")
    for n in (int(s) for s in args.sizes.split(",")):
        median = _in_child(_measure, cfg.to_dict(), n, args.queries, args.repeats, args.threads)
        peak = _in_child(_cold_peak, cfg.to_dict(), n, args.queries, args.threads)
        print(f"{n:>7} {n // POINTS_PER_CURVE:>7} {median:>10.4f} {peak:>16.1f}")


if __name__ == "__main__":
    main()
