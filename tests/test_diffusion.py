import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdiff.diffusion import (
    DDPM,
    DENOISERS,
    SAMPLERS,
    TOKEN_DENOISERS,
    MLPDenoiser,
    TransformerDenoiser,
    WindowAttention,
    build_denoiser,
    guide,
    predict_noise,
    timestep_embedding,
)
from pdiff.errors import ConfigError

SMALL = {"mlp": {"width": 32, "depth": 2, "time_dim": 16}, "conv1d": {"channels": (4, 8), "time_dim": 16},
         "transformer": {"width": 16, "depth": 2, "heads": 2, "window": 4, "time_dim": 16}}
FLAT = sorted(set(DENOISERS) - set(TOKEN_DENOISERS))  # denoisers of flat latents [B, d]


@pytest.fixture(scope="module")
def ddpm() -> DDPM:
    return DDPM()


def train(ddpm: DDPM, denoiser: nn.Module, data: Tensor, steps: int, batch: int = 128,
          conditions: Tensor | None = None, p_uncond: float = 0.0, clean_prefix: int | None = None) -> list[float]:
    """Fit `denoiser` to rows of `data` [N, d] with the DDPM loss; returns the loss of every step.

    With `conditions` [N] each row's condition goes with it (dropped with probability p_uncond); clean_prefix: see
    DDPM.loss.
    The learning rate decays linearly to 0: near t = T, eps must be predicted precisely, since DDIM
    divides its error by sqrt(alpha_bar_t) ~ 0.006 when it estimates x0.
    """
    gen = torch.Generator().manual_seed(0)
    extra = {} if clean_prefix is None else {"clean_prefix": clean_prefix}
    opt = torch.optim.AdamW(denoiser.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    losses = []
    for _ in range(steps):
        rows = torch.randint(0, len(data), (batch,), generator=gen)
        c = None if conditions is None else conditions[rows]
        loss = ddpm.loss(denoiser, data[rows], generator=gen, c=c, p_uncond=p_uncond, **extra)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def test_timestep_embedding() -> None:
    t = torch.tensor([0, 1, 500, 999])
    emb = timestep_embedding(t, 16)
    assert emb.shape == (4, 16)
    assert torch.equal(emb[0], torch.cat([torch.ones(8), torch.zeros(8)]))  # cos(0), sin(0)
    assert all(not torch.allclose(emb[i], emb[j]) for i in range(4) for j in range(i))
    assert timestep_embedding(t, 15).shape == (4, 15)


def test_timestep_embedding_is_per_sample() -> None:
    pair = timestep_embedding(torch.tensor([3, 700]), 32)
    assert torch.equal(pair[0], timestep_embedding(torch.tensor([3]), 32)[0])
    assert torch.equal(pair[1], timestep_embedding(torch.tensor([700]), 32)[0])


@pytest.mark.parametrize("arch", FLAT)
@pytest.mark.parametrize("dim", [5, 64, 131])
def test_denoiser_shapes(arch: str, dim: int) -> None:
    denoiser = build_denoiser(arch, dim, **SMALL[arch])
    assert denoiser(torch.randn(3, dim), torch.tensor([0, 10, 999])).shape == (3, dim)


@pytest.mark.parametrize("arch", FLAT)
def test_denoiser_uses_each_samples_timestep(arch: str) -> None:
    denoiser = build_denoiser(arch, 16, **SMALL[arch])
    x = torch.randn(1, 16).expand(2, 16)
    out = denoiser(x, torch.tensor([5, 900]))
    assert not torch.allclose(out[0], out[1])
    assert torch.allclose(out[1], denoiser(x[:1], torch.tensor([900]))[0], atol=1e-6)


def test_default_denoisers_and_registry() -> None:
    assert build_denoiser("mlp", 64)(torch.randn(2, 64), torch.tensor([1, 2])).shape == (2, 64)
    assert build_denoiser("conv1d", 64)(torch.randn(2, 64), torch.tensor([1, 2])).shape == (2, 64)
    with pytest.raises(ValueError, match="mlp"):
        build_denoiser("unet", 64)
    assert build_denoiser("transformer", 8, 20)(torch.randn(2, 20, 8), torch.tensor([1, 2])).shape == (2, 20, 8)
    with pytest.raises(ValueError, match="number of tokens"):
        build_denoiser("transformer", 8)


@pytest.mark.parametrize("tokens", [1, 4, 9, 13])
def test_transformer_shapes_and_per_sample_timestep(tokens: int) -> None:
    torch.manual_seed(0)
    denoiser = TransformerDenoiser(3, tokens, **SMALL["transformer"])  # window 4: 9 and 13 tokens are windowed
    x = torch.randn(1, tokens, 3).expand(2, -1, -1)
    out = denoiser(x, torch.tensor([5, 900]))
    assert out.shape == (2, tokens, 3)
    assert not torch.allclose(out[0], out[1])
    assert torch.allclose(out[1], denoiser(x[:1], torch.tensor([900]))[0], atol=1e-5)


def test_window_attention_stays_in_its_windows() -> None:
    """Unshifted, a token only sees its own window (of 4); shifted by 2, windows straddle the old edges,
    and padding (10 tokens in 3 windows) never changes the real tokens' outputs."""
    torch.manual_seed(0)
    x = torch.randn(1, 10, 8)
    x2 = x.clone()
    x2[:, 9] += 1.0  # a change in the last, padded window
    plain, shifted = WindowAttention(8, 2, window=4), WindowAttention(8, 2, window=4, shift=2)
    assert torch.allclose(plain(x)[:, :8], plain(x2)[:, :8]) and not torch.allclose(plain(x)[:, 8:], plain(x2)[:, 8:])
    # Shifted windows are tokens 2-5, 6-9 and 0-1 + the padding slots: token 9 reaches tokens 6-8 only.
    changed = (shifted(x) - shifted(x2)).abs().amax(-1)[0] > 1e-6
    assert changed.tolist() == [False] * 6 + [True] * 4


def test_window_attention_global_tokens_see_and_are_seen_by_every_window() -> None:
    """With a global prefix, a change in the global token reaches every token, a change in a window's token
    reaches its window and the global token only, and each token's output is attention over its window plus
    the global token (what full attention over those tokens alone gives)."""
    torch.manual_seed(0)
    attention = WindowAttention(8, 2, window=4)
    x = torch.randn(1, 1 + 10, 8)  # a global token, then 10 in 3 windows (the last padded)
    moved_global, moved_local = x.clone(), x.clone()
    moved_global[:, 0] += 1.0
    moved_local[:, 1] += 1.0  # the first window's first token
    out = attention(x, 1)

    def reached(moved: torch.Tensor) -> list[bool]:
        return ((attention(moved, 1) - out).abs().amax(-1)[0] > 1e-6).tolist()

    assert reached(moved_global) == [True] * 11
    assert reached(moved_local) == [True] * 5 + [False] * 6
    for window in (torch.arange(1, 5), torch.arange(9, 11)):
        seen = torch.cat([torch.tensor([0]), window])
        assert torch.allclose(out[:, window], attention(x[:, seen], 1)[:, 1:], atol=1e-6)  # short: full attention


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("num_global", [0, 1, 2])
def test_window_attention_is_dense_attention_under_its_mask(shift: int, num_global: int) -> None:
    """Windowed attention, shifted or not, with or without global tokens, equals dense attention where a token
    sees the global tokens and its own (rolled) window, and the global tokens see everything."""
    torch.manual_seed(0)
    attention, T, W = WindowAttention(8, 2, window=4, shift=shift), 10, 4
    x = torch.randn(2, num_global + T, 8)
    window = torch.cat([torch.full((num_global,), -1), (torch.arange(T) - shift) % 12 // W])  # 12: T padded
    sees = (window[:, None] == window[None, :]) | (window[None, :] == -1) | (window[:, None] == -1)
    q, k, v = attention.qkv(x).view(2, num_global + T, 3, 2, 4).permute(2, 0, 3, 1, 4)
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=sees)
    expected = attention.proj(dense.transpose(1, 2).reshape(2, num_global + T, 8))
    assert torch.allclose(attention(x, num_global), expected, atol=1e-5)


def test_schedule_matches_paper(ddpm: DDPM) -> None:
    assert len(ddpm.betas) == 1000
    assert ddpm.betas[0].item() == pytest.approx(1e-4)
    assert ddpm.betas[-1].item() == pytest.approx(2e-2)
    expected = torch.cumprod(1 - torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64), dim=0)
    assert ddpm.alphas_cumprod[-1].item() == pytest.approx(expected[-1].item(), rel=1e-4)
    assert ddpm.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


def test_loss_draws_a_timestep_per_sample(ddpm: DDPM) -> None:
    seen = []

    class Recorder(nn.Module):
        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            seen.append(t)
            return torch.zeros_like(x)

    loss = ddpm.loss(Recorder(), torch.randn(256, 8), generator=torch.Generator().manual_seed(0))
    assert seen[0].shape == (256,) and len(seen[0].unique()) > 128
    assert loss.item() == pytest.approx(1.0, abs=0.15)  # predicting zero noise: E[eps^2] = 1
    ddpm.loss(Recorder(), torch.randn(256, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(seen[0], seen[1])  # the generator makes the loss reproducible


def test_loss_decreases_on_toy_data(ddpm: DDPM) -> None:
    torch.manual_seed(0)
    centres = 3 * torch.randn(4, 8)
    data = (centres[:, None] + 0.05 * torch.randn(4, 64, 8)).reshape(-1, 8)  # [256, 8] near 4 centres
    losses = train(ddpm, MLPDenoiser(8, width=64, depth=2, time_dim=32), data, steps=300)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first


def test_token_weights_weigh_each_tokens_error(ddpm: DDPM) -> None:
    """token_weights [T]: the loss is the weighted sum of the tokens' MSEs; equal weights are the plain loss."""
    x0 = torch.randn(4, 3, 2)

    def loss(**kwargs) -> float:  # a denoiser predicting zeros: each token's MSE is that of its noise
        return ddpm.loss(lambda x_t, t: torch.zeros_like(x_t), x0, torch.Generator().manual_seed(0), **kwargs).item()

    plain = loss()
    assert loss(token_weights=torch.full((3,), 1 / 3)) == pytest.approx(plain, rel=1e-6)
    first, others = loss(token_weights=torch.tensor([1.0, 0, 0])), loss(token_weights=torch.tensor([0, 0.5, 0.5]))
    assert first != pytest.approx(others) and first + 2 * others == pytest.approx(3 * plain, rel=1e-5)


def test_clean_prefix_is_given_unnoised_and_left_out_of_the_loss(ddpm: DDPM) -> None:
    """clean_prefix P: the denoiser sees x0's first P tokens as they are, and what it predicts there is not
    scored (the loss is the MSE over the other tokens only)."""
    x0 = torch.randn(4, 3, 2)
    seen = []

    def denoiser(x_t: Tensor, t: Tensor) -> Tensor:  # predicts zeros, except nonsense on the prefix
        seen.append(x_t)
        return torch.cat([torch.full_like(x_t[:, :1], 1e6), torch.zeros_like(x_t[:, 1:])], dim=1)

    loss = ddpm.loss(denoiser, x0, torch.Generator().manual_seed(0), clean_prefix=1).item()
    assert torch.equal(seen[0][:, :1], x0[:, :1]) and not torch.allclose(seen[0][:, 1:], x0[:, 1:])
    plain = ddpm.loss(lambda x_t, t: torch.zeros_like(x_t), x0, torch.Generator().manual_seed(0),
                      token_weights=torch.tensor([0.0, 0.5, 0.5])).item()
    assert loss == pytest.approx(plain, rel=1e-5)  # the same draws: eps's MSE over tokens 1 and 2
    with pytest.raises(ValueError, match="clean_prefix"):
        ddpm.loss(denoiser, x0, clean_prefix=1, token_weights=torch.full((3,), 1 / 3))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sample_holds_the_prefix_at_every_step(ddpm: DDPM, sampler: str) -> None:
    prefix, seen = torch.randn(5, 1, 2), []

    class Recorder(nn.Module):
        def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
            seen.append(x_t[:, :1].clone())
            return torch.zeros_like(x_t)

    x = ddpm.sample(Recorder(), 5, (3, 2), sampler, steps=6, generator=torch.Generator().manual_seed(0),
                    prefix=prefix)
    assert len(seen) == 6 and all(torch.equal(s, prefix) for s in seen)
    assert torch.equal(x[:, :1], prefix) and x.shape == (5, 3, 2)
    with pytest.raises(ValueError, match=r"prefix must be \[n, P, c\]"):
        ddpm.sample(Recorder(), 4, (3, 2), sampler, steps=2, prefix=prefix)  # 5 prefixes for 4 samples


def test_a_transformer_trained_with_a_clean_prefix_draws_the_rest_given_it(ddpm: DDPM) -> None:
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
    train(ddpm, denoiser, data, steps=400, batch=64, clean_prefix=1)
    prefix = 0.3 * torch.stack([c, -c])[:, None].repeat_interleave(8, dim=0)  # [16, 1, 2]: 8 of +, then 8 of -
    x = ddpm.sample(denoiser, 16, (4, 2), "ddim", steps=20, generator=torch.Generator().manual_seed(1),
                    prefix=prefix)
    rest_sign = torch.sign((x[:, 1:] * c).sum(dim=(1, 2)))  # [16]: which model the other tokens came from
    assert rest_sign.tolist() == [1.0] * 8 + [-1.0] * 8


def test_transformer_loss_decreases_on_toy_token_data(ddpm: DDPM) -> None:
    torch.manual_seed(0)
    centres = 3 * torch.randn(4, 6, 2)  # 4 "models" of 6 tokens with 2 channels each
    data = (centres[:, None] + 0.05 * torch.randn(4, 64, 6, 2)).reshape(-1, 6, 2)  # [256, 6, 2]
    denoiser = TransformerDenoiser(2, 6, width=32, depth=2, heads=2, window=4, time_dim=32)
    losses = train(ddpm, denoiser, data, steps=300, batch=64)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first
    x = ddpm.sample(denoiser, 4, (6, 2), "ddim", steps=10, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 6, 2) and torch.isfinite(x).all()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sample_shape_and_reproducible(ddpm: DDPM, sampler: str) -> None:
    denoiser = MLPDenoiser(6, **SMALL["mlp"])
    samples = [
        ddpm.sample(denoiser, 5, 6, sampler, steps=10, generator=torch.Generator().manual_seed(s))
        for s in (1, 1, 2)
    ]
    assert samples[0].shape == (5, 6)
    assert torch.isfinite(samples[0]).all()
    assert torch.equal(samples[0], samples[1])
    assert not torch.allclose(samples[0], samples[2])


def test_sample_runs_in_eval_mode_and_restores_it(ddpm: DDPM) -> None:
    modes = []

    class Recorder(nn.Module):
        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            modes.append(self.training)
            return torch.zeros_like(x)

    denoiser = Recorder().train()
    ddpm.sample(denoiser, 2, 3, "ddim", steps=4)
    assert modes == [False] * 4 and denoiser.training
    ddpm.sample(denoiser.eval(), 2, 3, "ddim", steps=4)
    assert not denoiser.training


def test_unknown_sampler(ddpm: DDPM) -> None:
    with pytest.raises(ValueError, match="ddim"):
        ddpm.sample(MLPDenoiser(4, **SMALL["mlp"]), 2, 4, sampler="euler")


@pytest.fixture(scope="module")
def two_points(ddpm: DDPM) -> tuple[MLPDenoiser, Tensor]:
    """An MLPDenoiser trained on data that is only the two points c and -c in 8-D."""
    torch.manual_seed(0)
    c = torch.full((8,), 2.0)
    data = torch.stack([c, -c])  # [2, 8]
    denoiser = MLPDenoiser(8, width=64, depth=2, time_dim=32)
    train(ddpm, denoiser, data, steps=1000)
    return denoiser, data


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 50), ("dpm", 25), ("ddpm", 1000)])
def test_samples_land_near_the_training_points(
    ddpm: DDPM, two_points: tuple[MLPDenoiser, Tensor], sampler: str, steps: int
) -> None:
    denoiser, data = two_points
    x = ddpm.sample(denoiser, 100, 8, sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    nearest = torch.cdist(x, data).min(dim=1).values  # [100]
    assert nearest.mean() < 0.1 * data[0].norm()  # |c| ~ 5.7 is the distance of the data from the origin
    assert 20 < (x.mean(dim=1) > 0).sum() < 80  # both points are generated


# ---- conditioning (classifier-free guidance) ----------------------------------------------------------------------
@pytest.mark.parametrize("arch", FLAT)  # the transformer takes no condition (config refuses it)
def test_conditioned_denoiser_uses_its_condition(arch: str) -> None:
    torch.manual_seed(0)
    plain = build_denoiser(arch, 16, **SMALL[arch])
    torch.manual_seed(0)
    conditioned = build_denoiser(arch, 16, conditioned=True, **SMALL[arch])
    # The condition's layers come last: every other weight starts as in the unconditioned network.
    shared = conditioned.state_dict()
    assert all(torch.equal(v, shared[k]) for k, v in plain.state_dict().items())
    assert [k for k in shared if k not in plain.state_dict()] == [k for k in shared if k.startswith("condition.")]
    with torch.no_grad():
        for p in conditioned.condition.parameters():
            p.normal_()  # a trained-looking embedding: the untrained null is zero
        x, t = torch.randn(3, 16), torch.tensor([5, 5, 5])
        out = conditioned(x, t, torch.tensor([-1.0, 1.0, torch.nan]))
        assert not torch.allclose(out[0], out[1])  # the condition changes the prediction
        assert torch.allclose(out[2], conditioned(x[2:], t[2:])[0], atol=1e-6)  # NaN = no condition = None
    with pytest.raises(ValueError, match="conditioned=True"):
        plain(x, t, torch.zeros(3))


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


def test_p_uncond_one_reproduces_the_unconditional_loss(ddpm: DDPM) -> None:
    """Every condition dropped: the same loss and gradients as the unconditional model (c=None), for the same t
    and eps; the condition's MLP gets no gradient."""
    torch.manual_seed(0)
    denoiser = MLPDenoiser(8, **SMALL["mlp"], conditioned=True)
    x0, c = torch.randn(32, 8), torch.randn(32)
    for seed in range(3):
        losses, grads = [], []
        for kwargs in ({"c": c, "p_uncond": 1.0}, {}):
            denoiser.zero_grad()
            loss = ddpm.loss(denoiser, x0, generator=torch.Generator().manual_seed(seed), **kwargs)
            loss.backward()
            losses.append(loss.item())
            grads.append({k: p.grad.clone() for k, p in denoiser.named_parameters() if p.grad is not None})
        assert losses[0] == pytest.approx(losses[1], rel=1e-6)
        assert all(torch.allclose(g, grads[0][k], atol=1e-7) for k, g in grads[1].items())
        assert not grads[0]["condition.mlp.0.weight"].any()
    kept, plain = (ddpm.loss(denoiser, x0, generator=torch.Generator().manual_seed(0), **kwargs).item()
                   for kwargs in ({"c": c, "p_uncond": 0.0}, {}))
    assert kept != pytest.approx(plain)  # with the condition kept the loss differs


@pytest.fixture(scope="module")
def two_clusters(ddpm: DDPM) -> tuple[MLPDenoiser, Tensor]:
    """A conditioned MLPDenoiser trained on two labelled clusters: near c (label +1) and near -c (label -1)."""
    torch.manual_seed(0)
    c = torch.full((8,), 2.0)
    labels = torch.tensor([1.0, -1.0]).repeat_interleave(32)  # [64]
    data = labels[:, None] * c + 0.05 * torch.randn(64, 8)  # [64, 8]
    denoiser = MLPDenoiser(8, width=64, depth=2, time_dim=32, conditioned=True)
    train(ddpm, denoiser, data, steps=1500, conditions=labels, p_uncond=0.2)
    return denoiser, c


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 50), ("dpm", 25), ("ddpm", 1000)])
@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_conditioning_on_a_label_draws_from_its_cluster(
    ddpm: DDPM, two_clusters: tuple[MLPDenoiser, Tensor], sampler: str, steps: int, guidance: float
) -> None:
    denoiser, c = two_clusters
    for label in (1.0, -1.0):
        x = ddpm.sample(denoiser, 50, 8, sampler, steps=steps, generator=torch.Generator().manual_seed(0),
                        c=label, guidance=guidance)
        assert (x - label * c).norm(dim=1).median() < 0.05 * c.norm()  # near the cluster asked for
        assert (x.mean(dim=1) * label > 0).float().mean() >= 0.95  # (the deterministic samplers' rare outlier)
    x = ddpm.sample(denoiser, 100, 8, sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    assert 20 < (x.mean(dim=1) > 0).sum() < 80  # unconditioned, the same network draws both clusters


def test_transformer_on_its_whole_sequence_as_a_crop_is_unchanged() -> None:
    """token_ids = all positions in order is the plain forward; a crop takes the positions it is given."""
    torch.manual_seed(0)
    denoiser = TransformerDenoiser(3, 8, **SMALL["transformer"])  # window 4
    x, t = torch.randn(2, 8, 3), torch.tensor([5, 900])
    assert torch.allclose(denoiser(x, t, torch.arange(8)), denoiser(x, t), atol=1e-6)
    first, second = denoiser(x[:, :4], t, torch.arange(4)), denoiser(x[:, :4], t, torch.arange(4, 8))
    assert not torch.allclose(first, second, atol=1e-4)  # the same tokens at other positions


@pytest.mark.parametrize("steps", [0, -1, 1001])
def test_sampling_steps_outside_the_timesteps_are_refused(ddpm: DDPM, steps: int) -> None:
    """steps=0 once meant "the default" without a word; every value outside 1..T is now the CLI's error."""
    with pytest.raises(ConfigError, match=rf"steps={steps}: sample with 1..1000 steps"):
        ddpm.sample(MLPDenoiser(4, **SMALL["mlp"]), 2, 4, sampler="ddim", steps=steps)
