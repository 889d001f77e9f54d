"""Configs: one dataclass per stage, YAML task presets, `key=value` overrides, validation.

The defaults reproduce the paper (docs/design.md, "Following the paper"); a task preset in `tasks/presets/*.yaml`
overrides what its dataset and hardware need, and the command line overrides both.
Each field carries its rules (`setting(default, *rules)`, see pdiff.rules), which `validate` runs in field
order, and how the config hash treats it (pdiff.hashing); the rules between the generator's networks read their
registry entries' attributes, so a new network does not change this module.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import rules
from .autoencoder import AUTOENCODERS
from .checkpoints import TRAJECTORY_SPLITS
from .denoisers import DENOISERS
from .diffusion import SAMPLERS
from .distributed import PRECISIONS, resolve_device
from .errors import ConfigError
from .layout import resolve_data_dir
from .priors import PRIORS
from .rules import AT_LEAST_0, FRACTION, OPEN_FRACTION, REAL_ABOVE_0, REAL_AT_LEAST_0, ensure, one_of, positive, setting
from .tasks.datasets import DATASETS
from .tasks.models import MODEL_ARGUMENTS, MODELS, input_problem

PRESETS_DIR = Path(__file__).parent / "tasks" / "presets"
TASK_NAME = re.compile(r"[^./\\\x00-\x1f][^/\\\x00-\x1f]*")  # one folder name: no separator, not hidden
RECIPES = ("epoch", "iteration")  # collection: see pdiff.collect
# The baselines (pdiff.baselines) in their results.json order; "ensemble" comes before "generated".
BASELINES = ("ensemble", "noise", "finetune", "mean_of_k", "gaussian", "interpolation")
# Those evaluated unless evaluate.baselines says otherwise: interpolation is asked for by name, as it serves the
# held-out test (docs/memorization.md) and adding it here would make every finished run evaluate again.
DEFAULT_BASELINES = ("ensemble", "noise", "finetune", "mean_of_k", "gaussian")
# Where the held-out checkpoints come from: one trajectory split in two (pdiff.checkpoints), or "run", a second,
# independent collection from the same base model (pdiff.train).
HOLDOUT_SPLITS = (*TRAJECTORY_SPLITS, "run")


@dataclass
class DataConfig:
    name: str = setting("mnist1d", one_of(DATASETS, known=True))
    # None: $PDIFF_DATA, else ~/.cache/pdiff/data. Where the data lives changes no result, except for an image
    # folder, which is the dataset: another folder must not reuse this one's stages (however its path is written).
    data_dir: str | None = setting(None, hashed=lambda data: data.name == "imagefolder",
                                   hash_as=lambda path: str(resolve_data_dir(path)))
    download: bool = setting(True, hashed=False)  # fetch a missing torchvision dataset (needs internet)
    val_size: int = setting(1000, positive())  # held out of the training data; every choice is made on it, not test
    augment: bool = True  # the dataset's usual training augmentation (crop + flip for CIFAR/STL-10; none for MNIST)
    num_samples: int = setting(10000, positive())  # mnist1d only: samples generated (80% train, 20% test)
    # imagefolder only: resize + centre-crop to N x N; None: keep the size
    image_size: int | None = setting(None, positive(": set it to 1 or more, or null to keep the images' size"))
    batch_size: int = setting(128, positive())
    eval_batch_size: int = setting(1000, positive())


@dataclass
class ModelConfig:
    name: str = setting("convnet1d", one_of(MODELS, known=True))
    kwargs: dict[str, Any] = setting({}, rules.sizes, lambda key, kwargs, c: rules.check_kwargs(
        MODELS[c.model.name], kwargs, key, MODEL_ARGUMENTS), lambda key, kwargs, c: _takes_the_images(c))


@dataclass
class CollectConfig:
    epochs: int = setting(30, AT_LEAST_0)  # base training: SGD with cosine decay from lr
    lr: float = setting(0.1, REAL_ABOVE_0)
    momentum: float = setting(0.9, FRACTION)
    weight_decay: float = setting(5e-4, REAL_AT_LEAST_0)
    subset: list[str] = setting(["last_norm:2"], ensure(  # glob patterns, "last_norm:N" or "all"
        lambda s, c: bool(s), "collect.subset is empty: give glob patterns, 'last_norm:N' or 'all'"))
    k: int = setting(200, positive())  # checkpoints of the subset to save
    # "epoch": one per epoch at a small SGD lr (v1); "iteration": one per step (v2)
    recipe: str = setting("epoch", one_of(RECIPES))
    subset_lr: float = setting(0.001, REAL_ABOVE_0)  # v1: the base schedule's final small lr; v2: AdamW lr (BN: 0.03)
    subset_weight_decay: float = setting(5e-4, REAL_AT_LEAST_0)


@dataclass
class AutoencoderConfig:
    # "conv1d" (the paper's), "mlp" or "tokens" (large D; pair it with diffusion "transformer")
    arch: str = setting("conv1d", one_of(AUTOENCODERS))
    latent_dim: int = setting(64, positive(), ensure(  # tokens: the latent channels per token
        lambda v, c: v >= 2, "{key}={value} is too small: set it to 2 or more (the report projects the latents "
        "onto two axes; the paper: 64)"))
    input_noise: float = setting(0.001, AT_LEAST_0, REAL_AT_LEAST_0)
    latent_noise: float = setting(0.1, AT_LEAST_0, REAL_AT_LEAST_0)
    # How checkpoints are standardised before the autoencoder (pdiff.params.Normalizer): "tensor" (the paper's,
    # each tensor's mean and std) or "deviation" (each number's mean over the checkpoints, each tensor's spread
    # around it: whole networks, whose checkpoints differ too little in "tensor" units for the MSE to see it).
    standardise: str = setting("tensor", one_of(("tensor", "deviation")), inert="tensor")
    kwargs: dict[str, Any] = setting({}, rules.sizes)  # arch-specific: mlp hidden, conv1d channels
    steps: int = setting(30000, positive())
    batch_size: int = setting(200, positive())
    lr: float = setting(1e-3, REAL_ABOVE_0)
    weight_decay: float = setting(2e-6, REAL_AT_LEAST_0)
    # tokens: train each step on a random crop of this many tokens of the sequence (0: all of them, as before the
    # key existed), so that a step's cost does not grow with D; the crop is the same for every model of the batch.
    tokens_per_step: int = setting(0, AT_LEAST_0, inert=0)


@dataclass
class DiffusionConfig:
    arch: str = setting("conv1d", one_of(DENOISERS))
    kwargs: dict[str, Any] = setting({}, rules.sizes)
    # transformer: train on crops of this many tokens (a multiple of the window; 0: all, as before the key existed)
    tokens_per_step: int = setting(0, AT_LEAST_0, inert=0)
    # With a global latent (train.autoencoder.kwargs.global_dim): train an MLP denoiser of its own for it, this many
    # steps, and the transformer on the other tokens given it; 0: the transformer draws the global latent too.
    global_steps: int = setting(0, AT_LEAST_0, inert=0)
    num_train_timesteps: int = setting(1000, positive(), ensure(lambda v, c: v >= 2, "{key}={value} is too few "
                                       "for a noise schedule: set it to 2 or more (the paper: 1000)"))
    beta_start: float = setting(1e-4, OPEN_FRACTION)
    beta_end: float = setting(2e-2, OPEN_FRACTION, ensure(
        lambda v, c: c.train.diffusion.beta_start <= v, "train.diffusion.beta_start={c.train.diffusion.beta_start} "
        "is above beta_end={value}: the noise schedule must rise; swap them (the paper: 1e-4 to 2e-2)"))
    steps: int = setting(30000, positive())
    batch_size: int = setting(200, positive())
    lr: float = setting(1e-3, REAL_ABOVE_0)
    weight_decay: float = setting(2e-6, REAL_AT_LEAST_0)
    # sampling uses this EMA of the denoiser; 0: its raw weights (the official v2 code)
    ema_decay: float = setting(0.999, ensure(lambda v, c: 0 <= v < 1, "{key}={value} must be in [0, 1): e.g. "
                                             "0.999, or 0 to sample the raw denoiser weights"))
    # Latents shifted and scaled to unit spread before diffusion (the DDPM's prior is N(0, 1)); false: raw
    # encoder outputs, as the official code (their spread then sets how far the prior reaches past the data).
    standardise_latents: bool = setting(True, inert=True)
    # "none" (the paper's) or "accuracy": condition the denoiser on each checkpoint's validation accuracy,
    # dropped with probability p_uncond so the same network is also unconditional (classifier-free guidance).
    # Unconditioned, p_uncond does nothing.
    condition: str = setting("none", one_of(("none", "accuracy")), inert="none", drops=("p_uncond",))
    p_uncond: float = setting(0.1, ensure(lambda v, c: 0 <= v <= 1, "{key}={value} is a probability: set it in "
                                          "[0, 1]"))
    # The latent prior family, a name in pdiff.priors.PRIORS: "auto" the DDPM prior that fits the latents (flat,
    # tokens, or factorised with global_steps), as before the key existed.
    prior: str = setting("auto", one_of(PRIORS), inert="auto")


@dataclass
class TrainConfig:
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    health_tolerance: float = 0.05  # stop if reconstructions lose more mean val accuracy than this
    # The held-out family, train.holdout*: H checkpoints the generator never sees, to test whether it generalises
    # (docs/memorization.md; 0: the paper's protocol, none). holdout_split: "interleaved" holds out every (K/H)-th
    # of the collection, "last" its final H, "run" H checkpoints (every (K/H)-th) of a second collection of K from
    # the same base model whose batches are drawn with holdout_seed (None: the run's seed + 1); the generator then
    # learns all K of the first.
    holdout: int = setting(0, AT_LEAST_0)
    holdout_split: str = setting("interleaved", one_of(HOLDOUT_SPLITS), lambda key, split, c: _enough_left(
        c.train.holdout, split, c.collect.k))
    holdout_seed: int | None = setting(None, ensure(lambda v, c: v is None or c.train.holdout_split == "run",
                                       "{key}={value} seeds the second collection of train.holdout_split=run: set "
                                       "that split, or leave {key} null"),
                                       lambda key, seed, c: seed is None or rules.SEED(key, seed, c), inert=None)
    # the generator's initialisation and training noise; None: the run's seed (hashed already)
    seed: int | None = setting(None, inert=None)
    # Generators trained (seeds seed, seed + 1, ...): with 2 or more, verdicts speak for the method (p-diff on
    # this task) instead of one trained generator. One is what every run trained before the key existed.
    generators: int = setting(1, positive(), inert=1)


@dataclass
class GenerateConfig:
    n: int = setting(200, positive(), ensure(lambda n, c: n >= c.train.generators, "{key}={value} leaves some of "
                     "the train.generators={c.train.generators} generators without a model: ask for at least as many "
                     "models"))
    sampler: str = setting("ddpm", one_of(SAMPLERS))  # "ddpm", "ddim" or "dpm"
    steps: int | None = setting(None, positive(": set it to 1 or more, or null for all"), ensure(  # None: all
        lambda v, c: v is None or v <= c.train.diffusion.num_train_timesteps, "{key}={value} is more than the "
        "{c.train.diffusion.num_train_timesteps} timesteps the diffusion model is trained on: set it to "
        "1..{c.train.diffusion.num_train_timesteps}, or null for all"))
    # With train.diffusion.condition=accuracy: the validation accuracy to ask for, a fraction ("0.98") or
    # max, median, min or qNN (the NN-th percentile) of the training checkpoints'; None: unconditional
    # (then guidance does nothing).
    target: str | None = setting(None, lambda key, t, c: _conditioned_for(t, c), inert=None, drops=("guidance",))
    guidance: float = setting(0.0, AT_LEAST_0, ensure(  # classifier-free guidance w: (1 + w) eps_cond - w eps_uncond
        lambda w, c: w == 0 or c.generate.target is not None, "{key}={value} steers towards generate.target: set "
        "a target too (e.g. generate.target=max)"), ensure(
        lambda w, c: w == 0 or c.train.diffusion.p_uncond != 0, "{key}={value} needs the unconditional model, "
        "which train.diffusion.p_uncond=0 never trains: set p_uncond above 0 or guidance=0"))


@dataclass
class EvaluateConfig:
    # vector models evaluated together (vmap): changes no result
    model_chunk: int = setting(50, positive(), hashed=False)
    # Baselines evaluated beside the generated models (see BASELINES); whatever the order given here, results.json
    # holds original, ensemble, generated, noise@<s> per strength, finetune, mean_of_k, gaussian, interpolation.
    baselines: list[str] = setting(list(DEFAULT_BASELINES), rules.each_of(BASELINES))
    # models per baseline group; None: as many as generated
    baseline_n: int | None = setting(None, positive(" (or null: as many as generated)"))
    noise_strengths: list[float] = setting([0.001, 0.05, 0.15], ensure(  # std, standardised units
        lambda s, c: all(x > 0 for x in s) and (s or "noise" not in c.evaluate.baselines),
        "{key}={value}: give one or more positive strengths"))
    finetune_steps: int = setting(10, AT_LEAST_0)  # more AdamW steps on the subset from a checkpoint
    finetune_lr: float | None = setting(None, positive(" (or null: collect.subset_lr)"))  # None: collect.subset_lr
    mean_of_k: int = setting(16, positive())  # checkpoints per average (Zeng et al. 2025); at most collect.k are used


@dataclass
class Config:
    task: str = setting("custom", lambda key, task, c: check_task_name(task))
    description: str = ""
    hardware: str = "cpu"  # what the preset is sized for
    seed: int = setting(0, rules.SEED)
    device: str = setting("auto", lambda key, device, c: resolve_device(device))  # "auto", "cpu", "cuda:1", ...
    # training: "no" (float32), "bf16", "fp16"; "auto": bf16 on a GPU with bf16, else no
    precision: str = setting("auto", one_of(PRECISIONS))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


STAGES = ("collect", "train", "generate", "evaluate", "report")


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
            close = difflib.get_close_matches(full, config_keys(), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else "; `pdiff tasks --keys` lists them"
            raise ConfigError(f"unknown config key {full!r} in {source}{hint}")
        if key != "kwargs" and isinstance(value, DictConfig) and isinstance(schema[key], DictConfig):
            _check_keys(value, schema[key], source, prefix=f"{full}.")


def config_keys(node: DictConfig | None = None, prefix: str = "") -> list[str]:
    """Every settable key (of `node`, else of the whole config), e.g. 'train.diffusion.steps'."""
    keys = []
    for key, value in (OmegaConf.structured(Config) if node is None else node).items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, DictConfig) and key != "kwargs":
            keys.extend(config_keys(value, f"{prefix}{key}."))
    return keys


def validate(config: Config) -> None:
    """Check what the types cannot: every field's rules, in field order, then the rules between the generator's
    networks. Raises a ConfigError naming the key and the fix."""
    rules.check_fields(config, config)
    rules.check_networks(config.train.autoencoder, config.train.diffusion)


def check_task_name(task: str) -> None:
    """A task name is one folder name (RUNS_DIR/<task>/): not empty, not hidden, no path separator."""
    if not TASK_NAME.fullmatch(task) or task.strip() != task:
        raise ConfigError(f"task={task!r} is not a plain name (it names the run folder RUNS_DIR/<task>/): use "
                          "letters, digits, '-', '_' and '.', not starting with '.', e.g. task=my-run")


def _enough_left(holdout: int, split: str, k: int) -> None:
    """A trajectory split leaves the generator 2 checkpoints or more; "run" takes at most K of the second one."""
    if holdout == 1:
        raise ConfigError("train.holdout=1: the held-out test compares each held-out checkpoint with the others "
                          "(leave-one-out): hold out 2 or more, or 0")
    if split == "run" and holdout > k:
        raise ConfigError(f"train.holdout={holdout} with train.holdout_split=run takes more than the collect.k={k} "
                          f"checkpoints of the second collection: hold out at most {k}")
    if split != "run" and holdout and holdout > k - 2:  # K=1 without a holdout is fine
        raise ConfigError(f"train.holdout={holdout} leaves fewer than 2 of the collect.k={k} checkpoints to "
                          f"train on: hold out at most {k - 2}")


def _takes_the_images(config: Config) -> None:
    """An image folder resized to data.image_size must pass the model's poolings (`tasks.models.input_problem`)."""
    size, m = config.data.image_size, config.model
    if config.data.name == "imagefolder" and size and (problem := input_problem(m.name, m.kwargs, (3, size, size))):
        raise ConfigError(f"data.image_size={size} is too small for model.name={m.name} ({problem}): "
                          "give a larger data.image_size")


def _conditioned_for(target: str | None, config: Config) -> None:
    if target is not None:
        rules.parse_target(target)
        if config.train.diffusion.condition == "none":
            raise ConfigError(f"generate.target={target} needs a generator conditioned on accuracy: add "
                              "train.diffusion.condition=accuracy")


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


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0]
