import copy

import pytest
import torch
from torch import nn

from pdiff.alignment import PERMUTATION_GROUPS, align_runs, distance_across_runs, fold_batchnorm, permutation_groups
from pdiff.errors import ConfigError
from pdiff.params import ParamSpec
from pdiff.tasks.models import MODELS, build_model, input_problem

SHAPES = {"mlp": (1, 12), "convnet1d": (1, 12), "convnet3": (1, 16, 16), "cifar_resnet18": (3, 16, 16)}
KWARGS = {"mlp": {"hidden": [16, 8]}, "convnet1d": {"channels": [4, 6, 6]}, "convnet3": {"channels": [4, 6, 6]},
          "cifar_resnet18": {"width": 4}}


def random_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that a wrong permutation shows."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    return model.eval()


def outputs(model: nn.Module, state: dict, x: torch.Tensor) -> torch.Tensor:
    other = copy.deepcopy(model)
    other.load_state_dict(state)
    return other.eval()(x)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_permutation_and_a_fold_compute_the_same_and_matching_undoes_the_permutation(name: str) -> None:
    torch.manual_seed(0)
    model = random_statistics(build_model(name, SHAPES[name], 5, **KWARGS[name]))
    groups = permutation_groups(model)
    state = model.state_dict()
    assert {n for n, t in state.items() if t.dim()} <= set(groups.axes)  # every tensor with units is declared
    x = torch.randn(8, *SHAPES[name])
    expected = model(x)
    perms = {g: torch.randperm(n) for g, n in groups.sizes.items()}
    permuted = groups.permute(state, perms)
    assert any(not torch.equal(permuted[n], state[n]) for n in state)
    torch.testing.assert_close(outputs(model, permuted, x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs(model, fold_batchnorm(model, state), x), expected, rtol=1e-5, atol=1e-5)
    params = {n: p.detach() for n, p in model.named_parameters()}
    back = groups.match(params, groups.permute(params, perms))
    for n, p in groups.permute(groups.permute(params, perms), back).items():
        torch.testing.assert_close(p, params[n])


def test_every_built_in_model_has_groups_or_one_line_refusal() -> None:
    for name, factory in MODELS.items():
        if factory in PERMUTATION_GROUPS:
            continue
        if input_problem(name, {}, (3, 32, 32)) is not None:
            continue
        with pytest.raises(ConfigError, match="collect.align=none") as e:
            permutation_groups(build_model(name, (3, 32, 32), 10))
        assert "\n" not in str(e.value)


def two_runs(name: str, per_run: int = 3) -> tuple[nn.Module, ParamSpec, torch.Tensor, torch.Tensor]:
    """Checkpoints [2 * per_run, D] of two independently initialised networks, each a little noise about its own
    weights; run 1's units shuffled (what another seed is, up to the weights' values)."""
    torch.manual_seed(1)
    model = random_statistics(build_model(name, SHAPES[name], 5, **KWARGS[name]))
    model.load_state_dict(fold_batchnorm(model, model.state_dict()))  # as collect does: one base's buffers for all
    spec = ParamSpec.select(model, "all")
    groups = permutation_groups(model)
    reference = spec.flatten(model)
    perms = {g: torch.randperm(n) for g, n in groups.sizes.items()}
    shuffled = spec.flatten(groups.permute(spec.unflatten(reference + 0.3 * torch.randn_like(reference)), perms))
    params = torch.stack([base + 0.01 * torch.randn_like(base) for base in [reference] * per_run
                          + [shuffled] * per_run])
    return model, spec, params, torch.tensor([0] * per_run + [1] * per_run)


@pytest.mark.parametrize("name", ["mlp", "convnet1d"])
def test_aligned_runs_predict_the_same_and_lie_closer(name: str) -> None:
    model, spec, params, runs = two_runs(name)
    aligned = align_runs(permutation_groups(model), spec.unflatten, spec.flatten, params, runs)
    assert torch.equal(aligned[runs == 0], params[runs == 0])  # run 0 is the basis
    assert distance_across_runs(aligned, runs) < 0.6 * distance_across_runs(params, runs)
    x = torch.randn(16, *SHAPES[name])
    state = model.state_dict()
    for before, after in zip(params, aligned, strict=True):
        a, b = (outputs(model, spec.to_state_dict(p, state), x) for p in (before, after))
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert torch.equal(a.argmax(1), b.argmax(1))


def test_distance_across_runs_ignores_pairs_of_one_run() -> None:
    params = torch.tensor([[0.0, 0.0], [0.0, 10.0], [3.0, 4.0]])
    assert distance_across_runs(params, torch.tensor([0, 0, 1])) == pytest.approx((5 + (9 + 36) ** 0.5) / 2)
