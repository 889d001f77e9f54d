import pytest
import torch
import torch.nn.functional as F

from pdiff.denoisers import (
    DENOISERS,
    TOKEN_DENOISERS,
    TransformerDenoiser,
    WindowAttention,
    build_denoiser,
    timestep_embedding,
)

SMALL = {"mlp": {"width": 32, "depth": 2, "time_dim": 16}, "conv1d": {"channels": (4, 8), "time_dim": 16},
         "transformer": {"width": 16, "depth": 2, "heads": 2, "window": 4, "time_dim": 16}}
FLAT = sorted(set(DENOISERS) - set(TOKEN_DENOISERS))  # denoisers of flat latents [B, d]


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


def test_transformer_on_its_whole_sequence_as_a_crop_is_unchanged() -> None:
    """token_ids = all positions in order is the plain forward; a crop takes the positions it is given."""
    torch.manual_seed(0)
    denoiser = TransformerDenoiser(3, 8, **SMALL["transformer"])  # window 4
    x, t = torch.randn(2, 8, 3), torch.tensor([5, 900])
    assert torch.allclose(denoiser(x, t, torch.arange(8)), denoiser(x, t), atol=1e-6)
    first, second = denoiser(x[:, :4], t, torch.arange(4)), denoiser(x[:, :4], t, torch.arange(4, 8))
    assert not torch.allclose(first, second, atol=1e-4)  # the same tokens at other positions
