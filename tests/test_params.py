import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from pdiff.params import Normalizer, ParamSpec, SelectionError, TokenLayout, last_norm_layers
from pdiff.tasks.models import MLP


def test_select_resnet_bn_layers_round_trip() -> None:
    model = resnet18(num_classes=10)
    spec = ParamSpec.select(model, "layer4.1.bn*")
    assert spec.names == ("layer4.1.bn1.weight", "layer4.1.bn1.bias", "layer4.1.bn2.weight", "layer4.1.bn2.bias")
    assert spec.dim == 2048  # the paper's default subset of ResNet-18
    vector = spec.flatten(model)
    assert vector.shape == (2048,)
    tensors = spec.unflatten(vector)
    for name, param in model.named_parameters():
        if name in tensors:
            assert torch.equal(tensors[name], param.detach())


def test_last_norm_layers_equals_patterns() -> None:
    model = resnet18(num_classes=10)
    assert last_norm_layers(model, 2) == ParamSpec.select(model, ["layer4.1.bn1", "layer4.1.bn2"])
    assert ParamSpec.select(model, "last_norm:2") == last_norm_layers(model, 2)


def test_mlp_load_vector_changes_only_subset() -> None:
    model = MLP((1, 40), 10, hidden=(16, 8))
    spec = ParamSpec.select(model, "last_norm:1")
    assert spec.names == ("net.5.weight", "net.5.bias")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    vector = torch.arange(spec.dim, dtype=torch.float32)
    spec.load_into(model, vector)
    assert torch.equal(spec.flatten(model), vector)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) or name in spec.names


def test_to_state_dict_loads_into_fresh_model() -> None:
    model = MLP((1, 40), 10, hidden=(16, 8))
    spec = ParamSpec.select(model, ["net.1.*", "net.4.weight"])
    vector = torch.randn(spec.dim)
    full = spec.to_state_dict(vector, model.state_dict())
    fresh = MLP((1, 40), 10, hidden=(16, 8))
    fresh.load_state_dict(full)
    assert torch.equal(spec.flatten(fresh), vector)
    fresh.load_state_dict(spec.to_state_dict(vector * 2), strict=False)
    assert torch.equal(spec.flatten(fresh), vector * 2)


def test_batch_unflatten_shapes() -> None:
    spec = ParamSpec(("a", "b"), ((2, 3), (4,)))
    out = spec.unflatten(torch.zeros(5, 10))
    assert out["a"].shape == (5, 2, 3) and out["b"].shape == (5, 4)


def test_pattern_matching_nothing_is_clear() -> None:
    with pytest.raises(SelectionError, match=r"matches no parameter.*layer4\.1\.bn1\.weight"):
        ParamSpec.select(resnet18(), "layer4.1.bn9*")


def test_pattern_matching_a_buffer_says_so() -> None:
    with pytest.raises(SelectionError, match="buffer"):
        ParamSpec.select(resnet18(), "layer4.1.bn1.running_mean")


def test_too_many_norm_layers() -> None:
    with pytest.raises(SelectionError, match="has 2 with parameters"):
        last_norm_layers(MLP((1, 40), 10, hidden=(16, 8)), 3)


def test_check_rejects_another_model() -> None:
    spec = ParamSpec.select(MLP((1, 40), 10, hidden=(16, 8)), "last_norm:2")
    spec.check(MLP((1, 40), 10, hidden=(16, 8)))
    with pytest.raises(SelectionError, match="shape"):
        spec.check(MLP((1, 40), 10, hidden=(32, 8)))
    with pytest.raises(SelectionError, match="no parameter"):
        spec.check(nn.Linear(3, 3))


def test_spec_dict_round_trip() -> None:
    spec = ParamSpec.select(resnet18(), "fc.*")
    assert ParamSpec.from_dict(spec.to_dict()) == spec


def test_normalizer_is_per_tensor_and_round_trips() -> None:
    spec = ParamSpec(("w", "b"), ((3,), (2,)))
    params = torch.cat([torch.randn(50, 3) * 5 + 10, torch.randn(50, 2) * 0.01 - 1], dim=1)
    norm = Normalizer.fit(params, spec)
    z = norm.normalize(params)
    assert torch.allclose(z[:, :3].mean(), torch.tensor(0.0), atol=1e-5)
    assert torch.allclose(z[:, :3].std(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(z[:, 3:].std(), torch.tensor(1.0), atol=1e-4)
    assert torch.allclose(norm.denormalize(z), params, atol=1e-5)
    again = Normalizer.from_state_dict(norm.state_dict())
    assert torch.equal(again.mean, norm.mean) and torch.equal(again.std, norm.std)


def test_deviation_normalizer_leaves_how_checkpoints_differ_at_unit_scale() -> None:
    """fit_deviations: each number's mean over the checkpoints, each tensor's rms deviation from it; a number that
    never changes maps to 0, and a tensor that never changes stays finite."""
    spec = ParamSpec(("w", "b", "frozen"), ((3,), (2,), (2,)))
    base = torch.tensor([10.0, -4.0, 0.5, -1.0, 2.0, 3.0, 3.0])
    g = torch.Generator().manual_seed(0)  # float32 rounding of a mean near 10 is ~1e-4: draws of one seed
    steps = torch.cat([torch.randn(50, 3, generator=g) * 0.01, torch.randn(50, 2, generator=g) * 0.3,
                       torch.zeros(50, 2)], dim=1)
    params = base + steps
    norm = Normalizer.fit_deviations(params, spec)
    z = norm.normalize(params)
    assert torch.allclose(norm.mean, params.mean(0)) and torch.allclose(z.mean(0), torch.zeros(7), atol=1e-4)
    assert torch.allclose(z[:, :3].pow(2).mean(), torch.tensor(1.0), atol=1e-4)
    assert torch.allclose(z[:, 3:5].pow(2).mean(), torch.tensor(1.0), atol=1e-4)
    assert torch.isfinite(z).all() and (z[:, 5:] == 0).all()
    assert torch.allclose(norm.denormalize(z), params, atol=1e-5)
    # In fit's units the same checkpoints differ by a small fraction of each tensor's spread.
    assert Normalizer.fit(params, spec).normalize(params)[:, :3].var(0).mean() < 1e-3


def test_normalizer_constant_tensor_stays_finite() -> None:
    spec = ParamSpec(("w",), ((4,),))
    params = torch.ones(10, 4)
    norm = Normalizer.fit(params, spec)
    assert torch.isfinite(norm.normalize(params)).all()
    assert torch.allclose(norm.denormalize(norm.normalize(params)), params)


@pytest.mark.parametrize("size", [1, 4, 7, 50])
def test_token_cut_and_join_round_trip_across_tensor_boundaries(size: int) -> None:
    numels = (10, 3, 25, 1)
    layout = TokenLayout(numels, size)
    assert layout.num_tokens == sum(-(-n // size) for n in numels)
    x = torch.randn(2, 5, sum(numels))
    tokens = layout.cut(x)  # [2, 5, T, size]
    assert tokens.shape == (2, 5, layout.num_tokens, size)
    assert torch.equal(layout.join(tokens), x)
    assert (tokens[..., ~layout.mask] == 0).all()  # the padding is zeros
    # No token holds numbers of two tensors: each token's numbers come from its own tensor.
    owner = layout.cut(torch.repeat_interleave(torch.arange(len(numels)), torch.tensor(numels)).float() + 1)
    for t in range(layout.num_tokens):
        real = owner[t][layout.mask[t]]
        assert torch.equal(real, torch.full_like(real, layout.tensor_index[t].item() + 1))
    assert layout.offset.tolist() == [i for n in numels for i in range(-(-n // size))]


def test_token_join_never_reads_the_padding() -> None:
    layout = TokenLayout((5, 9), 4)  # 2 + 3 tokens, 1 + 3 padded slots
    x = torch.randn(3, 14)
    tokens = layout.cut(x)
    tokens[:, ~layout.mask] = float("nan")  # whatever a decoder puts in the padding
    assert torch.equal(layout.join(tokens), x)
    assert layout.mask.sum().item() == 14


def test_tied_weights_get_the_generated_value_under_every_name() -> None:
    """An embedding shared with the output layer is one tensor under two names in the state_dict; load_state_dict
    copies both, so a merge that set one name alone would lose the generated value to the other."""
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight
    spec = ParamSpec.select(model, "0.weight")
    assert spec.names == ("0.weight",)  # named_parameters lists a tied tensor once
    merged = spec.to_state_dict(torch.arange(20.0), model.state_dict())
    assert torch.equal(merged["0.weight"], merged["1.weight"])
    model.load_state_dict(merged)
    assert torch.equal(model[1].weight.detach().flatten(), torch.arange(20.0))


def test_merging_into_a_base_of_other_shapes_is_refused() -> None:
    small, wide = MLP((1, 8), 4, hidden=(16,)), MLP((1, 8), 4, hidden=(32,))
    spec = ParamSpec.select(small, "net.2.*")
    with pytest.raises(SelectionError, match=r"'net.2.weight' is \(16,\) but the base state_dict has it as \(32,\)"):
        spec.to_state_dict(torch.zeros(spec.dim), wide.state_dict())
    with pytest.raises(SelectionError, match="the base state_dict lacks it"):
        spec.to_state_dict(torch.zeros(spec.dim), {})


def test_last_norm_of_a_model_without_norm_layers_names_the_way_out() -> None:
    with pytest.raises(SelectionError, match="MLP has none with parameters: select parameters by name"):
        ParamSpec.select(MLP((1, 8), 4, hidden=()), "last_norm:1")
