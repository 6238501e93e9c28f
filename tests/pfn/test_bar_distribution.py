"""Tests for pfn/bar_distribution.py, mostly against values worked out by hand.

The hand example: borders [0, 0.1, 0.5, 0.6, 1.0] (widths 0.1, 0.4, 0.1, 0.4; centres 0.05, 0.3,
0.55, 0.8) and bucket probabilities [0.1, 0.2, 0.3, 0.4] (densities 1, 0.5, 3, 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from pfn.bar_distribution import BarDistribution, equal_mass_borders, uniform_borders

BORDERS = [0.0, 0.1, 0.5, 0.6, 1.0]
PROBS = [0.1, 0.2, 0.3, 0.4]


@pytest.fixture
def dist() -> BarDistribution:
    return BarDistribution(torch.tensor(BORDERS))


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.tensor(PROBS).log() + 0.7  # a shift must not matter: logits, not log-probs


def random_case(seed: int, k: int = 8) -> tuple[BarDistribution, torch.Tensor]:
    """Random unequal borders on [0, 1] and random logits of shape (3, K)."""
    g = torch.Generator().manual_seed(seed)
    inner = torch.rand(k - 1, generator=g).sort().values
    borders = torch.cat([torch.zeros(1), inner, torch.ones(1)])
    return BarDistribution(borders), 2.0 * torch.randn(3, k, generator=g)


# ---- border constructors ---------------------------------------------------------------------


def test_uniform_borders():
    b = uniform_borders(4, -1.0, 1.0)
    assert b.dtype == torch.float32
    torch.testing.assert_close(b, torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))
    b = uniform_borders(1000)
    assert b.shape == (1001,) and b[0] == 0.0 and b[-1] == 1.0
    assert (b.diff() > 0).all()


@pytest.mark.parametrize(
    "args, name",
    [((0,), "n_buckets"), ((2.0,), "n_buckets"), ((True,), "n_buckets"), ((4, 1.0, 1.0), "low")],
)
def test_uniform_borders_invalid(args, name):
    with pytest.raises(ValueError, match=name):
        uniform_borders(*args)


def test_equal_mass_borders_matches_quantiles():
    samples = torch.rand(10_001, generator=torch.Generator().manual_seed(0)) ** 2
    b = equal_mass_borders(samples, 4)
    expected = np.quantile(samples.double().numpy(), [0.25, 0.5, 0.75])
    assert b[0] == 0.0 and b[-1] == 1.0
    np.testing.assert_allclose(b[1:-1].numpy(), expected, rtol=1e-6)
    # On a tiny sample by hand: quantiles of [0, 0.2, 0.4, 0.6, 0.8] at 1/2 is 0.4.
    b = equal_mass_borders(torch.tensor([0.8, 0.0, 0.4, 0.6, 0.2]), 2)
    torch.testing.assert_close(b, torch.tensor([0.0, 0.4, 1.0]))


def test_equal_mass_borders_with_atoms_strictly_increasing():
    # 40% exactly 0, 30% exactly 1, a few outside [0, 1] (clipped), the rest spread out.
    g = torch.Generator().manual_seed(1)
    samples = torch.cat(
        [torch.zeros(400), torch.ones(300), torch.rand(290, generator=g), torch.tensor([-3.0] * 5),
         torch.tensor([7.0] * 5)]
    )  # fmt: skip
    k = 100
    b = equal_mass_borders(samples, k)
    assert b.shape == (k + 1,)
    assert b[0] == 0.0 and b[-1] == 1.0
    widths = b.diff()
    assert (widths > 0).all()
    min_width = 1e-5  # the default on [0, 1] for K = 100
    assert widths.min() >= 0.99 * min_width
    # The atom at 0 owns about 40 narrow buckets, the atom at 1 about 30.
    assert 38 <= int((b[1:] <= 1e-3).sum()) <= 41
    assert 28 <= int((b[:-1] >= 1 - 1e-3).sum()) <= 31
    # Everything a single atom: tied borders pushed up by exactly min_width (down near `high`).
    b = equal_mass_borders(torch.full((50,), 0.5), 4, min_width=0.01)
    torch.testing.assert_close(b, torch.tensor([0.0, 0.50, 0.51, 0.52, 1.0]))
    b = equal_mass_borders(torch.zeros(50), 4, min_width=0.01)
    torch.testing.assert_close(b, torch.tensor([0.0, 0.01, 0.02, 0.03, 1.0]))
    b = equal_mass_borders(torch.ones(50), 4, min_width=0.01)
    torch.testing.assert_close(b, torch.tensor([0.0, 0.97, 0.98, 0.99, 1.0]))


@pytest.mark.parametrize(
    "samples, kwargs, name",
    [
        (torch.zeros(0), {}, "samples"),
        (torch.tensor([0.1, float("nan")]), {}, "samples"),
        ([0.1, 0.2], {}, "samples"),
        (torch.rand(10), {"n_buckets": 0}, "n_buckets"),
        (torch.rand(10), {"low": 1.0, "high": 0.0}, "low"),
        (torch.rand(10), {"min_width": 0.25}, "min_width"),
        (torch.rand(10), {"min_width": 0.0}, "min_width"),
    ],
)
def test_equal_mass_borders_invalid(samples, kwargs, name):
    kwargs = {"n_buckets": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        equal_mass_borders(samples, **kwargs)


# ---- module ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "borders",
    [[0.0], [[0.0, 1.0]], [0.0, 0.5, 0.5, 1.0], [0.0, 0.6, 0.5, 1.0], [0.0, float("nan"), 1.0]],
)
def test_invalid_borders(borders):
    with pytest.raises(ValueError, match="borders"):
        BarDistribution(torch.tensor(borders))


def test_borders_buffer_state_dict_and_cast(dist):
    assert "borders" in dist.state_dict()
    other = BarDistribution(uniform_borders(4))
    other.load_state_dict(dist.state_dict())
    torch.testing.assert_close(other.borders, dist.borders)
    assert dist.n_buckets == 4
    # A module-wide cast must not round the borders (bfloat16 would merge 1000 buckets on [0,1]).
    big = BarDistribution(uniform_borders(1000)).to(torch.bfloat16)
    assert big.borders.dtype == torch.float32
    assert (big.borders.diff() > 0).all()


def test_invalid_logits_and_arguments(dist, logits):
    with pytest.raises(ValueError, match="logits"):
        dist.mean(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="logits"):
        dist.mean(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="y"):
        dist.nll(torch.zeros(2, 3, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="threshold"):
        dist.pi(torch.zeros(2, 3, 4), torch.zeros(2))
    for q in (-0.1, 1.5, float("nan"), torch.tensor([0.5, 2.0])):
        with pytest.raises(ValueError, match="q"):
            dist.quantile(torch.zeros(2, 4), q)
    for n in (0, -1, 2.0):
        with pytest.raises(ValueError, match="n"):
            dist.sample(logits, n)


# ---- hand-computed values --------------------------------------------------------------------


def test_probs_mean_variance_by_hand(dist, logits):
    torch.testing.assert_close(dist.probs(logits), torch.tensor(PROBS))
    # E[Y] = 0.1*0.05 + 0.2*0.3 + 0.3*0.55 + 0.4*0.8 = 0.55
    torch.testing.assert_close(dist.mean(logits), torch.tensor(0.55))
    # E[Y^2] = sum p_k (a^2 + ab + b^2)/3 = (0.1*0.01 + 0.2*0.31 + 0.3*0.91 + 0.4*1.96)/3
    #        = 0.373333..., so Var = 0.373333 - 0.55^2 = 17/240.
    torch.testing.assert_close(dist.variance(logits), torch.tensor(17 / 240))


def test_log_prob_is_log_density_by_hand(dist, logits):
    y = torch.tensor([0.05, 0.3, 0.55, 0.8, 0.0, 0.1, 0.5, 1.0])
    # Density p_k / w_k: 1, 0.5, 3, 1; a border belongs to the bucket on its right, 1.0 to the last.
    density = torch.tensor([1.0, 0.5, 3.0, 1.0, 1.0, 0.5, 3.0, 1.0])
    torch.testing.assert_close(dist.log_prob(logits, y), density.log())
    torch.testing.assert_close(dist.nll(logits, y), -density.log())
    # Outside the support: the loss clamps onto the edge buckets; the density is zero there, and
    # NaN for NaN (a raw metric passed by mistake must not get a plausible log-likelihood)
    torch.testing.assert_close(dist.nll(logits, -0.5), dist.nll(logits, 0.0))
    torch.testing.assert_close(dist.nll(logits, 1.5), dist.nll(logits, 1.0))
    off = dist.log_prob(logits, torch.tensor([-0.5, 1.5, 5.0, math.nan, 1.0]))
    assert off[:3].tolist() == [-math.inf] * 3 and math.isnan(off[3])
    assert off[4] == density[-1].log()
    assert dist.log_prob(logits, 1.0 + 1e-3) == -math.inf  # a Python float too


def test_cdf_by_hand(dist, logits):
    at_borders = dist.cdf(logits, torch.tensor(BORDERS))
    torch.testing.assert_close(at_borders, torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0]))
    inside = dist.cdf(logits, torch.tensor([0.3, 0.55, 0.9, 0.05]))
    # 0.1 + 0.2*(0.2/0.4); 0.3 + 0.3*0.5; 0.6 + 0.4*0.75; 0.1*0.5
    torch.testing.assert_close(inside, torch.tensor([0.2, 0.45, 0.9, 0.05]))
    torch.testing.assert_close(
        dist.cdf(logits, torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 1.0])
    )


def test_quantile_by_hand(dist, logits):
    q = torch.tensor([0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.9, 1.0])
    expected = torch.tensor([0.0, 0.05, 0.1, 0.3, 0.5, 0.55, 0.6, 0.9, 1.0])
    torch.testing.assert_close(dist.quantile(logits, q), expected)
    assert math.isclose(float(dist.quantile(logits, 0.45)), 0.55, rel_tol=1e-6)
    torch.testing.assert_close(dist.ucb(logits), torch.tensor(0.9))
    torch.testing.assert_close(dist.ucb(logits, q=0.2), torch.tensor(0.3))


def test_pi_by_hand(dist, logits):
    t = torch.tensor([-1.0, 0.0, 0.3, 0.55, 0.6, 0.9, 1.0, 2.0])
    expected = torch.tensor([1.0, 1.0, 0.8, 0.55, 0.4, 0.1, 0.0, 0.0])
    torch.testing.assert_close(dist.pi(logits, t), expected)


def test_ei_by_hand(dist, logits):
    t = torch.tensor([0.55, 0.3, -1.0, 0.0, 0.9, 1.0, 2.0])
    expected = torch.tensor(
        [
            3 * 0.05**2 / 2 + 0.4 * (0.8 - 0.55),  # half of bucket 2 (density 3), all of bucket 3
            0.5 * 0.2**2 / 2 + 0.3 * (0.55 - 0.3) + 0.4 * (0.8 - 0.3),
            0.55 + 1.0,  # below the support: E[Y] - T
            0.55,
            1.0 * 0.1**2 / 2,
            0.0,
            0.0,
        ]
    )
    torch.testing.assert_close(dist.ei(logits, t), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_ei_with_one_threshold_for_all_matches_one_per_row(seed):
    dist, logits = random_case(seed)
    rows = logits.shape[:-1]
    for t in (-0.5, float(dist.borders[0]), 0.3, 0.77, float(dist.borders[-1]), 1.5):
        per_row = dist.ei(logits, torch.full(rows, t))
        torch.testing.assert_close(dist.ei(logits, t), per_row, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(dist.ei(logits, torch.tensor(t)), per_row, rtol=1e-5, atol=1e-7)
        as_double = dist.ei(logits, torch.tensor(t, dtype=torch.float64))
        torch.testing.assert_close(as_double, per_row, rtol=1e-5, atol=1e-7)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # stays float32 under autocast
            assert dist.ei(logits, t).dtype == torch.float32


@pytest.mark.parametrize("atoms", [False, True])
def test_one_threshold_paths_over_many_blocks_of_rows(atoms):
    # pi, ei (one threshold) and the mean go through row blocks without building the
    # probabilities (_expect); over several blocks, leading dims and rows of very different
    # sharpness, they must equal the softmax-based per-row paths
    import pfn.bar_distribution as bd

    dist = BarDistribution(uniform_borders(40), edge_atoms=atoms)
    gen = torch.Generator().manual_seed(5)
    scale = torch.logspace(-1, 2, 3 * (bd._EXPECT_ROWS + 7))[:, None]  # sharp and flat rows
    logits = (torch.randn(scale.shape[0], 40, generator=gen) * scale).reshape(3, -1, 40)
    probs = torch.softmax(logits, -1)
    for t in (0.1, 0.55, float(dist.borders[-1]) - 1e-3):
        rows = torch.full(logits.shape[:-1], t)
        torch.testing.assert_close(dist.pi(logits, t), dist.pi(logits, rows), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(dist.ei(logits, t), dist.ei(logits, rows), atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(dist.mean(logits), (probs * dist.centers).sum(-1))
    assert dist.mean(logits[:0]).shape == (0, logits.shape[1])
    for f in (dist.pi, dist.ei):  # empty and 1-D logits keep their shapes
        assert f(logits[:0], 0.5).shape == (0, logits.shape[1])
        torch.testing.assert_close(f(logits[1, 2], 0.5), f(logits, 0.5)[1, 2])
    for f in (dist.pi, dist.ei):  # not a tensor: the logits' check speaks first
        with pytest.raises(ValueError, match="floating-point Tensor"):
            f([[0.0] * 40], 0.5)


# ---- identities and independent checks -------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantile_inverts_cdf(seed):
    dist, logits = random_case(seed)
    y = torch.rand(50, 3, generator=torch.Generator().manual_seed(seed))
    back = dist.quantile(logits, dist.cdf(logits, y))
    # float32 rounding of the cdf is magnified by 1 / density in the inverse. The cdf is a float32
    # cumulative sum over the buckets, so its rounding grows with their number and depends on the
    # CPU's summation order (measured up to 2.7e-6 on an AMD EPYC): allow 1e-5.
    tolerance = 1e-6 + 1e-5 / dist.log_prob(logits, y).exp()
    assert ((back - y).abs() <= tolerance).all()
    q = torch.linspace(0, 1, 41).unsqueeze(-1)  # (41, 1) against leading shape (3,)
    torch.testing.assert_close(dist.cdf(logits, dist.quantile(logits, q)), q.expand(41, 3))


@pytest.mark.parametrize("seed", [0, 1])
def test_moments_pi_ei_match_numeric_integration(seed):
    dist, logits = random_case(seed, k=6)
    lg = logits[0]
    b = dist.borders.double().numpy()
    p = dist.probs(lg).double().numpy()
    w = np.diff(b)

    def density(y: float) -> float:
        k = int(np.clip(np.searchsorted(b, y, side="right") - 1, 0, len(w) - 1))
        return p[k] / w[k] if b[0] <= y <= b[-1] else 0.0

    def quad(f, *kinks: float) -> float:
        points = np.sort(np.concatenate([b[1:-1], kinks]))
        return integrate.quad(f, b[0], b[-1], points=points, limit=200)[0]

    mean = quad(lambda y: y * density(y))
    assert math.isclose(quad(density), 1.0, rel_tol=1e-6)
    assert math.isclose(float(dist.mean(lg)), mean, rel_tol=1e-5)
    var = quad(lambda y: (y - mean) ** 2 * density(y))
    assert math.isclose(float(dist.variance(lg)), var, rel_tol=1e-4)
    for t in (0.05, 0.37, 0.8):
        ei = quad(lambda y, t=t: max(y - t, 0.0) * density(y), t)
        pi = quad(lambda y, t=t: float(y > t) * density(y), t)
        assert math.isclose(float(dist.ei(lg, t)), ei, rel_tol=1e-4, abs_tol=1e-7)
        assert math.isclose(float(dist.pi(lg, t)), pi, rel_tol=1e-4, abs_tol=1e-7)
        # EI is also the integral of the survival function above T.
        grid = torch.linspace(t, 1.0, 20_001)
        surv = dist.pi(lg, grid).double().numpy()
        assert math.isclose(np.trapezoid(surv, grid.double().numpy()), ei, rel_tol=1e-4)


def test_sample_frequencies_and_monte_carlo(dist, logits):
    n = 200_000
    y = dist.sample(logits, n, generator=torch.Generator().manual_seed(0))
    assert y.shape == (n,) and y.dtype == torch.float32
    assert ((y >= 0) & (y <= 1)).all()
    k = torch.bucketize(y, dist.borders[1:-1], right=True)
    freq = torch.bincount(k, minlength=4).double() / n
    # Binomial standard error is at most 0.0011; allow 5 of them.
    torch.testing.assert_close(freq, torch.tensor(PROBS, dtype=torch.float64), atol=6e-3, rtol=0)
    # Uniform within a bucket: the relative position has mean 1/2 and variance 1/12.
    rel = (y - dist.borders[k]) / dist.widths[k]
    assert abs(float(rel.mean()) - 0.5) < 5e-3
    assert abs(float(rel.var()) - 1 / 12) < 2e-3
    # Monte-Carlo EI, PI and mean agree with the exact values.
    for t in (0.3, 0.55, 0.9):
        mc_ei = float((y - t).clamp(min=0).mean())
        assert math.isclose(mc_ei, float(dist.ei(logits, t)), rel_tol=0.02)
        assert math.isclose(float((y > t).float().mean()), float(dist.pi(logits, t)), abs_tol=6e-3)
    assert math.isclose(float(y.mean()), 0.55, abs_tol=3e-3)


def test_sample_seeded_and_shaped():
    dist, logits = random_case(3)  # (3, K)
    a = dist.sample(logits, 5, generator=torch.Generator().manual_seed(7))
    b = dist.sample(logits, 5, generator=torch.Generator().manual_seed(7))
    c = dist.sample(logits, 5, generator=torch.Generator().manual_seed(8))
    assert a.shape == (5, 3)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    assert dist.sample(logits).shape == (3,)
    assert dist.sample(logits[0]).shape == ()
    # A distribution with all mass in one bucket only ever samples there.
    one = torch.full((8,), -torch.inf)
    one[5] = 0.0
    s = dist.sample(one, 1000, generator=torch.Generator().manual_seed(0))
    assert ((s >= dist.borders[5]) & (s < dist.borders[6])).all()


def test_broadcasting_matches_per_element():
    dist, logits = random_case(4)  # logits (3, K)
    logits = torch.stack([logits, logits.flip(0)])  # (2, 3, K)
    y = torch.tensor([0.1, 0.5, 0.93])  # (3,) broadcasts against (2, 3)
    for name in ("nll", "log_prob", "cdf", "pi", "ei"):
        out = getattr(dist, name)(logits, y)
        assert out.shape == (2, 3), name
        for i in range(2):
            for j in range(3):
                single = getattr(dist, name)(logits[i, j], float(y[j]))
                torch.testing.assert_close(out[i, j], single, msg=name)
    q = torch.tensor([[0.1], [0.7]])  # (2, 1)
    out = dist.quantile(logits, q)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out[1, 2], dist.quantile(logits[1, 2], 0.7))
    for name in ("mean", "variance"):
        assert getattr(dist, name)(logits).shape == (2, 3)
    # Extra leading dims on y broadcast too: (5, 1, 1) against (2, 3) gives (5, 2, 3).
    assert dist.pi(logits, torch.rand(5, 1, 1)).shape == (5, 2, 3)


def test_zero_probability_buckets_no_nan():
    dist = BarDistribution(uniform_borders(4))
    logits = torch.tensor([-torch.inf, 0.0, -torch.inf, 0.0], requires_grad=True)
    # Mass 1/2 on [0.25, 0.5) and on [0.75, 1].
    torch.testing.assert_close(dist.mean(logits), torch.tensor(0.5 * 0.375 + 0.5 * 0.875))
    assert dist.nll(logits, 0.1) == torch.inf
    torch.testing.assert_close(dist.nll(logits, 0.3), torch.tensor(-math.log(2.0)))
    # The cdf is flat at 1/2 on [0.5, 0.75]; its quantile is the left end, and it skips bucket 2.
    torch.testing.assert_close(dist.quantile(logits, 0.5), torch.tensor(0.5))
    torch.testing.assert_close(dist.quantile(logits, 0.75), torch.tensor(0.875))
    torch.testing.assert_close(dist.quantile(logits, 0.0), torch.tensor(0.0))
    torch.testing.assert_close(dist.pi(logits, 0.6), torch.tensor(0.5))
    torch.testing.assert_close(dist.ei(logits, 0.6), torch.tensor(0.5 * (0.875 - 0.6)))
    total = (
        dist.mean(logits)
        + dist.variance(logits)
        + dist.cdf(logits, 0.3)
        + dist.quantile(logits, torch.tensor([0.0, 0.3, 0.5, 1.0])).sum()
        + dist.pi(logits, 0.3)
        + dist.ei(logits, 0.3)
        + dist.nll(logits, 0.3)
    )
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logits.grad).all()


def test_low_precision_logits():
    dist, logits = random_case(5)
    low = logits.bfloat16()
    ref = logits.bfloat16().float()  # the same values, already float32
    for name, arg in (("nll", 0.4), ("cdf", 0.4), ("pi", 0.4), ("ei", 0.4), ("quantile", 0.4)):
        out = getattr(dist, name)(low, arg)
        assert out.dtype == torch.float32, name
        torch.testing.assert_close(out, getattr(dist, name)(ref, arg), msg=name)
    assert dist.mean(low).dtype == torch.float32
    assert dist.sample(low, 3).dtype == torch.float32


def test_pi_keeps_tiny_tail_probabilities():
    # One in a million above 0.999: 1 - cdf would round this to a multiple of 6e-8.
    dist = BarDistribution(uniform_borders(1000))
    logits = torch.zeros(1000)
    logits[-1] = -math.log(1e6) - math.log(999)
    p_last = float(dist.probs(logits)[-1])
    assert math.isclose(float(dist.pi(logits, 0.9995)), p_last / 2, rel_tol=1e-4)


def test_quantile_one_is_top_of_last_nonempty_bucket():
    # Rounding leaves the cumulative sum a hair off 1; q = 1 must still land in the last bucket
    # with mass, not in the empty buckets after it.
    dist = BarDistribution(uniform_borders(10))
    logits = torch.randn(200, 10, generator=torch.Generator().manual_seed(0))
    logits[:, 7:] = -torch.inf
    torch.testing.assert_close(dist.quantile(logits, 1.0), torch.full((200,), 0.7))
    torch.testing.assert_close(dist.ucb(logits, q=1.0), torch.full((200,), 0.7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    dist, logits = random_case(6)
    gpu = BarDistribution(dist.borders).to("cuda")  # .to moves in place: keep a CPU copy
    gpu_atoms = BarDistribution(dist.borders, edge_atoms=True).to("cuda")
    cpu_atoms = BarDistribution(dist.borders, edge_atoms=True)
    assert gpu.borders.is_cuda
    y = torch.tensor([0.2, 0.5, 0.9])
    for name in ("nll", "cdf", "pi", "ei", "quantile"):
        out = getattr(gpu, name)(logits.cuda().bfloat16(), y.cuda())
        ref = getattr(dist, name)(logits.bfloat16(), y)
        torch.testing.assert_close(out.cpu(), ref, atol=1e-5, rtol=1e-4, msg=name)
        out = getattr(gpu_atoms, name)(logits.cuda().bfloat16(), y.cuda())
        ref = getattr(cpu_atoms, name)(logits.bfloat16(), y)
        torch.testing.assert_close(out.cpu(), ref, atol=1e-5, rtol=1e-4, msg=f"{name}, atoms")
    s = gpu.sample(logits.cuda(), 4, generator=torch.Generator("cuda").manual_seed(0))
    assert s.shape == (4, 3) and s.is_cuda


def _pi_float64(dist: BarDistribution, logits: torch.Tensor, t: float) -> np.ndarray:
    """P(Y > t) worked out in float64 with numpy, bucket by bucket (atoms at the ends if set)."""
    b = dist.borders.double().numpy()
    p = torch.softmax(logits.double(), -1).numpy()
    lo, hi = b[:-1].copy(), b[1:].copy()
    if dist.edge_atoms:
        hi[0], lo[-1] = lo[0], hi[-1]
    w = hi - lo
    frac = np.where(w > 0, np.clip((hi - t) / np.where(w > 0, w, 1.0), 0.0, 1.0), t < lo)
    return (p * frac).sum(-1)


@pytest.mark.parametrize("atoms", [False, True])
def test_pi_with_one_threshold_matches_a_float64_reference(atoms):
    # a scalar threshold takes a fast path (one (K,) vector of shares, in float64); it must agree
    # with the broadcast path and with float64 arithmetic, also just below a border
    borders = equal_mass_borders(torch.rand(4000, generator=torch.Generator().manual_seed(1)), 50)
    dist = BarDistribution(borders, edge_atoms=atoms)
    logits = torch.randn(6, 4, 50, generator=torch.Generator().manual_seed(2))
    below = math.nextafter(float(borders[17]), 0.0) - 1e-12
    for t in (-1.0, float(borders[0]), 0.3, float(borders[17]), below, 0.77, float(borders[-1])):
        ref = torch.from_numpy(_pi_float64(dist, logits, t)).float()
        torch.testing.assert_close(dist.pi(logits, t), ref, atol=1e-6, rtol=1e-5, msg=str(t))
        torch.testing.assert_close(dist.pi(logits, torch.tensor(t, dtype=torch.float64)), ref,
                                   atol=1e-6, rtol=1e-5, msg=str(t))  # fmt: skip
        general = dist.pi(logits, torch.full((6, 4), t))
        assert torch.allclose(dist.pi(logits, t), general, atol=1e-5), t
    assert (dist.pi(logits, 3.0) == 0).all()


def test_pi_with_a_threshold_a_hair_below_the_top_border():
    # 1 - 1e-9 rounds to the top border in float32; the one-threshold path keeps it in float64:
    # a sliver of the last bucket, or the whole top atom with edge atoms
    logits = torch.zeros(3, 1000)
    t = 1.0 - 1e-9
    dense = BarDistribution(uniform_borders(1000))
    torch.testing.assert_close(dense.pi(logits, t), torch.full((3,), 1e-9), atol=1e-12, rtol=1e-3)
    atoms = BarDistribution(uniform_borders(1000), edge_atoms=True)
    torch.testing.assert_close(atoms.pi(logits, t), torch.full((3,), 1e-3), atol=0, rtol=1e-4)
    assert (atoms.pi(logits, 1.0) == 0).all()
    # ei the same way: the atom at 1 is 1e-9 above the threshold
    torch.testing.assert_close(atoms.ei(logits, t), torch.full((3,), 1e-12), atol=0, rtol=1e-2)


# ---- edge atoms ------------------------------------------------------------------------------
# The hand example read with edge atoms: 0.1 at exactly 0, 0.2 uniform on [0.1, 0.5], 0.3 uniform
# on [0.5, 0.6], 0.4 at exactly 1.


@pytest.fixture
def atoms() -> BarDistribution:
    return BarDistribution(torch.tensor(BORDERS), edge_atoms=True)


def test_edge_atoms_moments_by_hand(atoms, logits):
    assert math.isclose(float(atoms.mean(logits)), 0.2 * 0.3 + 0.3 * 0.55 + 0.4, rel_tol=1e-6)
    second = 0.2 * (0.3**2 + 0.4**2 / 12) + 0.3 * (0.55**2 + 0.1**2 / 12) + 0.4
    assert math.isclose(float(atoms.variance(logits)), second - 0.625**2, rel_tol=1e-5)
    torch.testing.assert_close(atoms.centers, torch.tensor([0.0, 0.3, 0.55, 1.0]))


def test_edge_atoms_cdf_jumps_at_the_bounds(atoms, logits):
    y = torch.tensor([-0.01, 0.0, 0.05, 0.3, 0.8, 0.999, 1.0])
    expected = torch.tensor([0.0, 0.1, 0.1, 0.2, 0.6, 0.6, 1.0])
    torch.testing.assert_close(atoms.cdf(logits, y), expected)


def test_edge_atoms_quantiles_reach_the_bounds(atoms, dist, logits):
    q = torch.tensor([0.0, 0.05, 0.09, 0.2, 0.59, 0.61, 0.95, 1.0])
    expected = torch.tensor([0.0, 0.0, 0.0, 0.3, 0.5 + 0.29 / 3, 1.0, 1.0, 1.0])
    torch.testing.assert_close(atoms.quantile(logits, q), expected)
    # without atoms the 95% quantile stays inside the top bucket, below the bound
    assert float(dist.quantile(logits, 0.95)) < 1.0


def test_edge_atoms_pi_and_ei_by_hand(atoms, logits):
    t = torch.tensor([-0.1, 0.0, 0.55, 0.8, 1.0])
    torch.testing.assert_close(atoms.pi(logits, t), torch.tensor([1.0, 0.9, 0.55, 0.4, 0.0]))
    ei = torch.tensor([0.625 + 0.1, 0.625, 0.3 * 0.05**2 / (2 * 0.1) + 0.4 * 0.45, 0.08, 0.0])
    torch.testing.assert_close(atoms.ei(logits, t), ei)
    for v in t.tolist():  # the one-threshold paths agree with the broadcast ones
        torch.testing.assert_close(atoms.pi(logits, v), atoms.pi(logits, torch.tensor([v]))[0])
        torch.testing.assert_close(atoms.ei(logits, v), atoms.ei(logits, torch.tensor([v]))[0])


def test_edge_atoms_samples_sit_on_the_bounds_and_match_the_moments(atoms, logits):
    s = atoms.sample(logits, 200_000, generator=torch.Generator().manual_seed(0))
    assert abs(float((s == 0.0).float().mean()) - 0.1) < 0.005
    assert abs(float((s == 1.0).float().mean()) - 0.4) < 0.005
    assert abs(float(s.mean()) - float(atoms.mean(logits))) < 0.003
    assert abs(float(s.var()) - float(atoms.variance(logits))) < 0.003


def test_edge_atoms_keep_the_training_density(atoms, dist, logits):
    y = torch.tensor([0.0, 0.05, 0.3, 0.99, 1.0])
    torch.testing.assert_close(atoms.nll(logits, y), dist.nll(logits, y))


def test_edge_atoms_need_three_buckets():
    with pytest.raises(ValueError, match="edge_atoms"):
        BarDistribution(torch.tensor([0.0, 0.5, 1.0]), edge_atoms=True)
    assert "edge_atoms=True" in repr(BarDistribution(uniform_borders(3), edge_atoms=True))
