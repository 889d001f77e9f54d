"""Flow matching over flat vectors [K, d] (Lipman et al. 2023; rectified flow, Liu et al. 2023): a velocity network
v(x_t, t) learns the straight path x_t = (1 - t) x_0 + t x_1 from noise x_0 ~ N(0, I) to a data point x_1 (its
target velocity x_1 - x_0), and sampling integrates dx/dt = v(x, t) from t = 0 to 1 in Euler or midpoint steps.

The probability path (AffineProbPath with the conditional optimal-transport schedule) and the ODE solver are
Meta's `flow_matching` package's. The velocity network is a flat denoiser of pdiff.denoisers (train.diffusion.arch
and kwargs) given t * num_train_timesteps, so that its sinusoidal time embedding spans the range it was made for;
it trains with train.diffusion's steps, batch size, lr and EMA. Unconditioned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from flow_matching.path import AffineProbPath
from flow_matching.path.scheduler import CondOTScheduler
from flow_matching.solver import ODESolver
from flow_matching.utils import ModelWrapper
from torch import Tensor, nn

from ..denoisers import build_denoiser
from ..errors import ConfigError
from ..fitting import fit_averaged
from .base import register_prior, strip

if TYPE_CHECKING:
    from ..config import DiffusionConfig

FLOW_SAMPLERS = ("euler", "midpoint")
# Integration steps when none are given: 100 velocity evaluations either way (midpoint takes two a step).
DEFAULT_FLOW_STEPS = {"euler": 100, "midpoint": 50}


class Velocity(ModelWrapper):
    """The velocity network as the solver calls it: x [n, d], t a scalar in [0, 1] -> [n, d]."""

    def __init__(self, net: nn.Module, timesteps: int):
        super().__init__(net)
        self.timesteps = timesteps

    def forward(self, x: Tensor, t: Tensor, **extras) -> Tensor:
        return self.model(x, t.expand(len(x)) * self.timesteps)


@register_prior("flow")
class FlowPrior:
    """A velocity network over flat vectors [K, d]; sampled with its EMA weights (unless ema_decay = 0)."""

    conditioned = False

    def __init__(self, latent_shape: tuple[int, ...], global_tokens: int, config: DiffusionConfig,
                 device: torch.device, seed: int):
        if len(latent_shape) != 1:
            raise ConfigError(f"the flow prior draws flat vectors [d], not {list(latent_shape)}: use a flat "
                              "autoencoder (train.autoencoder.arch=mlp) or train.family=flow")
        if config.condition != "none":
            raise ConfigError("the flow prior is unconditioned: set train.diffusion.condition=none")
        self.latent_shape, self.config, self.device, self.seed = latent_shape, config, device, seed
        self.velocity = build_denoiser(config.arch, latent_shape[0], **config.kwargs).to(device)
        self.path = AffineProbPath(scheduler=CondOTScheduler())
        self.metrics: list[dict] = []

    def loss(self, net: nn.Module, x1: Tensor, noise: torch.Generator, token_ids: Tensor | None = None) -> Tensor:
        """The conditional flow-matching loss of a batch x1 [b, d]: |v(x_t, t) - (x_1 - x_0)|^2, t ~ U(0, 1)."""
        x0 = torch.randn(x1.shape, generator=noise, device=x1.device)
        t = torch.rand(len(x1), generator=noise, device=x1.device)
        point = self.path.sample(x_0=x0, x_1=x1, t=t)
        return F.mse_loss(net(point.x_t, t * self.config.num_train_timesteps), point.dx_t)

    def fit(self, z: Tensor, condition: Tensor | None = None, progress: bool = True) -> None:
        """Train the velocity network on z [K, d]."""
        cfg = self.config
        self.velocity = fit_averaged(self.velocity, z, self.loss, cfg, "flow", cfg.ema_decay, seed=self.seed,
                                     metrics=self.metrics, progress=progress, section="diffusion")

    @torch.no_grad()
    def sample(self, n: int, sampler: str, steps: int | None, generator: torch.Generator,
               condition: float | None = None, guidance: float = 0.0, progress: bool = False) -> Tensor:
        """[n, d]: noise drawn from `generator` carried from t = 0 to 1 by `steps` steps of `sampler`."""
        if sampler not in FLOW_SAMPLERS:
            raise ConfigError(f"sampler={sampler!r} draws from a diffusion model; a flow integrates its velocity: "
                              f"choose {' or '.join(FLOW_SAMPLERS)}")
        steps = steps or DEFAULT_FLOW_STEPS[sampler]
        x0 = torch.randn(n, *self.latent_shape, generator=generator).to(self.device)
        solver = ODESolver(velocity_model=Velocity(self.velocity, self.config.num_train_timesteps))
        grid = torch.tensor([0.0, 1.0], device=self.device)
        return solver.sample(x_init=x0, step_size=1 / steps, method=sampler, time_grid=grid)

    def state_dict(self) -> dict[str, Tensor]:
        return {f"velocity.{k}": v for k, v in self.velocity.state_dict().items()}

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        self.velocity.load_state_dict(strip(tensors, "velocity."))
        self.velocity.eval()
