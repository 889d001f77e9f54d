"""A finished run folder, read: `open_run(run_dir, device="cpu") -> FinishedRun`.

The one way to read what a run holds, for the command line, `pdiff export` / `push`, `pdiff sample` and the
benchmarks. Each part is loaded on first use and checked against the config that made the run (config.yaml):
the base model (built from the architecture base.safetensors records, so without the dataset), the checkpoints,
the generator, the generated vectors and results.json. The config is read as written, not validated against
this machine: a run made with device=cuda is read on a CPU one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from . import evaluate, generate
from .adapters import add_adapters
from .checkpoints import CheckpointSet
from .collect import weights_finite
from .config import Config
from .errors import ArtifactError
from .generate import Generated
from .generator import ParameterGenerator
from .hashing import check_hash
from .layout import BASE_FILE, CHECKPOINTS_FILE, RUN_CONFIG_FILE, stage_folder
from .pipeline import stage_hash
from .rules import field_names
from .store import load_tensors
from .tasks.models import build_model


@dataclass
class FinishedRun:
    """The parts of a run folder, each read when first asked for. `device`: where the networks go."""

    root: Path
    config: Config
    device: torch.device

    def stage_dir(self, stage: str) -> Path:
        return stage_folder(self.root, stage)

    @cached_property
    def base_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The base model's state_dict and its metadata (architecture, config hash), checked to be finite and
        made under this run's config."""
        path = self.stage_dir("collect") / BASE_FILE
        tensors, meta = load_tensors(path)
        expected = stage_hash(self.config, "collect")
        if meta.get("config_hash") != expected:
            raise ArtifactError(f"the base model in {self.root} was made under another config (hash "
                                f"{meta.get('config_hash')}) than its {RUN_CONFIG_FILE} (hash {expected}): rerun "
                                "`pdiff collect --force`")
        if not weights_finite(tensors):
            raise ArtifactError(f"{path} contains NaN or Inf weights: rerun `pdiff collect --force`")
        return tensors, meta

    @cached_property
    def base_model(self) -> nn.Module:
        """The trained base model, built from base.safetensors' record of its architecture (eval mode)."""
        tensors, meta = self.base_state
        missing = [key for key in ("model", "input_shape", "num_classes") if key not in meta]
        if missing:
            raise ArtifactError(f"{self.stage_dir('collect') / BASE_FILE} does not record the model's {missing[0]} "
                                "(an older pdiff made it): rerun `pdiff collect --force`")
        model = build_model(meta["model"], tuple(meta["input_shape"]), meta["num_classes"],
                            **meta.get("model_kwargs", {}))
        if meta.get("peft") is not None:  # the base was saved wrapped with its LoRA adapters
            model = add_adapters(model, meta["peft"], self.config.seed)
        try:
            model.load_state_dict(tensors)
        except RuntimeError as e:
            raise ArtifactError(f"{BASE_FILE} in {self.root} does not fit the model it records "
                                f"({str(e).splitlines()[0]}): rerun `pdiff collect --force`") from None
        return model.to(self.device).eval()

    @cached_property
    def checkpoints(self) -> CheckpointSet:
        """The collected checkpoints, made under this run's config."""
        path = self.stage_dir("collect") / CHECKPOINTS_FILE
        ckpts, meta = CheckpointSet.load(path)
        check_hash(path, meta, stage_hash(self.config, "collect"), "collect")
        return ckpts

    @cached_property
    def generator(self) -> ParameterGenerator:
        """The trained generator (train/, or generator/ where an earlier pdiff wrote it), made under this config."""
        return ParameterGenerator.load(self.stage_dir("train"), self.device,
                                       config_hash=stage_hash(self.config, "train"))

    @cached_property
    def generated(self) -> Generated:
        """The generate stage's vectors and latents."""
        return generate.read(self.root, stage_hash(self.config, "generate"), self.checkpoints.spec)

    @cached_property
    def results(self) -> dict:
        """evaluate/results.json, of a format this pdiff reads."""
        return evaluate.read(self.root, stage_hash(self.config, "evaluate"))

    def has(self, stage: str) -> bool:
        """Whether the folder of `stage` exists (its contents are checked when read)."""
        return self.stage_dir(stage).is_dir()


def open_run(run_dir: str | Path, device: torch.device | str = "cpu") -> FinishedRun:
    """A finished (or partly finished) run folder, read lazily onto `device` (see the module docstring)."""
    root = Path(run_dir)
    return FinishedRun(root, read_run_config(root), torch.device(device))


def read_run_config(run_dir: str | Path) -> Config:
    """The config that made what `run_dir` holds (its config.yaml), read as written: not validated, since a run
    made on a GPU machine must still be readable on a CPU one."""
    path = Path(run_dir) / RUN_CONFIG_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: {run_dir} is not a finished run; run `pdiff run` first")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), field_names(OmegaConf.load(path))))
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not a pdiff config ({str(e).strip().splitlines()[0]}): rerun "
                            "`pdiff run` to rewrite it") from None


