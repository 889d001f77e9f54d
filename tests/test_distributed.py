"""Scaling out: sharding helpers in one process, and a real 2-process CPU run (gloo) under accelerate launch."""

import json
import os
import re
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from pdiff import distributed
from pdiff.collect import train_base
from pdiff.errors import ConfigError
from pdiff.inference import predict_many, predict_many_local
from pdiff.params import ParamSpec
from pdiff.pipeline import Run, run_stage
from pdiff.tasks.datasets import Split, TensorLoader
from tests.conftest import TINY, tiny_config

ROOT = Path(__file__).resolve().parents[1]
LAUNCHED = [*TINY, "device=cpu", "evaluate.model_chunk=4"]  # chunks of 4: both processes get models


def test_chunk_bounds_cut_whole_chunks_and_cover_every_row() -> None:
    assert distributed.chunk_bounds(19, 4, 2) == [(0, 8), (8, 19)]  # 5 chunks: 2 + 3
    assert distributed.chunk_bounds(12, 4, 3) == [(0, 4), (4, 8), (8, 12)]
    assert distributed.chunk_bounds(3, 50, 2) == [(0, 0), (0, 3)]  # one chunk: one process idles
    for m, chunk, n in [(200, 50, 8), (7, 2, 3), (1, 1, 4)]:
        bounds = distributed.chunk_bounds(m, chunk, n)
        assert bounds[0][0] == 0 and bounds[-1][1] == m
        assert all(hi == lo for (_, hi), (lo, _) in zip(bounds[:-1], bounds[1:], strict=True))
        assert all(lo % chunk == 0 for lo, _ in bounds if lo < m)


def test_round_robin_gives_each_process_its_batches_and_equal_steps() -> None:
    batches = list(range(7))
    shards = [list(distributed.RoundRobin(batches, rank, 3)) for rank in range(3)]
    assert shards == [[0, 3], [1, 4], [2, 5]]  # batch 6 starts an incomplete group: dropped
    assert len(distributed.RoundRobin(batches, 0, 3)) == 2


def test_one_process_changes_nothing() -> None:
    split = Split(torch.randn(10, 3), torch.arange(10) % 2)
    loader = TensorLoader(split, 4)
    assert distributed.shard(loader) is loader and distributed.is_main_process()
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    spec = ParamSpec.select(model, "2.*")
    vectors = torch.randn(5, spec.dim)
    assert torch.equal(predict_many(model, spec, vectors, loader, chunk=2),
                       predict_many_local(model, spec, vectors, loader, chunk=2))


def test_bf16_training_leaves_a_float32_model() -> None:
    try:
        distributed.setup("cpu", "bf16")
        model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        loader = TensorLoader(Split(torch.randn(32, 3), torch.arange(32) % 2), 8)
        train_base(model, loader, epochs=1, progress=False)
        assert model(torch.randn(2, 3)).dtype == torch.float32 and "_original_forward" not in vars(model)
    finally:
        distributed.setup("cpu", "no")


def test_bad_precision_and_device_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="precision='fp8'"):
        distributed.setup("cpu", "fp8")
    with pytest.raises(ConfigError, match="device='gpu0'"):
        distributed.setup("gpu0", "no")
    distributed.setup("cpu", "no")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """`pdiff run` of the tiny task in 2 CPU processes (gloo), logging every file written."""
    tmp = tmp_path_factory.mktemp("launch")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PDIFF_WRITE_LOG": str(tmp / "writes.log"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), str(ROOT / "tests" / "launch_logging_writes.py"),
               "run", "--runs-dir", str(tmp / "runs"), "--quiet", *LAUNCHED]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "runs" / "mnist1d-convnet", tmp / "writes.log", result


@pytest.mark.slow
def test_two_processes_write_each_artifact_once(launched) -> None:
    root, writes, result = launched
    # a stage writes into .<folder>.partial/, renamed onto <folder>/ when it succeeds
    written = Counter(re.sub(r"/\.([\w-]+)\.partial/", r"/\1/", line.split(" ", 1)[1])
                      for line in writes.read_text().splitlines())
    ranks = {line.split(" ", 1)[0] for line in writes.read_text().splitlines()}
    assert ranks == {"0"}  # only the main process writes
    artifacts = ["config.yaml", "collect/base.safetensors", "collect/checkpoints.safetensors",
                 "train/autoencoder.safetensors", "train/diffusion.safetensors", "train/metrics.csv",
                 "generate/generated.safetensors", "evaluate/results.json", "evaluate/predictions.safetensors",
                 "report/report.md", "report/report.html"]
    for name in artifacts:
        assert written[str(root / name)] == 1, name
    assert all(count == 1 for count in written.values())
    assert not list(root.rglob("*.tmp"))
    assert result.stderr.count("collect: done") == 1  # one process logs
    assert result.stdout.count("test accuracy (%)") == 1  # one process prints the table


@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(launched) -> None:
    root = launched[0]
    two = json.loads((root / "evaluate/results.json").read_text())
    assert [m["group"] for m in two["models"]][:19] == ["original"] * 12 + ["ensemble"] + ["generated"] * 6
    run_stage(Run(tiny_config("device=cpu", "evaluate.model_chunk=4"), root, progress=False), "evaluate",
              force=True)  # the same checkpoints and generated vectors, now in this one process
    one = json.loads((root / "evaluate/results.json").read_text())
    assert one == two
