import pytest
import torch

from pdiff.baselines import (
    fine_tuned,
    gaussian_fit,
    interpolation,
    mean_of_k,
    noise_added,
    pick_checkpoints,
    weight_average,
)
from pdiff.params import Normalizer, ParamSpec
from pdiff.tasks.datasets import Split, TensorLoader
from pdiff.tasks.models import ConvNet1d


def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_pick_checkpoints_uses_each_once_before_repeating() -> None:
    picked = pick_checkpoints(4, 10, rng())
    assert sorted(picked[:4].tolist()) == sorted(picked[4:8].tolist()) == [0, 1, 2, 3]


def test_noise_is_in_standardised_units() -> None:
    spec = ParamSpec(("a", "b"), ((3,), (2,)))
    params = torch.cat([torch.randn(50, 3, generator=rng()), 100 * torch.randn(50, 2, generator=rng())], 1)
    normalizer = Normalizer.fit(params, spec)
    noisy = noise_added(params, normalizer, 0.1, 2000, rng())
    z = normalizer.normalize(noisy) - normalizer.normalize(params)[pick_checkpoints(50, 2000, rng())]
    assert noisy.shape == (2000, 5)
    assert z.std(0) == pytest.approx(torch.full((5,), 0.1), rel=0.1)  # the same in both tensors


def test_mean_of_k_hand_computed() -> None:
    params = torch.tensor([[0.0, 0.0], [2.0, 4.0], [4.0, 8.0]])
    assert torch.equal(mean_of_k(params, 3, 2, rng()), weight_average(params).expand(2, 2))
    pairs = mean_of_k(params, 2, 50, rng())
    assert {tuple(p.tolist()) for p in pairs} <= {(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)}  # two distinct checkpoints
    with pytest.raises(ValueError, match="k=4"):
        mean_of_k(params, 4, 1, rng())


def test_gaussian_fit_matches_moments() -> None:
    params = torch.randn(100, 3, generator=rng()) * torch.tensor([1.0, 2.0, 0.1]) + torch.tensor([5.0, 0.0, -1.0])
    samples = gaussian_fit(params, 5000, rng())
    assert torch.allclose(samples.mean(0), params.mean(0), atol=0.1)
    assert torch.allclose(samples.std(0), params.std(0), rtol=0.1)


def test_fine_tuned_trains_only_a_copy_of_the_subset() -> None:
    torch.manual_seed(0)
    model = ConvNet1d((1, 40), 10).eval()
    spec = ParamSpec.select(model, "last_norm:2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = spec.flatten(model) + 0.1 * torch.randn(3, spec.dim)
    loader = TensorLoader(Split(torch.randn(64, 1, 40), torch.randint(0, 10, (64,))), batch_size=16)
    unchanged = fine_tuned(model, spec, params, loader, steps=0, lr=0.01, n=3, generator=rng())
    assert sorted(unchanged.tolist()) == sorted(params.tolist())  # zero steps: the checkpoints themselves
    tuned = fine_tuned(model, spec, params, loader, steps=3, lr=0.01, n=5, generator=rng(), optimizer="sgd")
    assert tuned.shape == (5, spec.dim) and not torch.equal(tuned[:3], unchanged)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is left untouched


def test_interpolation_is_a_convex_combination_of_neighbouring_checkpoints() -> None:
    params = torch.randn(6, 5, generator=rng()).cumsum(0)  # a trajectory, rows in collection order
    drawn = interpolation(params, 300, rng())
    assert drawn.shape == (300, 5)
    for vector in drawn:
        step = params[1:] - params[:-1]  # [K - 1, D]: each neighbour pair's segment
        t = ((vector - params[:-1]) * step).sum(1) / step.pow(2).sum(1)  # [K - 1] projection onto each segment
        on_segment = (params[:-1] + t[:, None] * step - vector).norm(dim=1) < 1e-5
        assert (on_segment & (t >= -1e-6) & (t <= 1 + 1e-6)).any()
    pairs = {int(((drawn[i] - params[:-1]).norm(dim=1) + (drawn[i] - params[1:]).norm(dim=1)
                  - (params[1:] - params[:-1]).norm(dim=1)).argmin()) for i in range(300)}
    assert pairs == set(range(5))  # every neighbour pair is drawn, no other
    assert torch.equal(interpolation(params[:1], 3, rng()), params[:1].expand(3, 5))  # one checkpoint: itself


def test_interpolation_never_joins_two_runs() -> None:
    params = torch.arange(8.0).repeat_interleave(2).view(8, 2)  # row i is (i, i)
    runs = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])  # rows 3 and 4 end one run and start the next
    drawn = interpolation(params, 400, rng(), runs)[:, 0]
    assert not ((drawn > 3) & (drawn < 4)).any()  # nothing between the two runs
    assert ((drawn > 0) & (drawn < 3)).any() and ((drawn > 4) & (drawn < 7)).any()  # along each run
    alone = interpolation(params[:2], 20, rng(), torch.tensor([0, 1]))  # one checkpoint per run
    assert torch.isin(alone[:, 0], torch.tensor([0.0, 1.0])).all()  # each drawn model is a checkpoint itself
