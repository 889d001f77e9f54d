"""The config schema: one dataclass per stage, its fields' rules and help, and `validate`.

The defaults reproduce the paper (docs/design.md, "Following the paper"); a task preset in `tasks/presets/*.yaml`
overrides what its dataset and hardware need, and the command line overrides both (pdiff.presets reads them).
Each field carries its rules and its help (`setting(default, *rules, help=...)`, see pdiff.rules), which
`validate` runs in field order and `pdiff show` prints, and how the config hash treats it (pdiff.hashing); the
rules between the generator's networks read their registry entries' attributes, so a new network does not change
this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from . import checkpoint_files, rules
from .adapters import lora_config
from .alignment import PERMUTATION_GROUPS
from .autoencoder import AUTOENCODERS
from .checkpoints import TRAJECTORY_SPLITS
from .denoisers import DENOISERS
from .diffusion import SAMPLERS
from .distributed import PRECISIONS, resolve_device
from .errors import ConfigError
from .layout import resolve_data_dir
from .priors import PRIORS
from .priors.flow import FLOW_SAMPLERS
from .rules import AT_LEAST_0, FRACTION, OPEN_FRACTION, REAL_ABOVE_0, REAL_AT_LEAST_0, ensure, one_of, positive, setting
from .tasks.datasets import DATASETS
from .tasks.imported import is_import_path, resolve, source_digest
from .tasks.models import MODEL_ARGUMENTS, MODELS, input_problem, model_factory

TASK_NAME = re.compile(r"[^./\\\x00-\x1f][^/\\\x00-\x1f]*")  # one folder name: no separator, not hidden
RECIPES = ("epoch", "iteration")  # collection: see pdiff.collect
FAMILIES = ("latent_diffusion", "flow")  # train.family: see pdiff.families
ALIGNMENTS = ("none", "weights")  # collect.align: see pdiff.alignment
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
    name: str = setting("mnist1d", lambda key, name, c: _known_dataset(name), hash_as=lambda name: _identity(
        name, "data.name"), help="the dataset: a registry name (imagefolder: your own images, "
                          "DATA_DIR/train/<class>/* and DATA_DIR/test/<class>/*) or your own "
                          "package.module:factory (hashed with its module's source)")
    pretrain: str | None = setting(None, lambda key, name, c: name is None or one_of(DATASETS, known=True)(
        key, name, c), inert=None, help="the dataset base training learns first, when it is another than "
        "data.name (e.g. upright digits for mnist-rot90's turned ones); null: data.name itself")
    # Where the data lives changes no result, except for an image folder, which is the dataset: another folder
    # must not reuse this one's stages (however its path is written).
    data_dir: str | None = setting(None, hashed=lambda data: data.name == "imagefolder",
                                   hash_as=lambda path: str(resolve_data_dir(path)),
                                   help="the dataset folder (--data-dir); null: $PDIFF_DATA, else ~/.cache/pdiff/data")
    download: bool = setting(True, hashed=False, help="fetch a missing torchvision dataset (needs a network)")
    val_size: int | float = setting(1000, positive(), ensure(
        lambda v, c: isinstance(v, int) or v < 1, "{key}={value} is neither a count nor a fraction: give a whole "
        "number of examples (200) or a fraction of the training data below 1 (0.1)", "a count, or a fraction < 1"),
        help="held out of the training data as the validation split, which makes every choice (never the test "
             "split): a number of examples, or a fraction of them (0.1)")
    augment: bool = setting(True, help="the dataset's usual training augmentation (crop + flip for CIFAR, STL-10 "
                                       "and image folders; none for MNIST)")
    num_samples: int = setting(10000, positive(), help="mnist1d only: samples generated (80% train, 20% test)")
    image_size: int | None = setting(None, positive(": set it to 1 or more, or null to keep the images' size"),
                                     help="imagefolder only: resize and centre-crop to N x N; null keeps the size")
    batch_size: int = setting(128, positive(), help="training batch of the base model and the checkpoints")
    eval_batch_size: int = setting(1000, positive(), help="batch when evaluating models (changes no result)")


@dataclass
class ModelConfig:
    name: str = setting("convnet1d", lambda key, name, c: model_factory(name), hash_as=lambda name: _identity(
        name, "model.name"), help="the classifier's architecture: a registry name (docs/configuration.md, "
                                  "Architectures), any timm architecture, or your own package.module:factory")
    kwargs: dict[str, Any] = setting({}, rules.sizes, lambda key, kwargs, c: rules.check_kwargs(
        model_factory(c.model.name), kwargs, key, MODEL_ARGUMENTS), lambda key, kwargs, c: _takes_the_images(c),
        help="the architecture's constructor arguments, e.g. {channels: [32, 64]}")
    peft: dict[str, Any] | None = setting(None, lambda key, kwargs, c: kwargs is None or lora_config(kwargs, key),
                                          inert=None, help="the keyword arguments of peft.LoraConfig (e.g. "
                                          "{target_modules: [qkv], r: 4}): the trained model is wrapped with these "
                                          "LoRA adapters, which collect.subset=[adapters] generates; null: none")


@dataclass
class CollectConfig:
    epochs: int = setting(30, AT_LEAST_0, help="base training epochs: SGD with cosine decay from collect.lr")
    lr: float = setting(0.1, REAL_ABOVE_0, help="base training's starting learning rate")
    momentum: float = setting(0.9, FRACTION, help="base training's SGD momentum")
    weight_decay: float = setting(5e-4, REAL_AT_LEAST_0, help="base training's weight decay")
    subset: list[str] = setting(["last_norm:2"], ensure(
        lambda s, c: bool(s), "collect.subset is empty: give glob patterns, 'last_norm:N' or 'all'", "not empty"),
        ensure(lambda s, c: c.model.peft is None or "adapters" in s, "model.peft adds LoRA adapters, which "
               "{key}={value} leaves out: set collect.subset=[adapters] (the adapters are what the run generates)"),
        help="the generated parameters: glob patterns over parameter names, 'last_norm:N' (the last N norm "
             "layers), 'all', or 'adapters' (with model.peft)")
    k: int = setting(200, positive(), help="checkpoints of the subset to save (K)")
    recipe: str = setting("epoch", one_of(RECIPES), help="epoch: one checkpoint per epoch at a small SGD lr (the "
                          "paper's v1); iteration: one per AdamW step (v2)")
    subset_lr: float = setting(0.001, REAL_ABOVE_0, help="learning rate while collecting: v1 the base schedule's "
                               "final small lr; v2 the AdamW lr")
    subset_weight_decay: float = setting(5e-4, REAL_AT_LEAST_0, help="weight decay while collecting")
    # Written collect.from (`from_` in Python). The hash takes each file's digest, so a changed file reruns what
    # depends on it.
    from_: str | None = setting(None, lambda key, glob, c: glob is None or checkpoint_files.find(glob, key),
                                inert=None, hash_as=lambda glob: checkpoint_files.identity(glob, "collect.from"),
                                help="existing checkpoints instead of collecting: a glob of state_dict files or "
                                     "model folders, read in natural order; K is how many it matches")
    state_dict_key: str | None = setting(None, inert=None, help="the entry of a .pt / .pth file that holds the "
                                         "state_dict, for files saved as {model: ..., epoch: ...}")
    base: str | None = setting(None, lambda key, path, c: path is None or checkpoint_files.find_one(path, key),
                               inert=None, hash_as=lambda path: checkpoint_files.digest(
                                   checkpoint_files.find_one(path, "collect.base"), "collect.base"),
                               help="your trained model (a state_dict file or model folder) as the base; null: "
                                    "pdiff trains it, or with collect.from the first checkpoint is the base")
    runs: int = setting(1, positive(), ensure(lambda r, c: c.collect.k % r == 0, "collect.k={c.collect.k} is not "
                        "divisible by {key}={value}: give a k that is a multiple of the runs"), ensure(
        lambda r, c: r == 1 or c.collect.subset == ["all"], "{key}={value} collects whole networks of independent "
                        "runs: set collect.subset=[all]"), inert=1,
                        help="independent training runs (bases from seeds seed, seed + 1, ...), each collecting "
                             "k / runs checkpoints of the whole network, BatchNorm statistics folded in")
    align: str = setting("none", one_of(ALIGNMENTS), ensure(lambda a, c: a == "none" or c.collect.runs > 1,
                         "{key}={value} aligns independent runs: set collect.runs to 2 or more"), ensure(
        lambda a, c: a == "none" or MODELS.get(c.model.name) in PERMUTATION_GROUPS, "{key}={value} knows the "
        "permutation groups of mlp, convnet1d, convnet3 and cifar_resnet18, not of model.name={c.model.name}: "
        "set collect.align=none"), inert="none",
        help="weights: permute every run's checkpoints into run 0's basis by weight matching (Git Re-Basin); none")


@dataclass
class AutoencoderConfig:
    arch: str = setting("conv1d", one_of(AUTOENCODERS), help="conv1d (the paper's), mlp, or tokens for large D "
                        "(pair it with the transformer denoiser)")
    latent_dim: int = setting(64, positive(), ensure(
        lambda v, c: v >= 2, "{key}={value} is too small: set it to 2 or more (the report projects the latents "
        "onto two axes; the paper: 64)", ">= 2"), help="latent size (tokens: the latent channels per token)")
    input_noise: float = setting(0.001, AT_LEAST_0, REAL_AT_LEAST_0, help="noise added to the autoencoder's "
                                 "input while training (the paper's)")
    latent_noise: float = setting(0.1, AT_LEAST_0, REAL_AT_LEAST_0, help="noise added to the latents while "
                                  "training (the paper's)")
    # "deviation" suits whole networks, whose checkpoints differ too little in "tensor" units for the MSE to see it.
    standardise: str = setting("tensor", one_of(("tensor", "deviation")), inert="tensor",
                               help="how checkpoints are standardised: tensor (the paper's: each tensor's mean "
                                    "and std) or deviation (each number's mean, each tensor's spread around it)")
    kwargs: dict[str, Any] = setting({}, rules.sizes, help="the arch's own arguments: mlp hidden, conv1d channels")
    steps: int = setting(30000, positive(), help="training steps")
    batch_size: int = setting(200, positive(), help="checkpoints per step (at most K are used)")
    lr: float = setting(1e-3, REAL_ABOVE_0, help="AdamW learning rate")
    weight_decay: float = setting(2e-6, REAL_AT_LEAST_0, help="AdamW weight decay")
    # The crop is the same for every model of the batch; 0 is how every run trained before the key existed.
    tokens_per_step: int = setting(0, AT_LEAST_0, inert=0, help="tokens: train each step on a random crop of "
                                   "this many tokens, so a step's cost does not grow with D (0: all)")


@dataclass
class DiffusionConfig:
    arch: str = setting("conv1d", one_of(DENOISERS), help="the latent denoiser: conv1d (the paper's), mlp, or "
                        "transformer (with the tokens autoencoder)")
    kwargs: dict[str, Any] = setting({}, rules.sizes, help="the arch's own arguments")
    tokens_per_step: int = setting(0, AT_LEAST_0, inert=0, help="transformer: train on crops of this many tokens "
                                   "(a multiple of the window; 0: all)")
    global_steps: int = setting(0, AT_LEAST_0, inert=0, help="with a global latent (train.autoencoder.kwargs."
                                "global_dim): steps of its own MLP denoiser, the transformer drawing the other "
                                "tokens given it; 0: the transformer draws it too")
    num_train_timesteps: int = setting(1000, positive(), ensure(lambda v, c: v >= 2, "{key}={value} is too few "
                                       "for a noise schedule: set it to 2 or more (the paper: 1000)", ">= 2"),
                                       help="timesteps of the noise schedule")
    beta_start: float = setting(1e-4, OPEN_FRACTION, help="the noise schedule's first beta (linear schedule)")
    beta_end: float = setting(2e-2, OPEN_FRACTION, ensure(
        lambda v, c: c.train.diffusion.beta_start <= v, "train.diffusion.beta_start={c.train.diffusion.beta_start} "
        "is above beta_end={value}: the noise schedule must rise; swap them (the paper: 1e-4 to 2e-2)",
        ">= beta_start"), help="the noise schedule's last beta")
    steps: int = setting(30000, positive(), help="training steps")
    batch_size: int = setting(200, positive(), help="latents per step (at most K are used)")
    lr: float = setting(1e-3, REAL_ABOVE_0, help="AdamW learning rate")
    weight_decay: float = setting(2e-6, REAL_AT_LEAST_0, help="AdamW weight decay")
    ema_decay: float = setting(0.999, ensure(lambda v, c: 0 <= v < 1, "{key}={value} must be in [0, 1): e.g. "
                                             "0.999, or 0 to sample the raw denoiser weights", "[0, 1)"),
                               help="sampling uses this EMA of the denoiser; 0: its raw weights (the official v2 "
                                    "code)")
    # false: raw encoder outputs, as the official code (their spread then sets how far the prior reaches past them)
    standardise_latents: bool = setting(True, inert=True, help="shift and scale the latents to unit spread before "
                                        "diffusion (the DDPM's prior is N(0, 1))")
    condition: str = setting("none", one_of(("none", "accuracy")), inert="none", drops=("p_uncond",),
                             help="none (the paper's) or accuracy: condition on each checkpoint's validation "
                                  "accuracy, for classifier-free guidance (docs/conditioning.md)")
    p_uncond: float = setting(0.1, ensure(lambda v, c: 0 <= v <= 1, "{key}={value} is a probability: set it in "
                                          "[0, 1]", "[0, 1]"),
                              help="with condition=accuracy: how often the condition is dropped, so the same "
                                   "network is also unconditional")
    # "auto" is the prior every run had before the key existed.
    prior: str = setting("auto", one_of(PRIORS), inert="auto", help="the latent prior family (pdiff.priors); auto: "
                         "the DDPM prior that fits the latents (flat, tokens, or factorised with global_steps)")


@dataclass
class TrainConfig:
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    health_tolerance: float = setting(0.05, help="stop if the reconstructed checkpoints lose more mean validation "
                                                 "accuracy than this")
    # The held-out family, train.holdout* (docs/memorization.md): H checkpoints the generator never sees, to test
    # whether it generalises.
    holdout: int = setting(0, AT_LEAST_0, help="checkpoints kept from the generator, to test whether it "
                           "generalises (0: the paper's protocol, none; else 2 or more)")
    holdout_split: str = setting("interleaved", one_of(HOLDOUT_SPLITS), lambda key, split, c: _enough_left(
        c.train.holdout, split, checkpoint_count(c)), help="interleaved: every (K/H)-th checkpoint of the "
        "collection is held out; last: its final H; run: H checkpoints (every (K/H)-th) of a second collection of "
        "K from the same base model, batches drawn with holdout_seed (the generator learns all K of the first)")
    holdout_seed: int | None = setting(None, ensure(lambda v, c: v is None or c.train.holdout_split == "run",
                                       "{key}={value} seeds the second collection of train.holdout_split=run: set "
                                       "that split, or leave {key} null"),
                                       lambda key, seed, c: seed is None or rules.SEED(key, seed, c), inert=None,
                                       help="with holdout_split=run: the second collection's seed (null: the "
                                            "run's seed + 1)")
    holdout_from: str | None = setting(None, lambda key, glob, c: glob is None or checkpoint_files.find(glob, key),
                                       ensure(lambda glob, c: glob is None or not c.train.holdout, "{key} with "
                                              "train.holdout={c.train.holdout}: the held-out checkpoints come from "
                                              "one or the other; set train.holdout=0"),
                                       inert=None, hash_as=lambda glob: checkpoint_files.identity(
                                           glob, "train.holdout_from"),
                                       help="checkpoints from another run of the same training (a glob, read like "
                                            "collect.from) as the held-out set; the generator trains on all K")
    seed: int | None = setting(None, inert=None, help="the generator's initialisation and training noise; null: "
                               "the run's seed")
    # One generator is what every run trained before the key existed.
    generators: int = setting(1, positive(), inert=1, help="generators trained (seeds seed, seed + 1, ...): with 2 "
                              "or more, verdicts speak for p-diff on this task, not one trained generator")
    family: str = setting("latent_diffusion", one_of(FAMILIES), ensure(
        lambda f, c: f == "latent_diffusion" or DENOISERS[c.train.diffusion.arch].latent == "flat",
        "{key}={value} moves flat vectors: set train.diffusion.arch to a flat network (mlp or conv1d)"), ensure(
        lambda f, c: f == "latent_diffusion" or c.train.diffusion.prior in ("auto", "flow"), "{key}={value} has "
        "the flow prior: set train.diffusion.prior=auto"), ensure(
        lambda f, c: f == "latent_diffusion" or c.train.diffusion.condition == "none", "{key}={value} is "
        "unconditioned: set train.diffusion.condition=none"), inert="latent_diffusion",
        help="latent_diffusion (p-diff's: autoencoder + DDPM prior) or flow: flow matching on the standardised "
             "vectors, or on their first train.autoencoder.latent_dim principal axes when that is under D")


@dataclass
class GenerateConfig:
    n: int = setting(200, positive(), ensure(lambda n, c: n >= c.train.generators, "{key}={value} leaves some of "
                     "the train.generators={c.train.generators} generators without a model: ask for at least as many "
                     "models", ">= train.generators"), help="models generated (spread over the generators)")
    sampler: str = setting("ddpm", one_of(SAMPLERS + FLOW_SAMPLERS), lambda key, s, c: _samples_its_prior(s, c),
                           help="ddpm (the paper's), ddim or dpm; a flow (train.family=flow or "
                                "train.diffusion.prior=flow): euler or midpoint")
    steps: int | None = setting(None, positive(": set it to 1 or more, or null for all"), ensure(
        lambda v, c: v is None or v <= c.train.diffusion.num_train_timesteps, "{key}={value} is more than the "
        "{c.train.diffusion.num_train_timesteps} timesteps the diffusion model is trained on: set it to "
        "1..{c.train.diffusion.num_train_timesteps}, or null for all", "<= train.diffusion.num_train_timesteps"),
        help="sampling steps; null: every timestep")
    target: str | None = setting(None, lambda key, t, c: _conditioned_for(t, c), inert=None, drops=("guidance",),
                                 help="with train.diffusion.condition=accuracy: the validation accuracy to ask "
                                      "for, a fraction (0.98) or max, median, min or qNN of the checkpoints'; "
                                      "null: unconditional")
    guidance: float = setting(0.0, AT_LEAST_0, ensure(
        lambda w, c: w == 0 or c.generate.target is not None, "{key}={value} steers towards generate.target: set "
        "a target too (e.g. generate.target=max)"), ensure(
        lambda w, c: w == 0 or c.train.diffusion.p_uncond != 0, "{key}={value} needs the unconditional model, "
        "which train.diffusion.p_uncond=0 never trains: set p_uncond above 0 or guidance=0"),
        help="classifier-free guidance weight w: (1 + w) eps_cond - w eps_uncond (with generate.target)")


@dataclass
class EvaluateConfig:
    model_chunk: int = setting(50, positive(), hashed=False, help="models evaluated together (vmap); changes no "
                                                                  "result")
    # Whatever the order given, results.json holds original, ensemble, generated, noise@<s> per strength,
    # finetune, mean_of_k, gaussian, interpolation.
    baselines: list[str] = setting(list(DEFAULT_BASELINES), rules.each_of(BASELINES), help="the baselines "
                                   "evaluated beside the generated models (docs/memorization.md)")
    baseline_n: int | None = setting(None, positive(" (or null: as many as generated)"),
                                     help="models per baseline group; null: as many as generated")
    noise_strengths: list[float] = setting([0.001, 0.05, 0.15], ensure(
        lambda s, c: all(x > 0 for x in s) and (s or "noise" not in c.evaluate.baselines),
        "{key}={value}: give one or more positive strengths", "each > 0"),
        help="the noise baseline's standard deviations, in standardised units")
    finetune_steps: int = setting(10, AT_LEAST_0, help="the finetune baseline: more AdamW steps on the subset from "
                                                       "a checkpoint")
    finetune_lr: float | None = setting(None, positive(" (or null: collect.subset_lr)"),
                                        help="the finetune baseline's lr; null: collect.subset_lr")
    mean_of_k: int = setting(16, positive(), help="checkpoints per average of the mean_of_k baseline (Zeng et al. "
                                                  "2025); at most collect.k are used")


@dataclass
class Config:
    task: str = setting("custom", lambda key, task, c: check_task_name(task), help="the run's name: it lives in "
                        "RUNS_DIR/<task>/ (a preset's name by default)")
    description: str = setting("", help="what the task is, in one line (`pdiff tasks`)")
    hardware: str = setting("cpu", help="what the preset is sized for, and its expected time per stage")
    seed: int = setting(0, rules.SEED, help="the seed of everything (data split, training, sampling)")
    device: str = setting("auto", lambda key, device, c: resolve_device(device), help="auto, cpu, cuda, cuda:N "
                          "or mps")
    precision: str = setting("auto", one_of(PRECISIONS), help="training precision: no (float32), bf16, fp16; auto: "
                             "bf16 on a GPU that has it, else no")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


STAGES = ("collect", "train", "generate", "evaluate", "report")


def validate(config: Config) -> None:
    """Check what the types cannot: every field's rules, in field order, then the rules between the generator's
    networks. Raises a ConfigError naming the key and the fix."""
    rules.check_fields(config, config)
    rules.check_networks(config.train.autoencoder, config.train.diffusion, config.train.family)


def check_task_name(task: str) -> None:
    """A task name is one folder name (RUNS_DIR/<task>/): not empty, not hidden, no path separator."""
    if not TASK_NAME.fullmatch(task) or task.strip() != task:
        raise ConfigError(f"task={task!r} is not a plain name (it names the run folder RUNS_DIR/<task>/): use "
                          "letters, digits, '-', '_' and '.', not starting with '.', e.g. task=my-run")


def checkpoint_count(config: Config) -> int:
    """K: the checkpoints collect.from matches, else collect.k."""
    glob = config.collect.from_
    return config.collect.k if glob is None else len(checkpoint_files.find(glob, "collect.from"))


def _enough_left(holdout: int, split: str, k: int) -> None:
    """A trajectory split leaves the generator 2 checkpoints or more; "run" takes at most K of the second one."""
    if holdout == 1:
        raise ConfigError("train.holdout=1: the held-out test compares each held-out checkpoint with the others "
                          "(leave-one-out): hold out 2 or more, or 0")
    if split == "run" and holdout > k:
        raise ConfigError(f"train.holdout={holdout} with train.holdout_split=run takes more than the collect.k={k} "
                          f"checkpoints of the second collection: hold out at most {k}")
    if split != "run" and holdout and holdout > k - 2:  # K=1 without a holdout is fine
        raise ConfigError(f"train.holdout={holdout} leaves fewer than 2 of the {k} checkpoints (collect.k or "
                          f"collect.from) to train on: hold out at most {k - 2}")


def _takes_the_images(config: Config) -> None:
    """An image folder resized to data.image_size must pass the model's poolings (`tasks.models.input_problem`)."""
    size, m = config.data.image_size, config.model
    if config.data.name == "imagefolder" and size and (problem := input_problem(m.name, m.kwargs, (3, size, size))):
        raise ConfigError(f"data.image_size={size} is too small for model.name={m.name} ({problem}): "
                          "give a larger data.image_size")


def _known_dataset(name: str) -> None:
    if is_import_path(name):
        resolve(name, "data.name")
    elif name not in DATASETS:
        raise ConfigError(f"data.name={name!r} is not known: choose one of {', '.join(sorted(DATASETS))}, or a "
                          "factory of your own as package.module:factory")


def _identity(name: str, key: str) -> str:
    """What a config hash holds for a model or dataset name: the name, with its module's source digest when it is
    an import path (a changed file reruns what was made from it)."""
    return source_digest(name, key) if is_import_path(name) else name


def _samples_its_prior(sampler: str, config: Config) -> None:
    flows = config.train.family == "flow" or config.train.diffusion.prior == "flow"
    if flows != (sampler in FLOW_SAMPLERS):
        fix = (f"a flow integrates its velocity: set generate.sampler to {' or '.join(FLOW_SAMPLERS)}" if flows else
               f"a diffusion prior is sampled by {', '.join(SAMPLERS)}: set generate.sampler to one of them")
        raise ConfigError(f"generate.sampler={sampler}: {fix}")


def _conditioned_for(target: str | None, config: Config) -> None:
    if target is not None:
        rules.parse_target(target)
        if config.train.diffusion.condition == "none":
            raise ConfigError(f"generate.target={target} needs a generator conditioned on accuracy: add "
                              "train.diffusion.condition=accuracy")
