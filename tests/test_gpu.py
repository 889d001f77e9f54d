"""The GPU path: batched evaluation, collection, the generator, bf16 autocast and device=auto on a real device.

Marked `gpu` and skipped where torch sees no CUDA GPU, so CI on a CPU machine skips them all. The device is
$PDIFF_TEST_DEVICE (default cuda); `PDIFF_TEST_DEVICE=cpu` runs the same tests on the CPU at the same toy size
(what `python -m bench.gpu --device cpu` does), where "the same as on the CPU" compares the CPU with itself.
Every model and config is tiny, so the whole file takes seconds on a GPU and about a minute on two CPU cores.
"""

from __future__ import annotations

import copy
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

from pdiff import distributed
from pdiff.checkpoints import CheckpointSet
from pdiff.collect import collect, train_base
from pdiff.distributed import resolve_device
from pdiff.generator import ParameterGenerator
from pdiff.inference import MEMORY_BUDGET, predict, predict_many
from pdiff.params import ParamSpec
from pdiff.pipeline import run_pipeline
from pdiff.presets import load_config
from pdiff.tasks.datasets import DataSplits, Split, TensorLoader, load_dataset
from pdiff.tasks.models import build_model
from tests.conftest import tiny_config

DEVICE = torch.device(os.environ.get("PDIFF_TEST_DEVICE", "cuda"))
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                       reason="torch sees no CUDA GPU here (PDIFF_TEST_DEVICE=cpu runs these tests on the CPU)"),
]
# architecture -> (input shape, generated subset, constructor kwargs): each small, each cut somewhere else
ARCHITECTURES = {
    "convnet1d": ((1, 40), "last_norm:2", {}),
    "convnet3": ((1, 28, 28), "last_norm:2", {"channels": [8, 16, 16]}),
    "cifar_resnet18": ((3, 32, 32), ["layer4.1.bn1", "layer4.1.bn2"], {"width": 8}),  # residual input crosses
    "vit_tiny_patch16_224": ((3, 32, 32), ["blocks.1.norm2", "norm"], {"patch_size": 8, "depth": 2}),
}
MAX_DIFFERING = 1e-3  # fraction of predictions allowed to flip between two float32 evaluations (near-ties)


@pytest.fixture(autouse=True)
def full_precision_on_device():
    """Every test starts and ends with a plain float32 accelerator on DEVICE (some switch to bf16)."""
    distributed.setup(DEVICE, "no")
    yield
    distributed.setup(DEVICE, "no")


@pytest.fixture
def strict_float32():
    """TF32 off: cuDNN convolutions on a GPU round to TF32 by default (~1e-3), which flips near-tie predictions."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def random_model(name: str) -> tuple[nn.Module, ParamSpec, TensorLoader]:
    """An untrained model with random BatchNorm statistics, its subset, and 256 random inputs in batches of 64."""
    shape, subset, kwargs = ARCHITECTURES[name]
    torch.manual_seed(0)
    model = build_model(name, shape, 10, **kwargs).eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2)
    loader = TensorLoader(Split(torch.randn(256, *shape), torch.zeros(256, dtype=torch.int64)), 64)
    return model, ParamSpec.select(model, subset), loader


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_batched_evaluation_matches_one_by_one_and_the_cpu(name: str, strict_float32) -> None:
    model, spec, loader = random_model(name)
    vectors = spec.flatten(model) + 0.2 * torch.randn(6, spec.dim)  # [6, D]
    # chunks of 4 (a full one and a partial one), vmapped on any device: the GPU's memory budget
    batched = predict_many(copy.deepcopy(model), spec, vectors, loader, chunk=4, device=DEVICE,
                           memory_budget=MEMORY_BUDGET["cuda"])
    on_device = copy.deepcopy(model).to(DEVICE)
    one_by_one = torch.stack([predict(spec.load_into(on_device, v.to(DEVICE)), loader, DEVICE) for v in vectors])
    on_cpu = predict_many(copy.deepcopy(model), spec, vectors, loader, chunk=4, device="cpu")
    assert batched.shape == (6, 256) and batched.device.type == "cpu"
    assert batched.unique().numel() > 1 and (batched != batched[0]).any(), "a degenerate model tests nothing"
    for other, what in ((one_by_one, f"one by one on {DEVICE}"), (on_cpu, "on the cpu")):
        differing = int((batched != other).sum())
        assert differing <= MAX_DIFFERING * batched.numel(), f"{differing} of {batched.numel()} differ from {what}"


@pytest.fixture(scope="module")
def mnist1d() -> DataSplits:
    config = tiny_config()
    return load_dataset("mnist1d", None, config.data.val_size, config.seed, config.data.num_samples)


def collect_tiny(data: DataSplits) -> tuple[nn.Module, CheckpointSet]:
    """One base epoch and 12 checkpoints of the default task's model, on DEVICE."""
    torch.manual_seed(0)
    model = build_model("convnet1d", data.input_shape, data.num_classes)
    loader = TensorLoader(data.train, 128, shuffle=True, generator=torch.Generator().manual_seed(0))
    train_base(model, loader, epochs=1, device=DEVICE, progress=False)
    spec = ParamSpec.select(model, "last_norm:2")
    return model, collect(model, loader, spec, k=12, recipe="iteration", lr=0.01, device=DEVICE, progress=False)


@pytest.fixture(scope="module")
def fitted(mnist1d: DataSplits) -> tuple[nn.Module, CheckpointSet, ParameterGenerator]:
    """The tiny task's model, checkpoints and generator, all trained on DEVICE in float32."""
    distributed.setup(DEVICE, "no")
    model, ckpts = collect_tiny(mnist1d)
    gen = ParameterGenerator(ckpts.spec, tiny_config().train, DEVICE, seed=0).fit(ckpts, progress=False)
    return model, ckpts, gen


def test_collection_and_the_generator_train_and_sample_on_the_device(fitted, mnist1d: DataSplits) -> None:
    model, ckpts, gen = fitted
    assert {p.device.type for p in model.parameters()} == {DEVICE.type}
    assert ckpts.params.shape == (12, ckpts.spec.dim) and torch.isfinite(ckpts.params).all()
    assert (ckpts.params[1:] != ckpts.params[:-1]).any(dim=1).all(), "every step should move the subset"
    for net in (gen.autoencoder, gen.prior.denoiser):
        assert {p.device.type for p in net.parameters()} == {DEVICE.type}
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in gen.metrics)
    samples = gen.sample(6, "ddim", 10)
    assert samples.shape == (6, ckpts.spec.dim) and samples.device.type == "cpu" and torch.isfinite(samples).all()
    predictions = predict_many(model, ckpts.spec, samples, TensorLoader(mnist1d.test, 500), device=DEVICE)
    assert predictions.shape == (6, len(mnist1d.test))


@pytest.mark.parametrize("sampler, steps", [("ddim", 10), ("ddpm", None)])
def test_a_generator_trained_on_the_device_samples_the_same_vectors_on_the_cpu(fitted, tmp_path, sampler: str,
                                                                                 steps: int | None) -> None:
    _, _, gen = fitted
    gen.save(tmp_path)
    on_cpu = ParameterGenerator.load(tmp_path, "cpu")
    here = gen.sample(6, sampler, steps, seed=3)
    torch.testing.assert_close(on_cpu.sample(6, sampler, steps, seed=3), here, rtol=1e-3, atol=1e-3)
    other_seed = on_cpu.sample(6, sampler, steps, seed=4)
    assert not torch.allclose(other_seed, here, rtol=1e-3, atol=1e-3), "the tolerance should tell seeds apart"


def test_a_token_generator_with_a_global_denoiser_trained_on_the_device_samples_the_same_on_the_cpu(
        fitted, tmp_path) -> None:
    """The whole-network path: tokens autoencoder, transformer and the global latent's own MLP denoiser, all
    trained on the device; loaded on the CPU, the same seed draws the same vectors."""
    _, ckpts, _ = fitted
    config = tiny_config("train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                         "train.autoencoder.latent_dim=2",
                         "train.autoencoder.kwargs={hidden: 32, token_size: 8, global_dim: 2}",
                         "train.diffusion.kwargs={width: 32, depth: 2, heads: 2}", "train.diffusion.global_steps=50")
    gen = ParameterGenerator(ckpts.spec, config.train, DEVICE, seed=0).fit(ckpts, progress=False)
    for net in (gen.autoencoder, gen.prior.rest.denoiser, gen.prior.global_denoiser):
        assert {p.device.type for p in net.parameters()} == {DEVICE.type}
    here = gen.sample(6, "ddim", 10, seed=3)
    assert torch.isfinite(here).all()
    gen.save(tmp_path)
    torch.testing.assert_close(ParameterGenerator.load(tmp_path, "cpu").sample(6, "ddim", 10, seed=3), here,
                               rtol=1e-3, atol=1e-3)


def test_bf16_autocast_training_stays_finite(mnist1d: DataSplits) -> None:
    distributed.setup(DEVICE, "bf16")
    dtypes: set[torch.dtype] = set()

    def record(module: nn.Module, inputs, output: torch.Tensor) -> None:
        dtypes.add(output.dtype)

    torch.manual_seed(0)
    model = build_model("convnet1d", mnist1d.input_shape, mnist1d.num_classes)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv1d))
    handle = first_conv.register_forward_hook(record)
    loader = TensorLoader(mnist1d.train, 128, shuffle=True, generator=torch.Generator().manual_seed(0))
    train_base(model, loader, epochs=1, device=DEVICE, progress=False)
    ckpts = collect(model, loader, ParamSpec.select(model, "last_norm:2"), k=12, recipe="iteration", lr=0.01,
                    device=DEVICE, progress=False)
    handle.remove()
    assert torch.bfloat16 in dtypes, f"the forward passes ran in {dtypes}, not under bf16 autocast"
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
    assert next(model.parameters()).dtype == torch.float32 and torch.isfinite(ckpts.params).all()
    gen = ParameterGenerator(ckpts.spec, tiny_config().train, DEVICE, seed=0)
    dtypes.clear()
    first_linear = next(m for m in gen.autoencoder.modules() if isinstance(m, nn.Linear))
    handle = first_linear.register_forward_hook(record)
    gen.fit(ckpts, progress=False)
    handle.remove()
    assert torch.bfloat16 in dtypes, f"the autoencoder ran in {dtypes}, not under bf16 autocast"
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in gen.metrics)
    assert torch.isfinite(gen.sample(6, "ddim", 10)).all()


def test_device_auto_picks_the_gpu_where_there_is_one() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(load_config("mnist1d-convnet", ["device=auto"]).device).type == expected
    assert distributed.setup("auto", "no").type == expected
    if expected == "cuda":
        assert distributed.resolve_precision("auto", torch.device("cuda")) == (
            "bf16" if torch.cuda.is_bf16_supported() else "no")


def test_the_tiny_pipeline_runs_on_the_device(tmp_path) -> None:
    """All five stages (precision=auto: bf16 training on a GPU with bf16), baselines and report included."""
    run = run_pipeline(tiny_config(f"device={DEVICE}"), tmp_path, progress=False)
    assert set(run.seconds) == {"collect", "train", "generate", "evaluate", "report"}
    summary = json.loads((run.root / "evaluate" / "results.json").read_text())["summary"]
    assert {"original", "generated"} <= set(summary)
    assert all(0 <= group["mean"] <= 1 for group in summary.values())


def test_a_process_group_of_one_starts_on_the_device_backend() -> None:
    """NCCL on a GPU (gloo on the CPU) initialises and all-reduces: what a multi-GPU launch starts with.

    One GPU cannot hold a real multi-process run (NCCL refuses two ranks on one GPU), so this is the most of
    NCCL that one GPU can check.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if DEVICE.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        value = torch.ones(3, device=DEVICE)
        dist.all_reduce(value)
        assert value.tolist() == [1.0, 1.0, 1.0] and dist.get_backend() == backend
    finally:
        dist.destroy_process_group()
