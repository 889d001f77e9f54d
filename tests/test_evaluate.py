import pytest
import torch

from pdiff.evaluate import accuracy, predict, predict_many
from pdiff.params import ParamSpec
from pdiff.tasks.datasets import Split, TensorLoader
from pdiff.tasks.models import MLP, ConvNet1d


@pytest.mark.parametrize("model", [ConvNet1d((1, 40), 10), MLP((1, 40), 10, hidden=(32, 16))],
                         ids=["convnet1d", "mlp"])
def test_predict_many_matches_one_by_one(model) -> None:
    torch.manual_seed(0)
    model.eval()
    for module in model.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
    spec = ParamSpec.select(model, "last_norm:2")
    vectors = spec.flatten(model) + 0.5 * torch.randn(7, spec.dim)
    loader = TensorLoader(Split(torch.randn(90, 1, 40), torch.randint(0, 10, (90,))), batch_size=32)
    batched = predict_many(model, spec, vectors, loader, chunk=3)
    assert batched.shape == (7, 90)
    for i, vector in enumerate(vectors):
        spec.load_into(model, vector)
        assert torch.equal(batched[i], predict(model, loader))


def test_accuracy() -> None:
    labels = torch.tensor([0, 1, 2, 3])
    assert accuracy(torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0]]), labels).tolist() == [1.0, 0.25]
