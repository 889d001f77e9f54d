"""The train stage alone on a tiny run folder: generator files, the health gate's figures, the loader's checks."""

import pytest

from pdiff import train
from pdiff.errors import ArtifactError
from pdiff.params import ParamSpec
from pdiff.tasks import Task
from tests.conftest import copy_stages, tiny_config


def test_stage_alone_writes_the_generator(tiny_run, tmp_path) -> None:
    task = Task(tiny_config(), progress=False)
    root = copy_stages(tiny_run, tmp_path, ("collect",))
    out = root / train.FOLDER
    out.mkdir()
    summary = train.run(task, root, out)
    assert sorted(p.name for p in out.iterdir()) == ["autoencoder.safetensors", "diffusion.safetensors",
                                                     "metrics.csv"]
    assert set(summary["health"]) == {"original_val_accuracy", "reconstructed_val_accuracy"}
    assert "autoencoder" in (out / "metrics.csv").read_text()
    spec = ParamSpec.from_dict({"names": ["features.1.1.weight", "features.1.1.bias", "features.2.1.weight",
                                          "features.2.1.bias"], "shapes": [[32], [32], [32], [32]]})
    assert train.load(task, root, spec).sample(2, "ddim", 5).shape == (2, 128)
    with pytest.raises(ArtifactError, match="trained under another config"):
        train.load(Task(tiny_config("train.diffusion.steps=10"), progress=False), root, spec)
