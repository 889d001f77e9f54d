"""The generate stage alone on a tiny run folder, and `sample_models`."""

from pathlib import Path

import pytest
import torch

from pdiff import generate
from pdiff.collect import load as load_collected
from pdiff.errors import ArtifactError, ConfigError
from pdiff.generator import ParameterGenerator
from pdiff.pipeline import Run, run_stages
from pdiff.sample import sample_models
from pdiff.store import load_tensors
from pdiff.task import Task
from tests.conftest import copy_stages, tiny_config


def test_stage_alone_writes_generated_and_original_latents(tiny_run, tmp_path) -> None:
    task = Task(tiny_config(), progress=False)
    root = copy_stages(tiny_run, tmp_path, ("collect", "train"))
    out = root / generate.FOLDER
    out.mkdir()
    generate.run(task, root, out)
    assert [p.name for p in out.iterdir()] == [generate.GENERATED_FILE]
    spec = load_collected(task, root).checkpoints.spec
    generated = generate.load(task, root, spec)
    assert generated.params.shape == (6, 128) and generated.latents.shape == (6, 8)
    assert generated.original_latents.shape == (12, 8)  # the report's t-SNE needs no generator
    again = generate.load(task, tiny_run, spec)  # the same seed gives the same vectors
    assert torch.equal(generated.params, again.params)


@pytest.fixture(scope="module")
def conditioned_run(tiny_run, tmp_path_factory) -> tuple[Task, Path]:
    """The tiny run's collection with a generator conditioned on accuracy, asked for the best checkpoint's."""
    task = Task(tiny_config("train.diffusion.condition=accuracy", "generate.target=max", "generate.guidance=1"),
                progress=False)
    root = copy_stages(tiny_run, tmp_path_factory.mktemp("conditioned"), ("collect",))
    run_stages(Run(task.config, root, progress=False), ("train",))  # writes config.yaml, as `pdiff sample` needs
    return task, root


def test_stage_with_a_target_records_what_it_asked_for(conditioned_run, tiny_run) -> None:
    task, root = conditioned_run
    out = root / generate.FOLDER
    out.mkdir()
    recorded = generate.run(task, root, out)  # stage.json gets these
    best = load_collected(task, root).checkpoints.val_accuracy.max().item()
    assert recorded == {"target": "max", "target_accuracy": pytest.approx(best), "guidance": 1.0}
    spec = load_collected(task, root).checkpoints.spec
    assert generate.load(task, root, spec).conditioning == recorded
    assert generate.load(Task(tiny_config(), progress=False), tiny_run, spec).conditioning == {}


def test_sample_models_at_a_target(conditioned_run, tmp_path) -> None:
    _, root = conditioned_run
    paths = sample_models(root, 2, tmp_path, sampler="ddim", steps=5, target="q90", guidance=2.0)
    _, meta = load_tensors(paths[0])
    assert meta["target"] == "q90" and meta["guidance"] == 2.0 and 0 < meta["target_accuracy"] <= 1
    with pytest.raises(ConfigError, match="--guidance"):
        sample_models(root, 2, tmp_path, guidance=1.0)


def test_sample_models_refuses_a_target_without_conditioning(tiny_run, tmp_path) -> None:
    with pytest.raises(ConfigError, match="--target=max: this generator was trained without a condition"):
        sample_models(tiny_run, 2, tmp_path, sampler="ddim", steps=5, target="max")


def test_nan_under_guidance_names_the_guidance_not_the_generator(conditioned_run, tmp_path, monkeypatch) -> None:
    """Guidance extrapolates past the conditional and unconditional predictions; when that ends in NaN, a lower
    guidance is the fix, not retraining the generator."""
    task, root = conditioned_run
    monkeypatch.setattr(ParameterGenerator, "decode", lambda self, latents: torch.full((len(latents), 128), torch.nan))
    (tmp_path / "out").mkdir()
    with pytest.raises(ArtifactError, match="generate.guidance=1.0 pushed the samples to NaN or Inf parameters: "
                                            "lower generate.guidance"):
        generate.run(task, root, tmp_path / "out")
