"""A model and a dataset of your own by import path ("package.module:factory"), timm names, and their errors."""

import textwrap
import uuid

import pytest
import torch
from typer.testing import CliRunner

from pdiff.cli import app
from pdiff.errors import ConfigError, DatasetError
from pdiff.pipeline import stage_hash
from pdiff.presets import load_config
from pdiff.task import Task
from pdiff.tasks.models import build_model

runner = CliRunner(env={"COLUMNS": "200"})
OWN = '''
import torch
from torch import nn


def data():
    """A two-class toy problem: is the sum of 8 numbers positive."""
    x = torch.randn(400, 8, generator=torch.Generator().manual_seed(0))
    y = (x.sum(1) > 0).long()
    return torch.utils.data.TensorDataset(x[:300], y[:300]), [(x[i], int(y[i])) for i in range(300, 400)]


class Net(nn.Module):
    def __init__(self, input_shape, num_classes, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_shape[0], hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)
'''
TINY_OWN = ["data.val_size=60", "collect.epochs=2", "collect.k=12", "train.autoencoder.arch=mlp",
            "train.autoencoder.steps=100", "train.autoencoder.kwargs={hidden: 32}", "train.autoencoder.latent_dim=8",
            "train.diffusion.arch=mlp", "train.diffusion.steps=100", "train.diffusion.kwargs={width: 32, depth: 2}",
            "generate.n=6", "generate.sampler=ddim", "generate.steps=10", "train.health_tolerance=1.0",
            "evaluate.baselines=[ensemble,gaussian]"]


def own_task(folder, source: str = OWN, model: str = "Net", data: str = "data") -> tuple[str, str]:
    """A module of `source` and a YAML task naming its factories in `folder`; returns (yaml path, module name).
    Each module has a name of its own: Python keeps a module once imported."""
    module = f"own_{uuid.uuid4().hex[:8]}"
    (folder / f"{module}.py").write_text(source)
    yaml = folder / "own.yaml"
    yaml.write_text(textwrap.dedent(f"""\
        data: {{name: "{module}:{data}"}}
        model: {{name: "{module}:{model}", kwargs: {{hidden: 16}}}}
        collect: {{subset: [last_norm:1], recipe: iteration, subset_lr: 0.01}}
        """))
    return str(yaml), module


def test_own_model_and_data_through_the_cli(tmp_path) -> None:
    yaml, module = own_task(tmp_path)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", yaml, *TINY_OWN, "--runs-dir", str(runs), "-q"])
    assert result.exit_code == 0, result.output
    assert "generated vs original" in result.output and (runs / "own" / "report" / "report.html").is_file()
    config = load_config(yaml, TINY_OWN)
    task = Task(config, progress=False)
    assert task.data.input_shape == (8,) and task.data.num_classes == 2
    assert (len(task.data.train), len(task.data.val), len(task.data.test)) == (240, 60, 100)  # val held out of train
    assert list(task.new_model().state_dict())[0] == "net.0.weight"

    before = stage_hash(config, "collect")
    with open(tmp_path / f"{module}.py", "a") as source:
        source.write("# changed\n")
    assert stage_hash(config, "collect") != before  # the module's source is part of the run's identity
    result = runner.invoke(app, ["run", yaml, *TINY_OWN, "--runs-dir", str(runs), "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"the source of model.name={module}:Net or data.name={module}:data changed" in result.output
    assert "--force collect" in result.output


@pytest.mark.parametrize("source, model, data, message", [
    (OWN, "Nett", "data", "own_X.Nett does not exist: name a function or class of own_X after the colon"),
    ("raise RuntimeError('no GPU here')\n", "Net", "data",
     "importing own_X failed (RuntimeError: no GPU here): fix that module"),
    ("import no_such_package_xyz\n", "Net", "data", "importing own_X failed (No module named 'no_such_package_xyz')"),
    ("def Net(input_shape, num_classes, hidden):\n    raise ValueError('hidden must be even')\n"
     "def data():\n    return [1, 2], []\n", "Net", "data", "the train dataset's item 0 is of type int: each item"),
    (OWN.replace("return torch.utils.data.TensorDataset", "return 3, torch.utils.data.TensorDataset"), "Net", "data",
     "returned a tuple; return two datasets, (train, test)"),
    (OWN + "\ndef dicts():\n    return [{'x': torch.zeros(8), 'y': 0}], [{'x': torch.zeros(8), 'y': 1}]\n", "Net",
     "dicts", "the train dataset's item 0 is a dict with keys ['x', 'y']: each item must be an (x, y) pair"),
    (OWN + "\ndef broken():\n    raise FileNotFoundError('/data/x.npy')\n", "Net", "broken",
     "own_X:broken() raised FileNotFoundError: /data/x.npy: fix the factory"),
    (OWN.replace("hidden=16):", "hidden=16):\n        assert hidden % 3 == 0, 'hidden must be a multiple of 3'"),
     "Net", "data", "own_X:Net(input_shape=(8,), num_classes=2, hidden=16) raised AssertionError: hidden must be a "
                    "multiple of 3: fix the factory or model.kwargs"),
], ids=["no-factory", "module-raises", "module-imports-nothing", "not-pairs", "not-two-splits", "dicts",
        "data-factory-raises", "model-factory-raises"])
def test_errors_of_your_own_factories_are_one_line(tmp_path, source, model, data, message) -> None:
    yaml, module = own_task(tmp_path, source, model, data)
    result = runner.invoke(app, ["collect", yaml, *TINY_OWN, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert message.replace("own_X", module) in result.output
    assert not list(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize("name, message", [
    ("no_such_module_xyz:Net", "no module 'no_such_module_xyz' in the current folder, the YAML file's folder"),
    ("my module:Net", "is not an import path: write package.module:factory"),
    ("no_such_architecture", "is not known: choose one of cifar_resnet18"),
])
def test_a_model_name_that_resolves_to_nothing_is_a_config_error(name, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("mnist1d-convnet", [f"model.name={name}"])


def test_a_dataset_name_that_resolves_to_nothing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.name='nope' is not known: .* package.module:factory"):
        load_config("mnist1d-convnet", ["data.name=nope"])


def test_labels_must_be_class_indices(tmp_path) -> None:
    source = "import torch\ndef data():\n    x = torch.zeros(4, 2)\n    return (x, torch.rand(4)), (x, torch.rand(4))\n"
    yaml, module = own_task(tmp_path, OWN + source.replace("import torch\n", ""), "Net", "data")
    with pytest.raises(DatasetError, match="give each y a class index"):
        _ = Task(load_config(yaml, ["data.val_size=1"]), progress=False).data


def test_any_timm_architecture_is_a_model() -> None:
    """A timm name outside the registry, sized to the data: in_chans, num_classes and, for a ViT, the image size."""
    cnn = build_model("resnet10t", (1, 16, 16), 3).eval()
    assert cnn(torch.randn(2, 1, 16, 16)).shape == (2, 3)
    vit = build_model("deit_tiny_patch16_224", (3, 32, 32), 5, depth=1).eval()
    assert vit(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    assert load_config("mnist1d-convnet", ["model.name=resnet10t"]).model.name == "resnet10t"
