"""Configs: one dataclass per stage, YAML task presets, `key=value` overrides, validation.

The defaults reproduce the paper (docs/design.md, "Following the paper"); a task preset in `tasks/presets/*.yaml`
overrides what its dataset and hardware need, and the command line overrides both.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import inspect
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .autoencoder import AUTOENCODERS, build_autoencoder
from .checkpoints import HOLDOUT_SPLITS
from .denoisers import DENOISERS, TOKEN_DENOISERS, build_denoiser
from .diffusion import SAMPLERS
from .distributed import PRECISIONS, resolve_device
from .errors import ConfigError
from .layout import resolve_data_dir
from .priors import PRIORS
from .tasks.datasets import DATASETS
from .tasks.models import MODELS, input_problem

PRESETS_DIR = Path(__file__).parent / "tasks" / "presets"


@dataclass
class DataConfig:
    name: str = "mnist1d"
    data_dir: str | None = None  # None: $PDIFF_DATA, else ~/.cache/pdiff/data
    download: bool = True  # fetch a missing torchvision dataset (needs internet)
    val_size: int = 1000  # held out of the training data; every choice is made on it, never on test
    augment: bool = True  # the dataset's usual training augmentation (crop + flip for CIFAR/STL-10; none for MNIST)
    num_samples: int = 10000  # mnist1d only: samples generated (80% train, 20% test)
    image_size: int | None = None  # imagefolder only: resize + centre-crop to N x N; None: keep the size
    batch_size: int = 128
    eval_batch_size: int = 1000


@dataclass
class ModelConfig:
    name: str = "convnet1d"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class CollectConfig:
    epochs: int = 30  # base training: SGD with cosine decay from lr
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    subset: list[str] = field(default_factory=lambda: ["last_norm:2"])  # glob patterns, "last_norm:N" or "all"
    k: int = 200  # checkpoints of the subset to save
    recipe: str = "epoch"  # "epoch": one per epoch at a small SGD lr (v1); "iteration": one per step (v2)
    subset_lr: float = 0.001  # v1: the base schedule's final small lr; v2: AdamW lr (0.03 for BN)
    subset_weight_decay: float = 5e-4


@dataclass
class AutoencoderConfig:
    arch: str = "conv1d"  # "conv1d" (the paper's), "mlp" or "tokens" (large D; pair it with diffusion "transformer")
    latent_dim: int = 64  # tokens: the latent channels per token
    input_noise: float = 0.001
    latent_noise: float = 0.1
    # How checkpoints are standardised before the autoencoder (pdiff.params.Normalizer): "tensor" (the paper's,
    # each tensor's mean and std) or "deviation" (each number's mean over the checkpoints, each tensor's spread
    # around it: whole networks, whose checkpoints differ too little in "tensor" units for the MSE to see it).
    standardise: str = "tensor"
    kwargs: dict[str, Any] = field(default_factory=dict)  # arch-specific: mlp hidden, conv1d channels
    steps: int = 30000
    batch_size: int = 200
    lr: float = 1e-3
    weight_decay: float = 2e-6
    # tokens: train each step on a random crop of this many tokens of the sequence (0: all of them), so that a
    # step's cost does not grow with D; the crop is the same for every model of the mini-batch.
    tokens_per_step: int = 0


@dataclass
class DiffusionConfig:
    arch: str = "conv1d"
    kwargs: dict[str, Any] = field(default_factory=dict)
    tokens_per_step: int = 0  # transformer: train on crops of this many tokens (a multiple of the window; 0: all)
    # With a global latent (train.autoencoder.kwargs.global_dim): train an MLP denoiser of its own for it, this many
    # steps, and the transformer on the other tokens given it; 0: the transformer draws the global latent too.
    global_steps: int = 0
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    steps: int = 30000
    batch_size: int = 200
    lr: float = 1e-3
    weight_decay: float = 2e-6
    ema_decay: float = 0.999  # sampling uses this EMA of the denoiser; 0: its raw weights (the official v2 code)
    # Latents shifted and scaled to unit spread before diffusion (the DDPM's prior is N(0, 1)); false: raw
    # encoder outputs, as the official code (their spread then sets how far the prior reaches past the data).
    standardise_latents: bool = True
    # "none" (the paper's) or "accuracy": condition the denoiser on each checkpoint's validation accuracy,
    # dropped with probability p_uncond so the same network is also unconditional (classifier-free guidance).
    condition: str = "none"
    p_uncond: float = 0.1
    # The latent prior family, a name in pdiff.priors.PRIORS: "auto" the DDPM prior that fits the latents (flat,
    # tokens, or factorised with global_steps).
    prior: str = "auto"


@dataclass
class TrainConfig:
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    health_tolerance: float = 0.05  # stop if reconstructions lose more mean val accuracy than this
    # Checkpoints kept from the generator, to test whether it generalises (0: the paper's protocol, none):
    # "interleaved" holds out every (K/H)-th in collection order, "last" the final H.
    holdout: int = 0
    holdout_split: str = "interleaved"
    seed: int | None = None  # the generator's initialisation and training noise; None: the run's seed
    # Generators trained (seeds seed, seed + 1, ...): with 2 or more, verdicts speak for the method (p-diff on
    # this task) instead of one trained generator.
    generators: int = 1


@dataclass
class GenerateConfig:
    n: int = 200
    sampler: str = "ddpm"  # "ddpm", "ddim" or "dpm"
    steps: int | None = None  # sampling steps; None: the full num_train_timesteps
    # With train.diffusion.condition=accuracy: the validation accuracy to ask for, a fraction ("0.98") or
    # max, median, min or qNN (the NN-th percentile) of the training checkpoints'; None: unconditional.
    target: str | None = None
    guidance: float = 0.0  # classifier-free guidance w: eps = (1 + w) eps_cond - w eps_uncond


# The baselines (pdiff.baselines) in their results.json order; "ensemble" comes before "generated".
BASELINES = ("ensemble", "noise", "finetune", "mean_of_k", "gaussian")


@dataclass
class EvaluateConfig:
    model_chunk: int = 50  # parameter vectors evaluated together (vmap)
    # Baselines evaluated beside the generated models (see BASELINES); whatever the order given here,
    # results.json holds original, ensemble, generated, noise@<s> per strength, finetune, mean_of_k, gaussian.
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    baseline_n: int | None = None  # models per baseline group; None: as many as generated
    noise_strengths: list[float] = field(default_factory=lambda: [0.001, 0.05, 0.15])  # std, standardised units
    finetune_steps: int = 10  # more AdamW steps on the subset from a checkpoint
    finetune_lr: float | None = None  # None: collect.subset_lr
    mean_of_k: int = 16  # checkpoints per average (Zeng et al. 2025); at most collect.k are used


@dataclass
class Config:
    task: str = "custom"
    description: str = ""
    hardware: str = "cpu"  # what the preset is sized for
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # training: "no" (float32), "bf16", "fp16"; "auto": bf16 on a GPU with bf16, else no
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


STAGES = ("collect", "train", "generate", "evaluate", "report")
# The config sections each stage's output depends on (with everything upstream of it).
# precision changes training (bf16 autocast), so it is hashed with collect and reaches every later stage.
_STAGE_SECTIONS = {"collect": ("seed", "precision", "data", "model", "collect"), "train": ("train",),
                   "generate": ("generate",), "evaluate": ("evaluate",), "report": ()}
# Where the data lives and how many models are evaluated together do not change the results.
_NOT_HASHED = {"data": ("data_dir", "download"), "evaluate": ("model_chunk",)}
# Keys added after runs were made, left out of the hash while they change nothing, so those runs keep their hash:
# (key, the value at which it is inert, the keys then dropped). A None train.seed is the run's seed, hashed
# already; tokens_per_step 0 trains on every token, as before the key existed; global_steps 0 trains no global
# denoiser, as before; unconditioned, p_uncond does nothing; without a target, guidance does nothing; one
# generator is what every run trained before train.generators.
_LATER_KEYS = (("train.seed", None, ("train.seed",)),
               ("train.autoencoder.tokens_per_step", 0, ("train.autoencoder.tokens_per_step",)),
               ("train.diffusion.tokens_per_step", 0, ("train.diffusion.tokens_per_step",)),
               ("train.diffusion.global_steps", 0, ("train.diffusion.global_steps",)),
               ("train.diffusion.condition", "none", ("train.diffusion.condition", "train.diffusion.p_uncond")),
               ("train.diffusion.standardise_latents", True, ("train.diffusion.standardise_latents",)),
               ("train.autoencoder.standardise", "tensor", ("train.autoencoder.standardise",)),
               ("generate.target", None, ("generate.target", "generate.guidance")),
               ("train.diffusion.prior", "auto", ("train.diffusion.prior",)),
               ("train.generators", 1, ("train.generators",)))
_BASE_FIELDS = ("epochs", "lr", "momentum", "weight_decay")  # the collect fields base training reads
RECIPES = ("epoch", "iteration")  # collection: see pdiff.collect
CONDITIONS = ("none", "accuracy")  # train.diffusion.condition
STANDARDISATIONS = ("tensor", "deviation")  # train.autoencoder.standardise
TARGET_PERCENTILES = {"min": 0.0, "median": 50.0, "max": 100.0}  # generate.target keywords, besides qNN
CHOICES = {"collect.recipe": RECIPES, "train.autoencoder.arch": tuple(AUTOENCODERS),
           "train.diffusion.arch": tuple(DENOISERS), "generate.sampler": SAMPLERS, "precision": PRECISIONS,
           "train.holdout_split": HOLDOUT_SPLITS, "train.diffusion.condition": CONDITIONS,
           "train.autoencoder.standardise": STANDARDISATIONS, "train.diffusion.prior": PRIORS}
POSITIVE = ("data.val_size", "data.num_samples", "data.batch_size", "data.eval_batch_size", "collect.k",
            "train.autoencoder.steps", "train.autoencoder.batch_size", "train.autoencoder.latent_dim",
            "train.diffusion.steps", "train.diffusion.batch_size", "train.diffusion.num_train_timesteps",
            "generate.n", "evaluate.model_chunk", "evaluate.mean_of_k", "train.generators")
NON_NEGATIVE = ("collect.epochs", "train.holdout", "train.autoencoder.input_noise", "train.autoencoder.latent_noise",
                "evaluate.finetune_steps", "generate.guidance", "train.autoencoder.tokens_per_step",
                "train.diffusion.tokens_per_step", "train.diffusion.global_steps")
# Real-valued keys and the interval each must lie in: (low, high, whether low itself is allowed, whether high is).
INF = float("inf")
POSITIVE_REAL, AT_LEAST_0 = (0, INF, False, False), (0, INF, True, False)
FRACTION, OPEN_FRACTION = (0, 1, True, True), (0, 1, False, False)
RANGES = {"collect.lr": POSITIVE_REAL, "collect.subset_lr": POSITIVE_REAL, "train.autoencoder.lr": POSITIVE_REAL,
          "train.diffusion.lr": POSITIVE_REAL, "collect.momentum": FRACTION, "collect.weight_decay": AT_LEAST_0,
          "collect.subset_weight_decay": AT_LEAST_0, "train.autoencoder.weight_decay": AT_LEAST_0,
          "train.diffusion.weight_decay": AT_LEAST_0, "train.diffusion.ema_decay": FRACTION,
          "train.diffusion.beta_start": OPEN_FRACTION, "train.diffusion.beta_end": OPEN_FRACTION,
          "train.autoencoder.input_noise": AT_LEAST_0, "train.autoencoder.latent_noise": AT_LEAST_0}
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit; the seed + 1 + rank of each process must fit too
TASK_NAME = re.compile(r"[^./\\\x00-\x1f][^/\\\x00-\x1f]*")  # one folder name: no separator, not hidden

def task_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_config(task: str | Path = "mnist1d-convnet", overrides: list[str] | None = None) -> Config:
    """Resolve a task (preset name or YAML path) plus `key=value` overrides into a validated Config."""
    path = Path(task) if str(task).endswith((".yaml", ".yml")) else PRESETS_DIR / f"{task}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(str(task), task_names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown task {str(task)!r}{hint}: `pdiff tasks` lists the tasks, or pass a YAML path")
    schema = OmegaConf.structured(Config)
    try:
        preset = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        raise ConfigError(f"{path} is not valid YAML ({_first_line(e)}): fix its syntax") from None
    try:
        layers = [preset, OmegaConf.from_dotlist(list(overrides or []))]
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        raise ConfigError(f"an override is not valid YAML ({_first_line(e)}): write key=value, quoting lists "
                          "and dicts, e.g. 'collect.subset=[layer4.*]'") from None
    if not isinstance(preset, DictConfig):
        raise ConfigError(f"{path} holds no mapping of config keys: write e.g. `collect: {{k: 50}}`")
    if "task" not in layers[0]:
        layers[0].task = path.stem
    for layer, source in zip(layers, (str(path), "the command line"), strict=True):
        _check_keys(layer, schema, source)
    _kwargs_follow_arch(*layers, schema)
    try:
        merged = OmegaConf.merge(schema, *layers)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{e.full_key}: {_first_line(e)}; give it a value of its type (see "
                          "`pdiff tasks --keys` and the preset files)") from None
    if merged.precision == "False":  # YAML reads a bare `no` as false: precision=no means "no"
        merged.precision = "no"
    config: Config = OmegaConf.to_object(merged)
    validate(config)
    return config


def _kwargs_follow_arch(preset: DictConfig, command_line: DictConfig, schema: DictConfig) -> None:
    """Drop the preset's network kwargs where the command line switches that network's arch: they belong to the
    preset's arch (`hidden` means nothing to a conv1d autoencoder), so the new arch starts from its own defaults
    and the kwargs given with it."""
    for section in ("train.autoencoder", "train.diffusion"):
        arch = OmegaConf.select(command_line, f"{section}.arch")
        preset_arch = OmegaConf.select(preset, f"{section}.arch", default=OmegaConf.select(schema, f"{section}.arch"))
        if arch is not None and arch != preset_arch:
            OmegaConf.update(preset, f"{section}.kwargs", {}, merge=False)


def _check_keys(layer: DictConfig, schema: DictConfig, source: str, prefix: str = "") -> None:
    """Reject unknown keys with the nearest valid ones (free-form `kwargs` dicts accept any key)."""
    for key, value in layer.items():
        full = f"{prefix}{key}"
        if key not in schema:
            while isinstance(value, DictConfig) and len(value) == 1:  # report the whole dotted key typed
                (child, value), = value.items()
                full = f"{full}.{child}"
            close = difflib.get_close_matches(full, _all_keys(OmegaConf.structured(Config)), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else "; `pdiff tasks --keys` lists them"
            raise ConfigError(f"unknown config key {full!r} in {source}{hint}")
        if key != "kwargs" and isinstance(value, DictConfig) and isinstance(schema[key], DictConfig):
            _check_keys(value, schema[key], source, prefix=f"{full}.")


def _all_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, DictConfig) and key != "kwargs":
            keys.extend(_all_keys(value, f"{prefix}{key}."))
    return keys


def config_keys() -> list[str]:
    """Every settable key, e.g. 'train.diffusion.steps'."""
    return _all_keys(OmegaConf.structured(Config))


def validate(config: Config) -> None:
    """Check values the types cannot: choices and signs. Raises ConfigError naming the key."""
    flat = to_dict(config)
    for key, choices in CHOICES.items():
        value = _get(flat, key)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not valid: choose one of {', '.join(choices)}")
    for key in POSITIVE:
        if _get(flat, key) <= 0:
            raise ConfigError(f"{key}={_get(flat, key)} must be positive: set it to 1 or more")
    for key in NON_NEGATIVE:
        if _get(flat, key) < 0:
            raise ConfigError(f"{key}={_get(flat, key)} must be zero or more: set it to 0 or above")
    if config.data.image_size is not None and config.data.image_size <= 0:
        raise ConfigError(f"data.image_size={config.data.image_size} must be positive: set it to 1 or more, "
                          "or null to keep the images' size")
    if not 0 <= config.train.diffusion.ema_decay < 1:
        raise ConfigError(f"train.diffusion.ema_decay={config.train.diffusion.ema_decay} must be in [0, 1): "
                          "e.g. 0.999, or 0 to sample the raw denoiser weights")
    if config.generate.steps is not None and config.generate.steps <= 0:
        raise ConfigError(f"generate.steps={config.generate.steps} must be positive: set it to 1 or more, "
                          "or null for all")
    _check_ranges(config, flat)
    _validate_baselines(config.evaluate)
    _validate_conditioning(config.train.diffusion, config.generate)
    if config.generate.n < config.train.generators:
        raise ConfigError(f"generate.n={config.generate.n} leaves some of the train.generators="
                          f"{config.train.generators} generators without a model: ask for at least as many models")
    if config.train.holdout and config.train.holdout > config.collect.k - 2:  # K=1 without a holdout is fine
        raise ConfigError(f"train.holdout={config.train.holdout} leaves fewer than 2 of the collect.k="
                          f"{config.collect.k} checkpoints to train on: hold out at most {config.collect.k - 2}")
    if not config.collect.subset:
        raise ConfigError("collect.subset is empty: give glob patterns, 'last_norm:N' or 'all'")
    _check_registries(config)
    resolve_device(config.device)


def check_task_name(task: str) -> None:
    """A task name is one folder name (RUNS_DIR/<task>/): not empty, not hidden, no path separator."""
    if not TASK_NAME.fullmatch(task) or task.strip() != task:
        raise ConfigError(f"task={task!r} is not a plain name (it names the run folder RUNS_DIR/<task>/): use "
                          "letters, digits, '-', '_' and '.', not starting with '.', e.g. task=my-run")


def _check_ranges(config: Config, flat: dict) -> None:
    """Values the types cannot bound: learning rates, decays, betas, timesteps, latent size, seed."""
    check_task_name(config.task)
    for key, (low, high, low_ok, high_ok) in RANGES.items():
        value = _get(flat, key)
        above = value >= low if low_ok else value > low
        below = value <= high if high_ok else value < high
        if not (above and below and math.isfinite(value)):
            interval = f"{'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"
            raise ConfigError(f"{key}={value} is out of range: give a finite value in {interval}")
    dm = config.train.diffusion
    if dm.beta_start > dm.beta_end:
        raise ConfigError(f"train.diffusion.beta_start={dm.beta_start} is above beta_end={dm.beta_end}: the noise "
                          "schedule must rise; swap them (the paper: 1e-4 to 2e-2)")
    if dm.num_train_timesteps < 2:
        raise ConfigError(f"train.diffusion.num_train_timesteps={dm.num_train_timesteps} is too few for a noise "
                          "schedule: set it to 2 or more (the paper: 1000)")
    steps = config.generate.steps
    if steps is not None and steps > dm.num_train_timesteps:
        raise ConfigError(f"generate.steps={steps} is more than the {dm.num_train_timesteps} timesteps the "
                          f"diffusion model is trained on: set it to 1..{dm.num_train_timesteps}, or null for all")
    if config.train.autoencoder.latent_dim < 2:
        raise ConfigError(f"train.autoencoder.latent_dim={config.train.autoencoder.latent_dim} is too small: set "
                          "it to 2 or more (the report projects the latents onto two axes; the paper: 64)")
    if not 0 <= config.seed <= MAX_SEED:
        raise ConfigError(f"seed={config.seed} is not a 64-bit seed: give a whole number in 0..{MAX_SEED}")
    for key in ("model.kwargs", "train.autoencoder.kwargs", "train.diffusion.kwargs"):
        for name, value in _numbers(_get(flat, key)):
            if value < 0 or not math.isfinite(value):
                raise ConfigError(f"{key}.{name}={value} is negative or not finite: give sizes of 1 or more "
                                  "(and rates of 0 or more)")


def _numbers(value: Any, name: str = "") -> list[tuple[str, float]]:
    """(dotted name, number) of every number inside a kwargs dict, lists and nested dicts included."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [(name, value)]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [pair for key, child in items for pair in _numbers(child, f"{name}.{key}" if name else str(key))]


def _check_registries(config: Config) -> None:
    """Names and kwargs that pick a dataset, model or network must exist, so a typo fails before training."""
    for key, name, registry in (("data.name", config.data.name, DATASETS), ("model.name", config.model.name, MODELS)):
        if name not in registry:
            raise ConfigError(f"{key}={name!r} is not known: choose one of {', '.join(sorted(registry))}")
    check_kwargs(MODELS[config.model.name], config.model.kwargs, "model.kwargs", ("input_shape", "num_classes"))
    ae, dm = config.train.autoencoder, config.train.diffusion
    check_kwargs(AUTOENCODERS[ae.arch], ae.kwargs, "train.autoencoder.kwargs",
                 ("dim", "latent_dim", "input_noise", "latent_noise", "numels"))
    check_kwargs(DENOISERS[dm.arch], dm.kwargs, "train.diffusion.kwargs",
                 ("dim", "tokens", "conditioned", "global_tokens"))
    if ae.kwargs.get("global_dim") and not dm.standardise_latents:
        raise ConfigError("train.diffusion.standardise_latents=false with a global latent (train.autoencoder.kwargs."
                          "global_dim): its coordinates spread far beyond the noise the sampler starts from; "
                          "standardise the latents or set global_dim: 0 (and train.diffusion.global_steps: 0)")
    if dm.global_steps and not (ae.arch == "tokens" and ae.kwargs.get("global_dim")):
        raise ConfigError(f"train.diffusion.global_steps={dm.global_steps} trains a denoiser for the global latent, "
                          "which only the tokens autoencoder with a global_dim has: set train.autoencoder.kwargs."
                          "global_dim (and arch tokens), or global_steps: 0")
    if (ae.arch == "tokens") != (dm.arch in TOKEN_DENOISERS):
        raise ConfigError(f"train.autoencoder.arch={ae.arch} with train.diffusion.arch={dm.arch}: token latents "
                          "[T, c] need a token denoiser; set both to tokens / transformer, or neither")
    for key, section, arch in (("train.autoencoder", ae, "tokens"), ("train.diffusion", dm, "transformer")):
        if section.tokens_per_step and section.arch != arch:
            raise ConfigError(f"{key}.tokens_per_step={section.tokens_per_step} crops token sequences, which "
                              f"{key}.arch={section.arch} does not have: set it to 0, or use arch {arch}")
    window = dm.kwargs.get("window", inspect.signature(DENOISERS[dm.arch]).parameters["window"].default
                           ) if dm.arch == "transformer" else 1
    if not isinstance(window, int) or window < 1:
        raise ConfigError(f"train.diffusion.kwargs.window={window!r}: a window is a whole number of tokens, 1 or "
                          "more (tokens attend within it)")
    if dm.tokens_per_step % window:
        raise ConfigError(f"train.diffusion.tokens_per_step={dm.tokens_per_step} is not a multiple of the "
                          f"transformer's window ({window}): give a multiple, so a crop is whole windows")
    if dm.condition != "none" and dm.arch in TOKEN_DENOISERS:
        raise ConfigError(f"train.diffusion.condition={dm.condition} with train.diffusion.arch={dm.arch}: the "
                          "transformer denoiser takes no condition yet; use the mlp or conv1d denoiser")
    # Built on the meta device (no memory); the autoencoder at a nominal D, since D needs the model.
    try_build(lambda: build_autoencoder(ae.arch, 64, latent_dim=ae.latent_dim, **ae.kwargs),
              "train.autoencoder.kwargs", ae.kwargs)
    tokens = 4 if dm.arch in TOKEN_DENOISERS else None  # a nominal T, like the nominal D
    try_build(lambda: build_denoiser(dm.arch, ae.latent_dim, tokens, **dm.kwargs), "train.diffusion.kwargs", dm.kwargs)
    if config.data.name == "imagefolder" and config.data.image_size:
        _check_image_size(config)


def _check_image_size(config: Config) -> None:
    """An image folder resized to data.image_size must survive the model's poolings, checked before any image
    is decoded (`pdiff.tasks.models.input_problem`)."""
    size, m = config.data.image_size, config.model
    problem = input_problem(m.name, m.kwargs, (3, size, size))
    if problem:
        raise ConfigError(f"data.image_size={size} is too small for model.name={m.name} ({problem}): "
                          "give a larger data.image_size")


def try_build(build: Callable[[], Any], key: str, kwargs: dict[str, Any], device: str | None = "meta") -> Any:
    """`build()` on `device` (None: the default), with a constructor's own error (a bad size in `kwargs`, say)
    as a ConfigError naming `key`. On "meta" it is a dry run that allocates nothing.

    Without kwargs there is nothing of the user's to check, and an error is pdiff's own bug (a traceback).
    """
    if not kwargs:
        return build() if device is None else None
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return build()
    except NotImplementedError:  # an op the meta device lacks: nothing learnt, the real build will tell
        return None
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError, IndexError) as e:
        raise ConfigError(f"{key}={kwargs} cannot build the network ({_first_line(e)}): fix {key}") from None


def check_kwargs(factory: Callable, kwargs: dict[str, Any], key: str, set_elsewhere: tuple[str, ...]) -> None:
    """Raise ConfigError naming `key` if `kwargs` holds an argument that `factory` does not take from it."""
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # the factory passes its kwargs on (timm models): the library it calls checks them
    accepted = [name for name in parameters if name not in set_elsewhere]
    for name in kwargs:
        if name not in accepted:
            spaced = str(name).partition(":")
            hint = (f" (YAML reads '{name}' as one key: write {{{spaced[0]}: {spaced[2]}}} with a space after the "
                    "colon)" if spaced[1] and spaced[0] in accepted else "")
            raise ConfigError(f"{key} has {name!r}, which {factory.__name__} does not take{hint}: "
                              f"choose from {', '.join(accepted)}")


def parse_target(target: str | float, key: str = "generate.target") -> tuple[str, float]:
    """A target accuracy as ("accuracy", fraction in [0, 1]) or ("percentile", 0 to 100) of the training
    checkpoints' validation accuracies: "0.98" or 0.98, "max" (q100), "median" (q50), "min" (q0), "q90"."""
    text = str(target).strip().lower()
    if text in TARGET_PERCENTILES:
        return "percentile", TARGET_PERCENTILES[text]
    if match := re.fullmatch(r"q(\d+(?:\.\d*)?)", text):
        percentile = float(match.group(1))
        if percentile > 100:
            raise ConfigError(f"{key}={target}: a percentile runs from q0 to q100")
        return "percentile", percentile
    try:
        fraction = float(text)
    except ValueError:
        raise ConfigError(f"{key}={target!r} is not a target: give a validation accuracy as a fraction (0.98) or "
                          f"one of {', '.join(TARGET_PERCENTILES)}, qNN (the NN-th percentile)") from None
    if not 0 <= fraction <= 1:
        raise ConfigError(f"{key}={target} is outside [0, 1]: give the accuracy as a fraction, e.g. 0.98 for 98%")
    return "accuracy", fraction


def _validate_conditioning(dm: DiffusionConfig, cfg: GenerateConfig) -> None:
    if not 0 <= dm.p_uncond <= 1:
        raise ConfigError(f"train.diffusion.p_uncond={dm.p_uncond} is a probability: set it in [0, 1]")
    if cfg.target is None:
        if cfg.guidance != 0:
            raise ConfigError(f"generate.guidance={cfg.guidance} steers towards generate.target: set a target too "
                              "(e.g. generate.target=max)")
        return
    parse_target(cfg.target)
    if dm.condition == "none":
        raise ConfigError(f"generate.target={cfg.target} needs a generator conditioned on accuracy: add "
                          "train.diffusion.condition=accuracy")
    if cfg.guidance != 0 and dm.p_uncond == 0:
        raise ConfigError(f"generate.guidance={cfg.guidance} needs the unconditional model, which "
                          "train.diffusion.p_uncond=0 never trains: set p_uncond above 0 or guidance=0")


def _validate_baselines(cfg: EvaluateConfig) -> None:
    unknown = [b for b in cfg.baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"evaluate.baselines: unknown {unknown[0]!r}: choose from {', '.join(BASELINES)}")
    if cfg.baseline_n is not None and cfg.baseline_n <= 0:
        raise ConfigError(f"evaluate.baseline_n={cfg.baseline_n} must be positive (or null: as many as generated)")
    if any(s <= 0 for s in cfg.noise_strengths) or ("noise" in cfg.baselines and not cfg.noise_strengths):
        raise ConfigError(f"evaluate.noise_strengths={cfg.noise_strengths}: give one or more positive strengths")
    if cfg.finetune_lr is not None and cfg.finetune_lr <= 0:
        raise ConfigError(f"evaluate.finetune_lr={cfg.finetune_lr} must be positive (or null: collect.subset_lr)")


def to_dict(config: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict's leaves by dotted key: {"a": {"b": 1}} -> {"a.b": 1}; an empty dict stays a leaf."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_yaml(config: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def stage_hash(config: Config, stage: str) -> str:
    """Hash of every config value that `stage` and the stages before it depend on."""
    flat = to_dict(config)
    sections = [s for name in STAGES[: STAGES.index(stage) + 1] for s in _STAGE_SECTIONS[name]]
    return _digest({section: _hashed(flat, section) for section in sections})


def base_hash(config: Config) -> str:
    """Hash of what the trained base model depends on: seed, data, model and collect's base-training fields."""
    flat = to_dict(config)
    chosen = {section: _hashed(flat, section) for section in ("seed", "data", "model")}
    chosen["collect"] = {key: flat["collect"][key] for key in _BASE_FIELDS}
    return _digest(chosen)


def _hashed(flat: dict, section: str) -> Any:
    value = flat[section]
    if isinstance(value, dict):
        skipped = _NOT_HASHED.get(section, ())
        if section == "data" and value["name"] == "imagefolder":
            skipped = ("download",)  # the folder is the dataset: another folder must not reuse this one's stages
            value = {**value, "data_dir": str(resolve_data_dir(value["data_dir"]))}  # one folder, however written
        value = {k: v for k, v in value.items() if k not in skipped}
        for key, inert, dropped in _LATER_KEYS:
            if key.startswith(f"{section}.") and _get(flat, key) == inert:
                for name in dropped:
                    value = _drop(value, name.partition(".")[2])
    return value


def _drop(tree: dict, key: str) -> dict:
    """A copy of `tree` without the nested `key` ('diffusion.p_uncond')."""
    head, _, rest = key.partition(".")
    return {k: _drop(v, rest) if rest and k == head else v for k, v in tree.items() if rest or k != head}


def _digest(chosen: dict) -> str:
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def _get(flat: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        flat = flat[part]
    return flat


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0]
