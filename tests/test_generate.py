"""The generate stage alone on a tiny run folder, and `sample_models`."""

import torch

from pdiff import generate
from pdiff.collect import load as load_collected
from pdiff.tasks import Task
from tests.conftest import copy_stages, tiny_config


def test_stage_alone_writes_generated_and_original_latents(tiny_run, tmp_path) -> None:
    task = Task(tiny_config(), progress=False)
    root = copy_stages(tiny_run, tmp_path, ("collect", "generator"))
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
