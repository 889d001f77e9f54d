import pytest
import torch
from torch import Tensor, nn

from pdiff.denoisers import MLPDenoiser, TransformerDenoiser
from pdiff.diffusion import (
    SAMPLERS,
    NoiseSchedule,
    clean_prefix_loss,
    denoising_loss,
    guidance_loss,
    guide,
    predict_noise,
    sample,
    token_weighted_loss,
)
from pdiff.errors import ConfigError

SMALL_MLP = {"width": 32, "depth": 2, "time_dim": 16}


def schedule_of() -> NoiseSchedule:
    return NoiseSchedule()


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return schedule_of()


def train(schedule: NoiseSchedule, denoiser: nn.Module, data: Tensor, steps: int, batch: int = 128,
          conditions: Tensor | None = None, p_uncond: float = 0.0, clean_prefix: int | None = None) -> list[float]:
    """Fit `denoiser` to rows of `data` [N, d] with the DDPM loss; returns the loss of every step.

    With `conditions` [N] each row's condition goes with it (dropped with probability p_uncond: guidance_loss);
    clean_prefix: see clean_prefix_loss.
    The learning rate decays linearly to 0: near t = T, eps must be predicted precisely, since DDIM
    divides its error by sqrt(alpha_bar_t) ~ 0.006 when it estimates x0.
    """
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    losses = []
    for _ in range(steps):
        rows = torch.randint(0, len(data), (batch,), generator=gen)
        if conditions is not None:
            loss = guidance_loss(schedule, denoiser, data[rows], conditions[rows], p_uncond, gen)
        elif clean_prefix is not None:
            loss = clean_prefix_loss(schedule, denoiser, data[rows], clean_prefix, gen)
        else:
            loss = denoising_loss(schedule, denoiser, data[rows], gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def test_schedule_matches_paper(schedule: NoiseSchedule) -> None:
    assert len(schedule.betas) == 1000
    assert schedule.betas[0].item() == pytest.approx(1e-4)
    assert schedule.betas[-1].item() == pytest.approx(2e-2)
    expected = torch.cumprod(1 - torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64), dim=0)
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(expected[-1].item(), rel=1e-4)
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


def test_loss_draws_a_timestep_per_sample(schedule: NoiseSchedule) -> None:
    seen = []

    class Recorder(nn.Module):
        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            seen.append(t)
            return torch.zeros_like(x)

    loss = denoising_loss(schedule, Recorder(), torch.randn(256, 8), torch.Generator().manual_seed(0))
    assert seen[0].shape == (256,) and len(seen[0].unique()) > 128
    assert loss.item() == pytest.approx(1.0, abs=0.15)  # predicting zero noise: E[eps^2] = 1
    denoising_loss(schedule, Recorder(), torch.randn(256, 8), torch.Generator().manual_seed(0))
    assert torch.equal(seen[0], seen[1])  # the generator makes the loss reproducible


def test_loss_decreases_on_toy_data(schedule: NoiseSchedule) -> None:
    torch.manual_seed(0)
    centres = 3 * torch.randn(4, 8)
    data = (centres[:, None] + 0.05 * torch.randn(4, 64, 8)).reshape(-1, 8)  # [256, 8] near 4 centres
    losses = train(schedule, MLPDenoiser(8, width=64, depth=2, time_dim=32), data, steps=300)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first


def test_token_weights_weigh_each_tokens_error(schedule: NoiseSchedule) -> None:
    """weights [T]: the loss is the weighted sum of the tokens' MSEs; equal weights are the plain loss."""
    x0 = torch.randn(4, 3, 2)

    def zeros(x_t: Tensor, t: Tensor) -> Tensor:  # a denoiser predicting zeros: each token's MSE is that of its noise
        return torch.zeros_like(x_t)

    def loss(weights: Tensor) -> float:
        return token_weighted_loss(schedule, zeros, x0, weights, torch.Generator().manual_seed(0)).item()

    plain = denoising_loss(schedule, zeros, x0, torch.Generator().manual_seed(0)).item()
    assert loss(torch.full((3,), 1 / 3)) == pytest.approx(plain, rel=1e-6)
    first, others = loss(torch.tensor([1.0, 0, 0])), loss(torch.tensor([0, 0.5, 0.5]))
    assert first != pytest.approx(others) and first + 2 * others == pytest.approx(3 * plain, rel=1e-5)


def test_clean_prefix_is_given_unnoised_and_left_out_of_the_loss(schedule: NoiseSchedule) -> None:
    """clean_prefix_loss with a prefix of P tokens: the denoiser sees x0's first P tokens as they are, and what it
    predicts there is not scored (the loss is the MSE over the other tokens only)."""
    x0 = torch.randn(4, 3, 2)
    seen = []

    def denoiser(x_t: Tensor, t: Tensor) -> Tensor:  # predicts zeros, except nonsense on the prefix
        seen.append(x_t)
        return torch.cat([torch.full_like(x_t[:, :1], 1e6), torch.zeros_like(x_t[:, 1:])], dim=1)

    loss = clean_prefix_loss(schedule, denoiser, x0, 1, torch.Generator().manual_seed(0)).item()
    assert torch.equal(seen[0][:, :1], x0[:, :1]) and not torch.allclose(seen[0][:, 1:], x0[:, 1:])
    plain = token_weighted_loss(schedule, lambda x_t, t: torch.zeros_like(x_t), x0, torch.tensor([0.0, 0.5, 0.5]),
                                torch.Generator().manual_seed(0)).item()
    assert loss == pytest.approx(plain, rel=1e-5)  # the same draws: eps's MSE over tokens 1 and 2


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sample_holds_the_prefix_at_every_step(schedule: NoiseSchedule, sampler: str) -> None:
    prefix, seen = torch.randn(5, 1, 2), []

    class Recorder(nn.Module):
        def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
            seen.append(x_t[:, :1].clone())
            return torch.zeros_like(x_t)

    x = sample(Recorder(), schedule, 5, (3, 2), sampler, steps=6, generator=torch.Generator().manual_seed(0),
                    prefix=prefix)
    assert len(seen) == 6 and all(torch.equal(s, prefix) for s in seen)
    assert torch.equal(x[:, :1], prefix) and x.shape == (5, 3, 2)
    with pytest.raises(ValueError, match=r"prefix must be \[n, P, c\]"):
        sample(Recorder(), schedule, 4, (3, 2), sampler, steps=2, prefix=prefix)  # 5 prefixes for 4 samples


def test_a_transformer_trained_with_a_clean_prefix_draws_the_rest_given_it(schedule: NoiseSchedule) -> None:
    """Toy models of 4 tokens whose every token is +c or -c together, the first (the prefix) scaled down to 0.3,
    as the global latent's small directions are: given the prefix +0.3c (or -0.3c), the rest is drawn from that
    model, not from the other one. Trained without clean_prefix (the prefix noised like the rest) and sampled
    with the prefix held, the same transformer draws the rest's sign by chance (8 to 10 of 16 right, 4 seeds),
    since the prefix is buried in noise while the rest's sign is decided."""
    torch.manual_seed(0)
    c = torch.tensor([1.5, -1.0])
    signs = torch.randint(0, 2, (256,)) * 2.0 - 1  # [256]
    data = signs[:, None, None] * c + 0.05 * torch.randn(256, 4, 2)  # [256, 4, 2]
    data[:, 0] *= 0.3
    denoiser = TransformerDenoiser(2, 4, width=32, depth=2, heads=2, window=4, time_dim=32, global_tokens=1)
    train(schedule, denoiser, data, steps=400, batch=64, clean_prefix=1)
    prefix = 0.3 * torch.stack([c, -c])[:, None].repeat_interleave(8, dim=0)  # [16, 1, 2]: 8 of +, then 8 of -
    x = sample(denoiser, schedule, 16, (4, 2), "ddim", steps=20, generator=torch.Generator().manual_seed(1),
                    prefix=prefix)
    rest_sign = torch.sign((x[:, 1:] * c).sum(dim=(1, 2)))  # [16]: which model the other tokens came from
    assert rest_sign.tolist() == [1.0] * 8 + [-1.0] * 8


def test_transformer_loss_decreases_on_toy_token_data(schedule: NoiseSchedule) -> None:
    torch.manual_seed(0)
    centres = 3 * torch.randn(4, 6, 2)  # 4 "models" of 6 tokens with 2 channels each
    data = (centres[:, None] + 0.05 * torch.randn(4, 64, 6, 2)).reshape(-1, 6, 2)  # [256, 6, 2]
    denoiser = TransformerDenoiser(2, 6, width=32, depth=2, heads=2, window=4, time_dim=32)
    losses = train(schedule, denoiser, data, steps=300, batch=64)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first
    x = sample(denoiser, schedule, 4, (6, 2), "ddim", steps=10, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 6, 2) and torch.isfinite(x).all()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sample_shape_and_reproducible(schedule: NoiseSchedule, sampler: str) -> None:
    denoiser = MLPDenoiser(6, **SMALL_MLP)
    samples = [
        sample(denoiser, schedule, 5, 6, sampler, steps=10, generator=torch.Generator().manual_seed(s))
        for s in (1, 1, 2)
    ]
    assert samples[0].shape == (5, 6)
    assert torch.isfinite(samples[0]).all()
    assert torch.equal(samples[0], samples[1])
    assert not torch.allclose(samples[0], samples[2])


def test_sample_runs_in_eval_mode_and_restores_it(schedule: NoiseSchedule) -> None:
    modes = []

    class Recorder(nn.Module):
        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            modes.append(self.training)
            return torch.zeros_like(x)

    denoiser = Recorder().train()
    sample(denoiser, schedule, 2, 3, "ddim", steps=4)
    assert modes == [False] * 4 and denoiser.training
    sample(denoiser.eval(), schedule, 2, 3, "ddim", steps=4)
    assert not denoiser.training


def test_unknown_sampler(schedule: NoiseSchedule) -> None:
    with pytest.raises(ValueError, match="ddim"):
        sample(MLPDenoiser(4, **SMALL_MLP), schedule, 2, 4, sampler="euler")


@pytest.fixture(scope="module")
def two_points(schedule: NoiseSchedule) -> tuple[MLPDenoiser, Tensor]:
    """An MLPDenoiser trained on data that is only the two points c and -c in 8-D."""
    torch.manual_seed(0)
    c = torch.full((8,), 2.0)
    data = torch.stack([c, -c])  # [2, 8]
    denoiser = MLPDenoiser(8, width=64, depth=2, time_dim=32)
    train(schedule, denoiser, data, steps=1000)
    return denoiser, data


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 50), ("dpm", 25), ("ddpm", 1000)])
def test_samples_land_near_the_training_points(
    schedule: NoiseSchedule, two_points: tuple[MLPDenoiser, Tensor], sampler: str, steps: int
) -> None:
    denoiser, data = two_points
    x = sample(denoiser, schedule, 100, 8, sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    nearest = torch.cdist(x, data).min(dim=1).values  # [100]
    assert nearest.mean() < 0.1 * data[0].norm()  # |c| ~ 5.7 is the distance of the data from the origin
    assert 20 < (x.mean(dim=1) > 0).sum() < 80  # both points are generated


# ---- conditioning (classifier-free guidance) ----------------------------------------------------------------------
def test_guidance_formula_on_known_eps() -> None:
    assert torch.equal(guide(torch.tensor([2.0]), torch.tensor([0.5]), 3.0), torch.tensor([6.5]))  # 4*2 - 3*0.5

    class Known(nn.Module):
        """eps = 1 given a condition, 3 without one (NaN)."""

        def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
            assert c is not None and len(c) == len(x)
            return torch.where(c.isnan()[:, None], 3.0, 1.0).expand_as(x)

    x, t = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    for w, expected in [(0.0, 1.0), (1.0, -1.0), (2.0, -3.0)]:  # (1 + w) * 1 - w * 3
        assert torch.equal(predict_noise(Known(), x, t, c=0.5, guidance=w), torch.full((4, 2), expected))


def loss_of(denoiser: nn.Module, x0: Tensor, c: Tensor, p_uncond: float | None, generator: torch.Generator
            ) -> Tensor:
    """guidance_loss with p_uncond, or (None) the unconditional loss."""
    if p_uncond is None:
        return denoising_loss(schedule_of(), denoiser, x0, generator)
    return guidance_loss(schedule_of(), denoiser, x0, c, p_uncond, generator)


def test_p_uncond_one_reproduces_the_unconditional_loss(schedule: NoiseSchedule) -> None:
    """Every condition dropped: the same loss and gradients as the unconditional model (c=None), for the same t
    and eps; the condition's MLP gets no gradient."""
    torch.manual_seed(0)
    denoiser = MLPDenoiser(8, **SMALL_MLP, conditioned=True)
    x0, c = torch.randn(32, 8), torch.randn(32)
    for seed in range(3):
        losses, grads = [], []
        for p_uncond in (1.0, None):
            denoiser.zero_grad()
            loss = loss_of(denoiser, x0, c, p_uncond, torch.Generator().manual_seed(seed))
            loss.backward()
            losses.append(loss.item())
            grads.append({k: p.grad.clone() for k, p in denoiser.named_parameters() if p.grad is not None})
        assert losses[0] == pytest.approx(losses[1], rel=1e-6)
        assert all(torch.allclose(g, grads[0][k], atol=1e-7) for k, g in grads[1].items())
        assert not grads[0]["condition.mlp.0.weight"].any()
    kept, plain = (loss_of(denoiser, x0, c, p_uncond, torch.Generator().manual_seed(0)).item()
                   for p_uncond in (0.0, None))
    assert kept != pytest.approx(plain)  # with the condition kept the loss differs


@pytest.fixture(scope="module")
def two_clusters(schedule: NoiseSchedule) -> tuple[MLPDenoiser, Tensor]:
    """A conditioned MLPDenoiser trained on two labelled clusters: near c (label +1) and near -c (label -1)."""
    torch.manual_seed(0)
    c = torch.full((8,), 2.0)
    labels = torch.tensor([1.0, -1.0]).repeat_interleave(32)  # [64]
    data = labels[:, None] * c + 0.05 * torch.randn(64, 8)  # [64, 8]
    denoiser = MLPDenoiser(8, width=64, depth=2, time_dim=32, conditioned=True)
    train(schedule, denoiser, data, steps=1500, conditions=labels, p_uncond=0.2)
    return denoiser, c


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 50), ("dpm", 25), ("ddpm", 1000)])
@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_conditioning_on_a_label_draws_from_its_cluster(
    schedule: NoiseSchedule, two_clusters: tuple[MLPDenoiser, Tensor], sampler: str, steps: int, guidance: float
) -> None:
    denoiser, c = two_clusters
    for label in (1.0, -1.0):
        x = sample(denoiser, schedule, 50, 8, sampler, steps=steps, generator=torch.Generator().manual_seed(0),
                        c=label, guidance=guidance)
        assert (x - label * c).norm(dim=1).median() < 0.05 * c.norm()  # near the cluster asked for
        assert (x.mean(dim=1) * label > 0).float().mean() >= 0.95  # (the deterministic samplers' rare outlier)
    x = sample(denoiser, schedule, 100, 8, sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    assert 20 < (x.mean(dim=1) > 0).sum() < 80  # unconditioned, the same network draws both clusters


@pytest.mark.parametrize("steps", [0, -1, 1001])
def test_sampling_steps_outside_the_timesteps_are_refused(schedule: NoiseSchedule, steps: int) -> None:
    """steps=0 once meant "the default" without a word; every value outside 1..T is now the CLI's error."""
    with pytest.raises(ConfigError, match=rf"steps={steps}: sample with 1..1000 steps"):
        sample(MLPDenoiser(4, **SMALL_MLP), schedule, 2, 4, sampler="ddim", steps=steps)
