"""Latent priors: the models of the autoencoder's latents that ParameterGenerator fits and samples.

The seam is `LatentPrior` (base.py); each family is a module here that registers itself with
`@register_prior(name)`, imported below so that its entry is in PRIORS (train.diffusion.prior's choices).
"""

from . import factorised, flat, flow, tokens  # noqa: F401  (their registry entries)
from .base import PRIORS, ConditionedPrior, LatentPrior, build_prior, register_prior

__all__ = ["PRIORS", "ConditionedPrior", "LatentPrior", "build_prior", "register_prior"]
