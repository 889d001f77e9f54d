import pytest
import torch
import torch.nn.functional as F

from pdiff.autoencoder import AUTOENCODERS, ConvAutoencoder, MLPAutoencoder, TokenAutoencoder, build_autoencoder

SMALL = {"mlp": {"hidden": 32, "latent_dim": 8}, "conv1d": {"channels": (4, 8), "latent_dim": 8},
         "tokens": {"token_size": 4, "hidden": 16, "latent_dim": 8}}


@pytest.mark.parametrize("arch", sorted(AUTOENCODERS))
@pytest.mark.parametrize("dim", [5, 64, 131, 2048])
def test_shapes(arch: str, dim: int) -> None:
    ae = build_autoencoder(arch, dim, **SMALL[arch])
    x = torch.randn(3, dim)
    z = ae.encode(x)
    assert z.shape == (3, *ae.latent_shape) and ae.latent_shape[-1] == 8
    assert ae.decode(z).shape == (3, dim)
    assert ae(x).shape == (3, dim)
    ae.eval()
    assert ae(x).shape == (3, dim)


def test_default_sizes_and_registry() -> None:
    assert build_autoencoder("mlp", 10000).encode(torch.randn(2, 10000)).shape == (2, 64)
    conv = build_autoencoder("conv1d", 10000)
    assert isinstance(conv, ConvAutoencoder)
    assert conv.padded_dim == 10000
    assert build_autoencoder("conv1d", 130).padded_dim == 136  # next multiple of 2**3
    with pytest.raises(ValueError, match="conv1d"):
        build_autoencoder("transformer", 16)
    tokens = build_autoencoder("tokens", 10, numels=(3, 7), token_size=4)
    assert isinstance(tokens, TokenAutoencoder) and tokens.latent_shape == (3, 16)  # 1 + 2 tokens
    assert build_autoencoder("tokens", 10, token_size=4).latent_shape == (3, 16)  # one tensor: ceil(10 / 4)
    assert build_autoencoder("tokens", 10, token_size=4, global_dim=16).latent_shape == (4, 16)  # 1 global + 3
    assert build_autoencoder("tokens", 10, token_size=4, latent_dim=5, global_dim=16).latent_shape == (7, 5)


@pytest.mark.parametrize("arch", sorted(AUTOENCODERS))
def test_noise_only_in_training(arch: str) -> None:
    ae = build_autoencoder(arch, 40, **SMALL[arch])
    x = torch.randn(4, 40)
    ae.train()
    assert not torch.equal(ae(x), ae(x))
    ae.eval()
    assert torch.equal(ae(x), ae(x))
    assert torch.allclose(ae(x), ae.decode(ae.encode(x)))


def test_noise_is_additive_with_configured_scales() -> None:
    ae = MLPAutoencoder(16, input_noise=0.0, latent_noise=0.0)
    x = torch.randn(4, 16)
    assert torch.equal(ae.train()(x), ae.eval()(x))  # zero noise: training forward is the plain one


@pytest.mark.parametrize(
    ("arch", "kwargs", "steps", "bound"),
    [
        ("mlp", {}, 300, 0.01),
        ("conv1d", {"channels": (16, 32)}, 400, 0.05),
        ("tokens", {"numels": (20, 3, 41), "token_size": 8, "hidden": 64, "latent_dim": 8}, 400, 0.01),
    ],
)
def test_overfits_a_few_vectors(arch: str, kwargs: dict, steps: int, bound: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 64)
    ae = build_autoencoder(arch, 64, **kwargs)
    opt = torch.optim.AdamW(ae.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = F.mse_loss(ae(x), x)  # training mode: with noise augmentation
        opt.zero_grad()
        loss.backward()
        opt.step()
    ae.eval()
    with torch.no_grad():
        assert F.mse_loss(ae(x), x).item() < bound


def test_tokens_keep_the_padding_out_of_the_loss() -> None:
    """The loss on decode's [B, D] gives the padded slots of the decoded tokens no gradient at all."""
    torch.manual_seed(0)
    ae = TokenAutoencoder(14, numels=(5, 9), token_size=4, hidden=16, latent_dim=3, global_dim=0)  # 4 padded slots
    x = torch.randn(6, 14)
    tokens = ae.decode_tokens(ae.encode(x)).detach().requires_grad_()  # [6, T, 4]
    loss = F.mse_loss(ae.layout.join(tokens), x)
    loss.backward()
    pad = ~ae.layout.mask
    assert (tokens.grad[:, pad] == 0).all() and (tokens.grad[:, ~pad] != 0).all()
    moved = tokens.detach().clone()
    moved[:, pad] = 1e6  # whatever the padding holds, the loss is the same
    assert F.mse_loss(ae.layout.join(moved), x).item() == loss.item()
    # The encoder sees zeros there even with noise augmentation: the noise is added before the cut.
    seen = []
    ae.encoder_in.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    ae.train()(x)
    assert (seen[0][:, pad] == 0).all() and (seen[0][:, ~pad] != ae.layout.cut(x)[:, ~pad]).all()


def test_tokens_state_dict_holds_no_layout() -> None:
    """The layout is rebuilt from the spec, so the weights file holds only learned tensors."""
    ae = TokenAutoencoder(14, numels=(5, 9), token_size=4)
    keys = set(ae.state_dict())
    assert "token_bias" in keys and not {"tensor_index", "offset"} & keys
    assert ae.state_dict()["token_bias"].shape == (5, 4)


@pytest.mark.parametrize("global_dim", [0, 2])
def test_tokens_forward_on_a_crop_is_the_whole_forward_at_those_tokens(global_dim: int) -> None:
    """A crop (training on some tokens) codes each token of what the global latent leaves exactly as the whole
    vector does."""
    torch.manual_seed(0)
    ae = TokenAutoencoder(14, numels=(5, 9), token_size=4, hidden=16, latent_dim=3, global_dim=global_dim).eval()
    x = torch.randn(6, 14)
    ae.init_from(x)
    G = ae.global_tokens  # 0 or 1, then 2 + 3 tokens
    token_ids = torch.tensor([4, 0, 2])  # across both tensors, out of order
    whole = ae.decode_tokens(ae.encode(x)[:, G:])  # [6, 5, 4]
    rest = ae.layout.cut(ae.split_global(x)[1])  # [6, 5, 4]
    assert torch.allclose(ae(rest[:, token_ids], token_ids), whole[:, token_ids], atol=1e-5)


def test_tokens_start_from_the_mean_and_each_tokens_principal_directions() -> None:
    """After init_from the bias holds the training vectors' mean (zeros in the padding) and the untrained
    autoencoder is the per-token PCA: it decodes vectors that differ along latent_dim directions exactly, and
    reconstructs more vectors no worse than their best rank-latent_dim linear code."""
    torch.manual_seed(0)
    ae = TokenAutoencoder(14, numels=(5, 9), token_size=4, hidden=16, latent_dim=3, global_dim=0).eval()
    x = 3.0 + torch.randn(4, 14)  # 3 deviations from the mean: every token's span fits in 3 latents
    ae.init_from(x)
    assert torch.equal(ae.layout.join(ae.token_bias), x.mean(0)) and (ae.token_bias[~ae.layout.mask] == 0).all()
    with torch.no_grad():
        assert torch.allclose(ae.decode(ae.encode(x)), x, atol=1e-5)
        many = torch.randn(20, 14)
        ae.init_from(many)
        error = (ae.decode(ae.encode(many)) - many).pow(2).sum()
        tokens = ae.layout.cut(many - many.mean(0)).transpose(0, 1)  # [T, 20, 4]
        best = torch.linalg.svdvals(tokens)[:, 3:].pow(2).sum()  # what the top 3 directions of each token leave
    assert error.item() == pytest.approx(best.item(), rel=1e-4)


def test_tokens_global_latent_holds_the_main_directions_of_the_whole_vector() -> None:
    """With global_dim, init_from fits orthonormal global directions; vectors that differ along them are decoded
    exactly even where a token alone has too few latents, the global coordinates ride (centred, zero-padded) in
    the first tokens, and the tokens start from what is left."""
    torch.manual_seed(0)
    ae = TokenAutoencoder(14, numels=(5, 9), token_size=4, hidden=16, latent_dim=2, global_dim=3).eval()
    assert ae.global_tokens == 2 and ae.latent_shape == (2 + 5, 2)
    mean, directions = torch.randn(14), torch.linalg.qr(torch.randn(14, 3))[0].T  # 3 orthonormal rows
    x = mean + 4 * torch.randn(10, 3) @ directions  # every token varies along 3 > latent_dim directions
    with torch.no_grad():
        ae.init_from(x)
        basis = ae.global_basis
        assert torch.allclose(basis @ basis.T, torch.eye(3), atol=1e-5)
        assert torch.allclose(basis.T @ basis, directions.T @ directions, atol=1e-4)  # the same span
        z = ae.encode(x)  # [10, 7, 2]
        coords = z[:, :2].flatten(1)  # [10, 4]: 3 coordinates, then padding
        assert torch.allclose(coords[:, :3].mean(0), torch.zeros(3), atol=1e-4) and (coords[:, 3] == 0).all()
        assert torch.allclose(ae.decode(z), x, atol=1e-4)
        assert torch.allclose(ae.layout.join(ae.token_bias), x.mean(0), atol=1e-5)  # what is left: the mean
        without = TokenAutoencoder(14, numels=(5, 9), token_size=4, hidden=16, latent_dim=2, global_dim=0).eval()
        without.init_from(x)
        assert (without.decode(without.encode(x)) - x).abs().max() > 0.1  # 2 latents a token are not enough


def test_tokens_global_dim_past_the_checkpoints_leaves_zero_directions() -> None:
    """K checkpoints span at most K directions around their mean; the global basis keeps the rest at zero."""
    ae = TokenAutoencoder(14, numels=(5, 9), token_size=4, hidden=16, latent_dim=3, global_dim=6).eval()
    x = torch.randn(3, 14)
    ae.init_from(x)
    assert (ae.global_basis[3:] == 0).all() and torch.allclose(ae.decode(ae.encode(x)), x, atol=1e-5)
    with pytest.raises(ValueError, match="global_dim"):
        TokenAutoencoder(14, global_dim=-1)


def test_tokens_global_split_stays_in_float32_under_autocast() -> None:
    """Under bf16 autocast (the GPU default) the fixed global projection still runs in float32: its rounding
    would outweigh the small rest that the tokens code."""
    torch.manual_seed(0)
    ae = TokenAutoencoder(600, numels=(200, 400), token_size=64, hidden=16, latent_dim=4, global_dim=4).eval()
    x = torch.randn(600) + 100 * torch.randn(20, 4) @ torch.randn(4, 600)
    ae.init_from(x)
    coords, rest = ae.split_global(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coords_autocast, rest_autocast = ae.split_global(x)
        decoded = ae.decode(ae.encode(x))
    assert coords_autocast.dtype == torch.float32 and torch.equal(coords_autocast, coords)
    assert torch.equal(rest_autocast, rest)
    assert (decoded.float() - x).abs().max() < 1.0  # the global part (spread ~2000) exact; bf16 tokens only


@pytest.mark.parametrize("kernel_size", [3, 4, 7])
@pytest.mark.parametrize("norm", ["group", "batch"])
def test_conv_layers_keep_the_length(kernel_size: int, norm: str) -> None:
    """The official code's layers (kernel 7, BatchNorm) fit the same blocks: every length halves and doubles."""
    ae = ConvAutoencoder(131, 8, (4, 8, 16), kernel_size=kernel_size, norm=norm)
    assert ae.decode(ae.encode(torch.randn(3, 131))).shape == (3, 131)


def test_batch_norm_decodes_with_the_batchs_statistics() -> None:
    """norm="batch" decodes as the official code does, in train mode: a vector's output depends on its batch,
    in eval mode too; "group" gives each vector the same output alone or in a batch."""
    torch.manual_seed(0)
    z = torch.randn(4, 8)
    for norm, alone_equals_in_batch in (("group", True), ("batch", False)):
        ae = ConvAutoencoder(64, 8, (4, 8), norm=norm).eval()
        assert torch.allclose(ae.decode(z[:2])[0], ae.decode(z)[0], atol=1e-6) == alone_equals_in_batch


def test_default_conv_layers_are_unchanged() -> None:
    """A generator saved before kernel_size and norm existed loads: the default blocks have the same tensors."""
    names = {name: tuple(t.shape) for name, t in ConvAutoencoder(64, 8, (4, 8)).state_dict().items()}
    assert names["encoder.0.0.weight"] == (4, 1, 4) and names["decoder.1.weight"] == (4, 1, 4)
    assert not any("running" in name for name in names)


@pytest.mark.parametrize(("kwargs", "message"), [({"norm": "layer"}, "norm 'layer': choose one of group, batch"),
                                                 ({"kernel_size": 1}, "kernel_size 1: give a whole number")])
def test_bad_conv_layers_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConvAutoencoder(64, 8, (4, 8), **kwargs)
