"""Sample a prior's batch in parallel Python threads: more tasks per second in one CPU process.

Sampling a prior on the CPU is thousands of small torch ops (per-task random MLPs, gathers,
cumulative sums over ``(B, N)`` tensors), and torch's intra-op threads parallelise such ops badly:
most are below ATen's grain size and run on one core anyway, and the rest pay a thread team's
start-up and spin-wait for little work. Torch ops release the GIL, though, so two Python threads
that each sample *half* of the batch keep two cores busy. ``ThreadedPrior`` does that for any prior
of ``priors.base``:

    prior = ThreadedPrior(make_prior("mixture"), workers=2)
    batch = prior.sample(25, generator=torch.Generator().manual_seed(0))

Determinism. The batch depends only on the generator's state, never on thread timing. From
``generator``, in this order, ``sample`` draws: the mixture component (``MixturePrior.choose``, one
per batch as the mixture itself does, so every part comes from the same component and has the
same ``T``), the context size ``n_context`` when it is not given (the same draw the component
makes itself, so its distribution is the component's: every task of a batch shares it), and one
64-bit seed per part. Part ``i`` (a contiguous slice of the batch, sizes differing by at most one)
is then ``component.sample(size_i, generator=torch.Generator(device).manual_seed(seed_i),
n_context=n_context)``: the wrapper adds no bias, it only changes which generator each task is
drawn from. The parts are merged by padding the curve dimension ``C`` (``configs`` with 0,
``curve_mask`` with False) and concatenating along the batch (``merge_batches``). A batch of fewer
tasks than ``workers`` uses one part per task.

Intra-op threads. ``torch.set_num_threads`` is process-global: it sets the default that each
thread copies into its own OpenMP team size the first time it runs a parallel op (a thread keeps
that size until it calls ``torch.set_num_threads`` itself), and MKL's thread count. With the
default ``intra_op_threads=1``, ``sample`` sets the process to one intra-op thread while it runs
(each worker thread also applies it to its own team size, in case it started under another
setting), merges the parts under it, and restores the previous setting before it returns, so code
outside ``sample`` keeps its threads. Without this, each worker opens a team of
``torch.get_num_threads()`` OpenMP threads for its larger ops (the random MLPs' ``baddbmm`` and
sigmoids): ``workers`` teams on the cores, whose threads spin-wait at every barrier, which costs
CPU time on a 2-core machine and, if another process competes for the cores, much more wall time
(``benchmarks/prior_throughput.py`` prints both settings; on a loaded 2-core machine one thread per
worker took 74-83 ms of CPU time per batch of 25 x 1000 tokens, the process's 2 threads per
worker 84-108 ms, the plain prior on one thread 68-79 ms). One thread per worker also makes the
batch bit-identical whatever the process's setting: the FT-PFN prior's ``y`` differs in its last
bits between thread counts (parallel reductions). ``intra_op_threads=None`` leaves the setting
alone. Other threads of the process that run torch ops *during* ``sample`` see the temporary
setting; calls to ``sample`` itself are serialised by a lock. The Python-level work of the parts
holds the GIL, so ``workers`` threads give less than ``workers`` times the throughput.

Devices. The parts run in threads only on the CPU. On other devices (CUDA) they run one after
another in the calling thread, with the same seeds and so the same batch: kernels already run
asynchronously there, and the current device and stream are per thread.

Pickling and copies. The thread pool is created on the first threaded ``sample`` and is not part
of the state: a pickled or copied ``ThreadedPrior`` (a DataLoader worker, a deep-copied
LightningModule holding it) starts its own pool when it first samples. ``close`` (or ``with``)
shuts the pool down; a closed prior may sample again (it starts a new pool).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import fields
from typing import Any

import torch

from priors.base import Prior
from priors.batch import CurveBatch
from priors.ftpfn import FTPFNPrior
from priors.lcpfn import LCPFNPrior
from priors.mixture import MixturePrior

# Fields of CurveBatch with a curve dimension C (dim 1) and the value of their padded curves.
_CURVE_FIELDS: dict[str, float | bool] = {"configs": 0.0, "curve_mask": False}
_SEED_BOUND = 2**63 - 1  # seeds are drawn uniformly in [0, _SEED_BOUND)


def draw_n_context(prior: Prior, *, generator: torch.Generator) -> int:
    """The context size ``prior.sample`` draws from ``generator`` when ``n_context`` is None.

    One draw from ``generator``, exactly as the prior makes it (FT-PFN: uniform in
    ``0..seq_len-1``; LC-PFN: uniform in ``1..T-1``). A prior of another type provides it as a
    method ``draw_n_context(*, generator) -> int``; a ``MixturePrior`` has no context size of its
    own (resolve its component first, see ``ThreadedPrior.component``). TypeError otherwise.
    """
    dev = generator.device
    own = getattr(prior, "draw_n_context", None)
    if callable(own):
        return int(own(generator=generator))
    if isinstance(prior, FTPFNPrior):
        return int(torch.randint(0, prior.config.seq_len, (), generator=generator, device=dev))
    if isinstance(prior, LCPFNPrior):
        n_tokens = prior.config.tokens_per_task
        return int(torch.randint(1, n_tokens, (1,), generator=generator, device=dev).item())
    raise TypeError(
        f"cannot draw n_context for a {type(prior).__name__}: give it a method "
        "draw_n_context(*, generator) -> int that draws it as its sample() does"
    )


def _check_supported(prior: Prior) -> None:
    """TypeError unless ``draw_n_context`` handles ``prior`` (or each component of a mixture)."""
    if isinstance(prior, MixturePrior):
        for component in prior.priors:
            _check_supported(component)
    elif not (
        callable(getattr(prior, "draw_n_context", None))
        or isinstance(prior, (FTPFNPrior, LCPFNPrior))
    ):
        raise TypeError(
            f"ThreadedPrior cannot wrap a {type(prior).__name__}: it must draw the batch's "
            "n_context itself; give the prior a method draw_n_context(*, generator) -> int"
        )


def split_sizes(batch_size: int, parts: int) -> list[int]:
    """Sizes of ``min(parts, batch_size)`` contiguous parts of a batch, largest first.

    They sum to ``batch_size`` and differ by at most one: ``split_sizes(25, 2) == [13, 12]``.
    """
    n = min(parts, batch_size)
    q, r = divmod(batch_size, n)
    return [q + 1] * r + [q] * (n - r)


def merge_batches(parts: Sequence[CurveBatch]) -> CurveBatch:
    """One batch of the tasks of ``parts``, in order (the inverse of slicing along ``B``).

    The parts must share ``T``, ``D`` and ``n_context``; their curve dimensions ``C`` may differ
    and are padded to the largest (``configs`` with 0, ``curve_mask`` with False: padded curves
    are masked, as in any batch). Dtypes and devices are kept.
    """
    if not parts:
        raise ValueError("parts must hold at least one CurveBatch")
    first = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        if part.n_context != first.n_context or part.n_tokens != first.n_tokens:
            raise ValueError(
                f"parts[{i}] has n_context={part.n_context} and T={part.n_tokens}, but parts[0] "
                f"has n_context={first.n_context} and T={first.n_tokens}"
            )
    if len(parts) == 1:
        return first
    n_curves = max(p.configs.shape[1] for p in parts)  # C of the merged batch
    merged: dict[str, Any] = {"n_context": first.n_context}
    for f in fields(CurveBatch):
        if f.name == "n_context":
            continue
        values = [getattr(p, f.name) for p in parts]
        if f.name in _CURVE_FIELDS:
            pad_value = _CURVE_FIELDS[f.name]
            values = [_pad_curves(v, n_curves, pad_value) for v in values]
        merged[f.name] = torch.cat(values, dim=0)
    return CurveBatch(**merged)


def _pad_curves(x: torch.Tensor, n_curves: int, value: float | bool) -> torch.Tensor:
    """``x`` of shape (B, C, ...) padded with ``value`` to (B, n_curves, ...)."""
    missing = n_curves - x.shape[1]
    if missing == 0:
        return x
    pad = x.new_full((x.shape[0], missing, *x.shape[2:]), value)  # (B, missing, ...)
    return torch.cat([x, pad], dim=1)


class ThreadedPrior:
    """``prior`` sampled in ``workers`` threads, one contiguous part of the batch each.

    Implements ``priors.base.Prior`` (see the module docstring for how batches are drawn, why,
    and what ``intra_op_threads`` does). ``prior`` is any ``FTPFNPrior``, ``LCPFNPrior``,
    ``MixturePrior`` of those, or a prior with a ``draw_n_context(*, generator)`` method.
    """

    def __init__(self, prior: Prior, workers: int = 2, *, intra_op_threads: int | None = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if intra_op_threads is not None and (
            isinstance(intra_op_threads, bool)
            or not isinstance(intra_op_threads, int)
            or intra_op_threads < 1
        ):
            raise ValueError(
                f"intra_op_threads must be None or an integer >= 1, got {intra_op_threads!r}"
            )
        _check_supported(prior)
        self.prior = prior
        self.workers = workers
        self.intra_op_threads = intra_op_threads
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # serialises sample(): the pool and the thread setting

    @property
    def max_hps(self) -> int:
        """D of the batches it returns (the wrapped prior's)."""
        return self.prior.max_hps

    @property
    def config(self) -> object | None:
        """The wrapped prior's config (provenance, e.g. in an HDF5 store); None if it has none."""
        return getattr(self.prior, "config", None)

    def component(self, *, generator: torch.Generator) -> Prior:
        """The prior that draws the next batch: the wrapped one, or its mixture's pick.

        A ``MixturePrior`` picks its component with one draw from ``generator`` (per batch, as its
        own ``sample`` does); other priors draw nothing.
        """
        prior = self.prior
        while isinstance(prior, MixturePrior):
            prior = prior.priors[prior.choose(generator=generator)]
        return prior

    def plan(
        self, batch_size: int, *, generator: torch.Generator, n_context: int | None = None
    ) -> tuple[Prior, int, list[int], list[int]]:
        """The draws from ``generator`` that fix a batch: ``(component, n_context, sizes, seeds)``.

        Part ``i`` of the batch is ``component.sample(sizes[i], generator=torch.Generator(
        generator.device).manual_seed(seeds[i]), n_context=n_context)``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        dev = generator.device
        component = self.component(generator=generator)
        if n_context is None:
            n_context = draw_n_context(component, generator=generator)
        sizes = split_sizes(batch_size, self.workers)
        seeds = torch.randint(0, _SEED_BOUND, (len(sizes),), generator=generator, device=dev)
        return component, n_context, sizes, seeds.tolist()

    def sample(
        self, batch_size: int, *, generator: torch.Generator, n_context: int | None = None
    ) -> CurveBatch:
        """Draw ``batch_size`` tasks (see ``priors.batch``), the parts in parallel threads.

        ``n_context`` fixes the context size of every task (default: drawn from ``generator`` as
        the wrapped prior draws it); a value the prior cannot honour raises its ``ValueError``.
        """
        component, n_context, sizes, seeds = self.plan(
            batch_size, generator=generator, n_context=n_context
        )
        dev = generator.device

        def part(i: int) -> CurveBatch:
            gen = torch.Generator(device=dev).manual_seed(seeds[i])
            return component.sample(sizes[i], generator=gen, n_context=n_context)

        if dev.type != "cpu":
            return merge_batches([part(i) for i in range(len(sizes))])
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        threads = self.intra_op_threads

        def run(i: int) -> CurveBatch:
            if threads is not None and torch.get_num_threads() != threads:
                torch.set_num_threads(threads)  # this thread's team size (the process has it)
            # Grad and inference mode are per thread: give the worker the caller's.
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return part(i)

        with self._lock:
            previous = torch.get_num_threads()
            change = threads is not None and previous != threads
            if change:
                torch.set_num_threads(threads)
            try:
                if len(sizes) == 1:  # one part: no thread to hand it to
                    parts = [part(0)]
                else:
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(
                            max_workers=self.workers, thread_name_prefix="ThreadedPrior"
                        )
                    futures = [self._executor.submit(run, i) for i in range(len(sizes))]
                    wait(futures)  # all of them, even if one fails: none outlives the lock
                    parts = [f.result() for f in futures]  # raises the first part's error
                # Merged under the same setting: a copy gains nothing from a team of threads.
                return merge_batches(parts)
            finally:
                if change:
                    torch.set_num_threads(previous)

    def close(self) -> None:
        """Shut the thread pool down (waits for running parts); sampling later starts a new one."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self) -> ThreadedPrior:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        """The state without the thread pool and lock (neither pickles; copies get their own)."""
        state = self.__dict__.copy()
        state["_executor"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"ThreadedPrior({self.prior!r}, workers={self.workers}, "
            f"intra_op_threads={self.intra_op_threads})"
        )
