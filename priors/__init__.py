"""Priors over learning-curve tasks: sample synthetic curves to pretrain the PFN on.

    import torch
    from priors import make_prior

    batch = make_prior("ftpfn").sample(25, generator=torch.Generator().manual_seed(0))
"""

from priors.batch import CurveBatch
from priors.registry import PRIOR_NAMES, make_prior
from priors.threaded import ThreadedPrior

__all__ = ["PRIOR_NAMES", "CurveBatch", "ThreadedPrior", "make_prior"]
