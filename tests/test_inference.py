import logging

import pytest
import torch
import torchvision
from torch import nn

from pdiff import inference
from pdiff.inference import accuracy, predict, predict_many, split_model
from pdiff.params import ParamSpec
from pdiff.tasks.datasets import Split, TensorLoader
from pdiff.tasks.models import MLP, ConvNet1d, ConvNet3


class DataDependent(nn.Module):
    """Branches on a parameter's value: torch.fx cannot trace it and vmap cannot batch it."""

    def __init__(self):
        super().__init__()
        self.linear, self.norm, self.head = nn.Linear(40, 16), nn.BatchNorm1d(16), nn.Linear(16, 10)

    def forward(self, x):
        h = self.norm(self.linear(x.flatten(1)))
        return self.head(h.relu() if self.norm.weight.sum() > 0 else h)


def randomise_norms(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics, so a wrong split would change predictions."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
    return model.eval()


CASES = {  # name -> (model factory, selection, input shape)
    "convnet1d": (lambda: ConvNet1d((1, 40), 10), "last_norm:2", (1, 40)),
    "mlp": (lambda: MLP((1, 40), 10, hidden=(32, 16)), "last_norm:2", (1, 40)),
    "convnet3": (lambda: ConvNet3((1, 16, 16), 10, channels=(8, 16, 16)), "last_norm:2", (1, 16, 16)),
    "resnet18-skip": (lambda: torchvision.models.resnet18(num_classes=10), "layer4.1.bn*", (3, 16, 16)),
    "untraceable": (DataDependent, "norm.*", (1, 40)),
}


@pytest.mark.parametrize("budget", [0, 2**30], ids=["loop", "vmap"])
@pytest.mark.parametrize("case", list(CASES))
def test_predict_many_matches_one_by_one(case, budget) -> None:
    factory, selection, shape = CASES[case]
    torch.manual_seed(0)
    model = randomise_norms(factory())
    spec = ParamSpec.select(model, selection)
    vectors = spec.flatten(model) + 0.5 * torch.randn(7, spec.dim)
    loader = TensorLoader(Split(torch.randn(50, *shape), torch.randint(0, 10, (50,))), batch_size=16)
    batched = predict_many(model, spec, vectors, loader, chunk=3, memory_budget=budget)
    assert batched.shape == (7, 50)
    for i, vector in enumerate(vectors):
        spec.load_into(model, vector)
        assert torch.equal(batched[i], predict(model, loader))


@pytest.mark.parametrize("case", ["convnet3", "resnet18-skip", "mlp"])
def test_split_computes_the_model_and_keeps_generated_parameters_out_of_the_prefix(case) -> None:
    factory, selection, shape = CASES[case]
    torch.manual_seed(0)
    model = randomise_norms(factory())
    spec = ParamSpec.select(model, selection)
    prefix, suffix, _ = split_model(model, spec)
    assert not set(spec.names) & {name for name, _ in prefix.named_parameters()}
    assert set(spec.names) <= {name for name, _ in suffix.named_parameters()}
    x = torch.randn(4, *shape)
    with torch.no_grad():
        assert torch.allclose(suffix(*prefix(x)), model(x), atol=1e-6)


def test_skip_connection_passes_the_residual_input() -> None:
    model = torchvision.models.resnet18(num_classes=10).eval()
    prefix, _, _ = split_model(model, ParamSpec.select(model, "layer4.1.bn*"))
    with torch.no_grad():
        frontier = prefix(torch.randn(2, 3, 32, 32))
    assert len(frontier) == 2  # layer4.1's conv1 output and its skip input


def test_untraceable_model_falls_back_and_says_so_once(caplog, monkeypatch) -> None:
    monkeypatch.setattr(inference, "_logged", set())
    model = DataDependent().eval()
    spec = ParamSpec.select(model, "norm.*")
    loader = TensorLoader(Split(torch.randn(8, 1, 40), torch.zeros(8, dtype=torch.long)), batch_size=4)
    with caplog.at_level(logging.WARNING, logger="pdiff.inference"):
        for _ in range(2):
            predict_many(model, spec, spec.flatten(model).repeat(3, 1), loader, memory_budget=2**30)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot be traced" in m for m in messages) == 1
    assert sum("one by one" in m for m in messages) == 1


def test_accuracy() -> None:
    labels = torch.tensor([0, 1, 2, 3])
    assert accuracy(torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0]]), labels).tolist() == [1.0, 0.25]


class InPlaceAfterCut(nn.Module):
    """Writes into a prefix activation after the first generated layer: the split must copy it per chunk."""

    def __init__(self):
        super().__init__()
        self.linear, self.norm, self.head = nn.Linear(40, 16), nn.BatchNorm1d(16), nn.Linear(32, 10)

    def forward(self, x):
        h = self.linear(x.flatten(1))
        g = self.norm(h)
        h.add_(1.0)
        return self.head(torch.cat([g, h], dim=1))


def test_in_place_write_after_the_cut_is_detected_and_predictions_stay_exact() -> None:
    torch.manual_seed(0)
    model = randomise_norms(InPlaceAfterCut())
    spec = ParamSpec.select(model, "norm.*")
    assert split_model(model, spec).overwrites_input
    assert not split_model(model, ParamSpec.select(model, "head.*")).overwrites_input
    vectors = spec.flatten(model) + 0.5 * torch.randn(5, spec.dim)
    loader = TensorLoader(Split(torch.randn(20, 1, 40), torch.zeros(20, dtype=torch.long)), batch_size=10)
    batched = predict_many(model, spec, vectors, loader, chunk=2, memory_budget=2**30)
    for i, vector in enumerate(vectors):
        spec.load_into(model, vector)
        assert torch.equal(batched[i], predict(model, loader))
