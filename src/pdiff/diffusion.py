"""The DDPM's math, apart from the networks (pdiff.denoisers): the noise schedule, the training losses and the
samplers.

`NoiseSchedule` holds the betas and noises x0 to x_t. Each training loss is one function, one per way a
prior trains its denoiser: `denoising_loss` (the paper's), `guidance_loss` (a conditioned denoiser, its
condition dropped now and then: classifier-free guidance), `token_weighted_loss` (token latents whose tokens
count unequally) and `clean_prefix_loss` (the tokens after a prefix, given the prefix). `sample` runs one of
diffusers' schedulers ("ddpm", "ddim", "dpm") down from noise; diffusers is imported lazily: importing it
costs seconds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .errors import ConfigError

SAMPLERS = ("ddpm", "ddim", "dpm")
# Sampling steps when none are given; "ddpm" runs the full chain of num_train_timesteps.
DEFAULT_STEPS = {"ddim": 50, "dpm": 25}


class NoiseSchedule:
    """Linear betas from beta_start to beta_end over num_train_timesteps (paper: 1e-4 to 2e-2, T = 1000),
    epsilon prediction; every sampler's scheduler is made with these betas (`scheduler`)."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2):
        from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

        self.num_train_timesteps = num_train_timesteps
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.ddpm = DDPMScheduler(**self._arguments(), clip_sample=False)  # its add_noise noises x0

    def _arguments(self) -> dict:
        """The arguments that every scheduler shares, so all samplers use the same betas."""
        return dict(num_train_timesteps=self.num_train_timesteps, beta_start=self.beta_start,
                    beta_end=self.beta_end, beta_schedule="linear", prediction_type="epsilon")

    @property
    def betas(self) -> Tensor:
        """[T]"""
        return self.ddpm.betas

    @property
    def alphas_cumprod(self) -> Tensor:
        """[T], alpha_bar_t = prod_{s <= t} (1 - beta_s)"""
        return self.ddpm.alphas_cumprod

    def noised(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(x_t, t [B], eps) for x0 [B, *]: t uniform in {0, ..., T-1} for each sample, eps ~ N(0, 1) like x0, and
        x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps. Drawn on the generator's device (a CPU generator
        cannot fill a GPU tensor), then moved to x0's."""
        rng_device = generator.device if generator is not None else x0.device
        t = torch.randint(0, self.num_train_timesteps, (x0.shape[0],), generator=generator, device=rng_device)
        eps = torch.randn(x0.shape, generator=generator, device=rng_device, dtype=x0.dtype)
        t, eps = t.to(x0.device), eps.to(x0.device)
        return self.ddpm.add_noise(x0, eps, t), t, eps

    def scheduler(self, sampler: str):
        """A fresh diffusers scheduler for `sampler` ("ddpm", "ddim" with eta = 0, or "dpm": DPM-Solver++)."""
        if sampler == "ddpm":
            from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

            return DDPMScheduler(**self._arguments(), clip_sample=False)
        if sampler == "ddim":
            from diffusers.schedulers.scheduling_ddim import DDIMScheduler

            return DDIMScheduler(**self._arguments(), clip_sample=False)
        if sampler == "dpm":
            from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler

            return DPMSolverMultistepScheduler(**self._arguments(), algorithm_type="dpmsolver++")
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")


def denoising_loss(schedule: NoiseSchedule, denoiser: nn.Module, x0: Tensor,
                   generator: torch.Generator | None = None) -> Tensor:
    """The simple DDPM loss (Ho et al. 2020, Eq. 14): MSE between eps and eps_theta(x_t, t), x0 [B, d] or
    [B, T, c]."""
    x_t, t, eps = schedule.noised(x0, generator)
    return F.mse_loss(denoiser(x_t, t), eps)


def guidance_loss(schedule: NoiseSchedule, denoiser: nn.Module, x0: Tensor, c: Tensor, p_uncond: float,
                  generator: torch.Generator | None = None) -> Tensor:
    """The DDPM loss of a conditioned denoiser, each condition c [B] dropped to the null condition (NaN) with
    probability p_uncond after t and eps are drawn: classifier-free guidance's joint training of the
    conditional and unconditional model."""
    x_t, t, eps = schedule.noised(x0, generator)
    rng_device = generator.device if generator is not None else x0.device
    dropped = torch.rand(x0.shape[0], generator=generator, device=rng_device).to(x0.device) < p_uncond
    return F.mse_loss(denoiser(x_t, t, torch.where(dropped, torch.nan, c)), eps)


def token_weighted_loss(schedule: NoiseSchedule, denoiser: nn.Module, x0: Tensor, weights: Tensor,
                        generator: torch.Generator | None = None) -> Tensor:
    """The DDPM loss on token latents x0 [B, T, c], each token's MSE weighted by weights [T] (summing to 1)."""
    x_t, t, eps = schedule.noised(x0, generator)
    return ((denoiser(x_t, t) - eps).pow(2).mean(dim=(0, 2)) * weights).sum()


def clean_prefix_loss(schedule: NoiseSchedule, denoiser: nn.Module, x0: Tensor, prefix: int,
                      generator: torch.Generator | None = None) -> Tensor:
    """The DDPM loss on token latents x0 [B, T, c] whose first `prefix` tokens stay as they are in x0 and out
    of the loss, so the denoiser learns the other tokens given them (p(rest | prefix)); `sample(prefix=...)` then
    draws the rest for a prefix drawn elsewhere (pdiff: the global latent, by a denoiser of its own)."""
    x_t, t, eps = schedule.noised(x0, generator)
    x_t = torch.cat([x0[:, :prefix], x_t[:, prefix:]], dim=1)
    return F.mse_loss(denoiser(x_t, t)[:, prefix:], eps[:, prefix:])


def guide(eps_cond: Tensor, eps_uncond: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, Eq. 6): (1 + w) eps_cond - w eps_uncond.

    w = 0 is the plain conditional model; w > 0 pushes the samples further towards the condition.
    """
    return (1 + guidance) * eps_cond - guidance * eps_uncond


def predict_noise(denoiser: nn.Module, x_t: Tensor, t: Tensor, c: float | None = None,
                  guidance: float = 0.0) -> Tensor:
    """The noise a sampler steps with: x_t [B, d], t [B] -> eps [B, d].

    c None: the denoiser as it is (unconditioned). Else the conditional prediction for condition c, guided by
    w = `guidance`; for w != 0 the conditional and the unconditional (NaN: null condition) predictions come
    from one batched pass over [x_t; x_t].
    """
    if c is None:
        return denoiser(x_t, t)
    cond = torch.full((len(x_t),), float(c), device=x_t.device)  # [B]
    if guidance == 0:
        return denoiser(x_t, t, cond)
    both = denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, torch.full_like(cond, torch.nan)]))
    eps_cond, eps_uncond = both.chunk(2)
    return guide(eps_cond, eps_uncond, guidance)


@torch.no_grad()
def sample(
    denoiser: nn.Module,
    schedule: NoiseSchedule,
    n: int,
    dim: int | tuple[int, ...],
    sampler: str = "ddpm",
    steps: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    c: float | None = None,
    guidance: float = 0.0,
    prefix: Tensor | None = None,
) -> Tensor:
    """Draw n latents [n, dim] (or [n, *dim], dim a shape such as (T, c)) by `steps` steps of `sampler`.

    steps defaults to num_train_timesteps for "ddpm" and to DEFAULT_STEPS otherwise. The same
    generator state gives the same samples. The denoiser runs in eval mode; its mode is restored.
    c (a conditioned denoiser): the condition of every sample, with classifier-free guidance w = `guidance`
    (see `predict_noise`); None samples the denoiser as it is.
    prefix [n, P, c] (token latents, a denoiser trained with `clean_prefix_loss`): the first P tokens of
    every sample, held fixed at every step while the others are drawn given them.
    """
    if steps is not None and not 1 <= steps <= schedule.num_train_timesteps:  # 0 must not mean "the default"
        raise ConfigError(f"steps={steps}: sample with 1..{schedule.num_train_timesteps} steps (the timesteps the "
                          "diffusion model was trained on), or None for the default")
    scheduler = schedule.scheduler(sampler)
    scheduler.set_timesteps(steps or DEFAULT_STEPS.get(sampler, schedule.num_train_timesteps))
    rng_device = generator.device if generator is not None else device
    shape = (n, *dim) if isinstance(dim, tuple) else (n, dim)
    x = torch.randn(shape, generator=generator, device=rng_device).to(device)  # x_T
    x = x * scheduler.init_noise_sigma
    fixed = 0 if prefix is None else prefix.shape[1]
    if prefix is not None:
        if prefix.ndim != 3 or prefix.shape[0] != n or prefix.shape[2:] != shape[2:] or fixed >= shape[1]:
            raise ValueError(f"prefix must be [n, P, c] = [{n}, P < {shape[1]}, {shape[-1]}] for latents "
                             f"{tuple(shape)}, got {tuple(prefix.shape)}")
        prefix = prefix.to(device)
    was_training = denoiser.training
    denoiser.eval()
    try:
        for t in tqdm(scheduler.timesteps, desc=f"sampling ({sampler})", disable=not progress):
            t_batch = torch.full((n,), int(t), dtype=torch.long, device=device)  # [n]
            if fixed:
                x = torch.cat([prefix, x[:, fixed:]], dim=1)
            eps = predict_noise(denoiser, scheduler.scale_model_input(x, t), t_batch, c, guidance)  # like x
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
    finally:
        denoiser.train(was_training)
    return x if not fixed else torch.cat([prefix, x[:, fixed:]], dim=1)
