"""ParameterGenerator: normaliser + autoencoder (or, train.family=flow, a projection) + latent prior over
parameter vectors.

fit(checkpoints): standardise (each tensor, or the checkpoints' deviations from their mean:
train.autoencoder.standardise) -> train the autoencoder (with noise augmentation) -> encode the checkpoints ->
standardise the latents -> fit the latent prior (train.diffusion.prior, see pdiff.priors: the paper's DDPM by
default). sample(n): prior -> decoder -> de-standardise -> parameter vectors [n, D].
With a prior conditioned on accuracy (train.diffusion.condition=accuracy), fit hands it each checkpoint's
validation accuracy and sample(n, target=..., guidance=...) asks for one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch

from .checkpoints import CheckpointSet, params_of
from .config import AutoencoderConfig, DiffusionConfig, TrainConfig
from .errors import ArtifactError, ConfigError, NotFittedError, TrainingError
from .families import build_coder, fit_coder, prior_config
from .folders import atomic_folder
from .hub import download
from .layout import AUTOENCODER_FILE, DIFFUSION_FILE
from .params import Normalizer, ParamSpec
from .pretrained import GENERATOR, generator_card, read_export, write_export
from .priors import build_prior
from .provenance import version
from .render import Section
from .rules import check_seed, parse_target
from .store import load_tensors, save_tensors

log = logging.getLogger(__name__)


def quick_config() -> TrainConfig:
    """The generator a `ParameterGenerator` without a config trains: the CPU presets' (an MLP autoencoder, latent
    32, and an MLP denoiser; 2000 + 3000 full-batch steps), about 45 CPU seconds on one core at D = 128
    (BENCHMARKS.md, "Generator training: steps vs time"). `TrainConfig()` is the paper's: conv1d networks trained
    30,000 + 30,000 steps, hours on a CPU."""
    return TrainConfig(AutoencoderConfig(arch="mlp", latent_dim=32, kwargs={"hidden": 256}, steps=2000),
                       DiffusionConfig(arch="mlp", kwargs={"width": 256, "depth": 3}, steps=3000))


class ParameterGenerator:
    """Generates parameter vectors for `spec` after `fit` on checkpoints of it. Without a `config` it trains
    `quick_config()`, sized for a first try on a CPU; a run's config is `load_config(task).train`."""

    def __init__(self, spec: ParamSpec, config: TrainConfig | None = None, device: torch.device | str = "cpu",
                 seed: int = 0):
        self.spec, self.config = spec, config or quick_config()
        self.device, self.seed = torch.device(device), seed
        # train.family's coder (pdiff.families): an autoencoder, or for the flow family a projection
        self.autoencoder = build_coder(spec.dim, spec.numels, self.config).to(self.device)
        self.latent_shape = self.autoencoder.latent_shape  # (d,), or (G + T, c) for token latents
        self.prior = build_prior(self.latent_shape, self.autoencoder.global_tokens, prior_config(self.config),
                                 self.device, seed)
        self.normalizer: Normalizer | None = None
        self.latent_mean = torch.zeros(self.latent_shape)  # latents are standardised before the prior
        self.latent_scale = torch.ones(())
        self.autoencoder_metrics: list[dict] = []

    @property
    def metrics(self) -> list[dict]:
        """{"network", "step", "loss"} rows of the autoencoder's training, then the prior's."""
        return self.autoencoder_metrics + self.prior.metrics

    # ---- training -------------------------------------------------------------------------------
    def fit(self, checkpoints: CheckpointSet | torch.Tensor, progress: bool = True) -> ParameterGenerator:
        """Train the autoencoder, then the prior, on checkpoints [K, D] (and val accuracies, if conditioned).

        Warns, with the fix, when the autoencoder's reconstructions lose most of how the checkpoints differ from
        each other: every generated model would then sit near their average (the run's train stage checks
        this, and the reconstructions' accuracy, itself)."""
        self._condition_of(checkpoints)  # fail before training anything
        self.fit_autoencoder(checkpoints, progress)
        params = params_of(checkpoints, self.spec.dim)
        kept = differences_kept(self.normalizer.normalize(params), self.normalizer.normalize(self.reconstruct(params)))
        if kept is not None and kept < 0.5:
            log.warning("the autoencoder's reconstructions keep only %.0f%% of how the checkpoints differ from their "
                        "mean, so generated models will sit near the checkpoints' average: give ParameterGenerator "
                        "a config with more autoencoder.steps, a larger autoencoder.latent_dim or "
                        "autoencoder.standardise='deviation' (see quick_config)", 100 * kept)
        self.fit_prior(checkpoints, progress)
        return self

    def fit_autoencoder(self, checkpoints: CheckpointSet | torch.Tensor, progress: bool = True) -> None:
        params = params_of(checkpoints, self.spec.dim)
        cfg = self.config.autoencoder
        fit = Normalizer.fit_deviations if cfg.standardise == "deviation" else Normalizer.fit
        self.normalizer = fit(params, self.spec)
        x = self.normalizer.normalize(params).to(self.device)  # [K, D]
        fit_coder(self.autoencoder, x, self.config, self.seed, self.autoencoder_metrics, progress)

    def fit_prior(self, checkpoints: CheckpointSet | torch.Tensor, progress: bool = True) -> None:
        """Fit the prior on the checkpoints' standardised latents (after fit_autoencoder)."""
        if self.normalizer is None:
            raise NotFittedError("fit_autoencoder must run before fit_prior: call fit(), which runs both")
        condition = self._condition_of(checkpoints)
        z = self.encode(params_of(checkpoints, self.spec.dim))  # [K, *latent_shape]
        if self.config.diffusion.standardise_latents:  # else mean 0 and scale 1 stay: the prior sees raw latents
            self.latent_mean = z.mean(0)
            self.latent_scale = self.autoencoder.latent_spread(z - self.latent_mean).clamp(min=1e-8)
        self.prior.fit(self.standardise_latents(z), condition, progress)

    # ---- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, params: torch.Tensor) -> torch.Tensor:
        """Parameter vectors [N, D] -> latents [N, *latent_shape] (no noise)."""
        self._check_fitted("encode")
        self.autoencoder.eval()
        return self.autoencoder.encode(self.normalizer.normalize(params.to(self.device))).cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [N, *latent_shape] -> parameter vectors [N, D]."""
        self._check_fitted("decode")
        self.autoencoder.eval()
        return self.normalizer.denormalize(self.autoencoder.decode(latents.to(self.device))).cpu()

    def reconstruct(self, params: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(params))  # [N, D] -> [N, D]

    def standardise_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [N, *latent_shape] in the units the prior models (on the generator's device)."""
        return ((z - self.latent_mean) / self.latent_scale).to(self.device)

    @torch.no_grad()
    def sample_latents(self, n: int, sampler: str = "ddpm", steps: int | None = None, seed: int | None = None,
                       progress: bool = False, target: str | float | None = None, guidance: float = 0.0
                       ) -> torch.Tensor:
        """Latents [n, *latent_shape] drawn from the prior; with `target`, conditioned on that validation accuracy.

        target (a conditioned prior): a fraction, or "max", "median", "min", "qNN" of the training
        checkpoints' accuracies (see `target_accuracy`); guidance: classifier-free guidance w. Without a target
        a conditioned prior samples its unconditional model. The noise is drawn on the CPU, so a seed gives the
        same latents on any device (up to float rounding): a GPU-trained generator samples alike on a CPU.
        """
        self._check_fitted("sample")
        if guidance < 0:
            raise ConfigError(f"guidance={guidance}: give a guidance weight of 0 or more")
        if target is None and guidance != 0:
            raise ConfigError(f"guidance={guidance} steers towards a target: give a target too (e.g. target='max')")
        accuracy = None if target is None else self.target_accuracy(target)
        generator = torch.Generator().manual_seed(check_seed(self.seed if seed is None else seed))
        z = self.prior.sample(n, sampler, steps, generator, condition=accuracy, guidance=guidance, progress=progress)
        return z.cpu() * self.latent_scale + self.latent_mean

    def sample(self, n: int, sampler: str = "ddpm", steps: int | None = None, seed: int | None = None,
               progress: bool = False, target: str | float | None = None, guidance: float = 0.0) -> torch.Tensor:
        """New parameter vectors [n, D] (`target`, `guidance`: see `sample_latents`)."""
        return self.decode(self.sample_latents(n, sampler, steps, seed, progress, target, guidance))

    def target_accuracy(self, target: str | float, key: str = "target") -> float:
        """The validation accuracy (a fraction) that `target` asks for: a fraction as it is, a percentile
        ("max" = q100, "median" = q50, "min" = q0, "q90") of the training checkpoints' accuracies."""
        if not self.prior.conditioned:
            raise ConfigError(f"{key}={target}: this generator was trained without a condition; retrain it with "
                              "train.diffusion.condition=accuracy (`pdiff train --force`) to ask for an accuracy")
        kind, value = parse_target(target, key)
        return value if kind == "accuracy" else self.prior.accuracy_at(value)

    def _condition_of(self, checkpoints: CheckpointSet | torch.Tensor) -> torch.Tensor | None:
        """The checkpoints' validation accuracies [K] when the prior is conditioned on them, else None."""
        if not self.prior.conditioned:
            return None
        accuracies = checkpoints.val_accuracy if isinstance(checkpoints, CheckpointSet) else None
        if accuracies is None:
            raise TrainingError("train.diffusion.condition=accuracy needs each checkpoint's validation accuracy: "
                                "fit on a CheckpointSet with val_accuracy (what `pdiff collect` writes)")
        if accuracies.max() == accuracies.min():
            raise TrainingError(f"all {len(accuracies)} checkpoints have the same validation accuracy "
                                f"({100 * accuracies[0]:.2f}%): there is nothing to condition on; "
                                "set train.diffusion.condition=none")
        return accuracies.float().cpu()

    def _check_fitted(self, what: str) -> None:
        if self.normalizer is None:
            raise NotFittedError(f"cannot {what} with a generator that was never trained: call fit(checkpoints) "
                                 "or ParameterGenerator.load(run_dir / 'train') first")

    # ---- files ----------------------------------------------------------------------------------
    def save(self, directory: str | Path, metadata: dict | None = None) -> None:
        """Write autoencoder.safetensors and diffusion.safetensors (the prior's tensors) into `directory`."""
        self._check_fitted("save")
        directory = Path(directory)
        common = {**(metadata or {}), "spec": self.spec.to_dict(), "seed": self.seed}
        ae_tensors = {f"model.{k}": v for k, v in self.autoencoder.state_dict().items()}
        save_tensors(directory / AUTOENCODER_FILE, {**ae_tensors, **self.normalizer.state_dict()},
                     {**common, "autoencoder": asdict(self.config.autoencoder), "family": self.config.family})
        save_tensors(directory / DIFFUSION_FILE, {**self.prior.state_dict(), "latent_mean": self.latent_mean,
                                                  "latent_scale": self.latent_scale},
                     {**common, "diffusion": asdict(self.config.diffusion)})

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu", spec: ParamSpec | None = None,
             config_hash: str | None = None) -> ParameterGenerator:
        """Rebuild a fitted generator; with `spec` / `config_hash`, check it was trained for them."""
        directory = Path(directory)
        ae_tensors, ae_meta = load_tensors(directory / AUTOENCODER_FILE)
        dm_tensors, dm_meta = load_tensors(directory / DIFFUSION_FILE)
        if "autoencoder" not in ae_meta or "diffusion" not in dm_meta:
            raise ArtifactError(f"{directory} does not hold a pdiff generator: rerun `pdiff train`")
        hashes = (ae_meta.get("config_hash"), dm_meta.get("config_hash"))
        if config_hash is not None and any(h != config_hash for h in hashes):
            other = next(h for h in hashes if h != config_hash)
            raise ArtifactError(f"the generator in {directory} was trained under another config (hash {other}, "
                                f"this config {config_hash}): rerun `pdiff train --force`")
        if hashes[0] != hashes[1]:
            raise ArtifactError(f"{directory} mixes an autoencoder (config hash {hashes[0]}) and a diffusion model "
                                f"(config hash {hashes[1]}) of different runs: rerun `pdiff train --force`")
        if ae_meta.get("spec") != dm_meta.get("spec"):
            raise ArtifactError(f"{directory} mixes an autoencoder and a diffusion model trained for different "
                                "parameter subsets: rerun `pdiff train --force`")
        saved_spec = ParamSpec.from_dict(ae_meta["spec"])
        if spec is not None and saved_spec != spec:
            raise ArtifactError(f"the generator in {directory} was trained for another parameter subset "
                                f"({len(saved_spec.names)} tensors, D={saved_spec.dim}) than this one "
                                f"(D={spec.dim}): retrain it with `pdiff train --force`")
        config = TrainConfig(AutoencoderConfig(**ae_meta["autoencoder"]), DiffusionConfig(**dm_meta["diffusion"]),
                             family=ae_meta.get("family", "latent_diffusion"))
        gen = cls(saved_spec, config, device, ae_meta.get("seed", 0))
        try:
            gen.autoencoder.load_state_dict({k.removeprefix("model."): v for k, v in ae_tensors.items()
                                            if k.startswith("model.")})
            gen.prior.load_state_dict(dm_tensors)
        except RuntimeError as e:
            reason = " ".join(str(e).split())  # torch's message spans lines; the error stays one
            raise ArtifactError(f"{directory}: the weights do not fit the saved architecture ({reason}): "
                                "rerun `pdiff train --force`") from None
        except ArtifactError as e:
            raise ArtifactError(f"{directory}: {e}") from None
        gen.autoencoder.eval()
        gen.normalizer = Normalizer.from_state_dict(ae_tensors)
        gen.latent_mean, gen.latent_scale = dm_tensors["latent_mean"], dm_tensors["latent_scale"]
        return gen

    def save_pretrained(self, directory: str | Path, metadata: dict | None = None, force: bool = False) -> Path:
        """A Hugging Face hub model repository in `directory` (new or empty; an earlier generator export replaced
        only with `force`): config.json, the weights and a model card; `pdiff export` adds a run's base model."""
        with atomic_folder(directory, GENERATOR, force) as folder:
            self.write_pretrained(folder, metadata)
        return Path(directory)

    def write_pretrained(self, folder: Path, metadata: dict | None = None, sections: list[Section] = (),
                         command: str | None = None, repo_id: str | None = None) -> None:
        """`save_pretrained`'s files, written into `folder` as it is; `sections`, `command` and `repo_id` fill in
        the model card (an export adds the run's results and the command that made it)."""
        metadata = dict(metadata or {})
        self.save(folder, metadata)
        fields = {**metadata, "seed": self.seed, "spec": self.spec.to_dict(), "train": {
            "family": self.config.family, "autoencoder": asdict(self.config.autoencoder),
            "diffusion": asdict(self.config.diffusion)}}
        config = {"pdiff_version": version(), **fields}
        write_export(folder, GENERATOR, fields, generator_card(config, sections, command, repo_id))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: torch.device | str = "cpu",
                        revision: str | None = None) -> ParameterGenerator:
        """A generator from a folder written by `save_pretrained` / `pdiff export`, or from a hub repo id
        (downloaded once, then read from the cache; with HF_HUB_OFFLINE=1 only from the cache)."""
        folder = download(name_or_path, "model", revision)
        config = read_export(folder, GENERATOR)
        gen = cls.load(folder, device)
        if gen.spec != ParamSpec.from_dict(config["spec"]):
            raise ArtifactError(f"{folder}: config.json and the weight files describe different parameter subsets; "
                                "export the run again")
        return gen


def differences_kept(x: torch.Tensor, reconstructed: torch.Tensor) -> float | None:
    """1 - |reconstructed - x|^2 / |x - mean(x)|^2 for checkpoints x [K, D] (standardised): the share of the
    checkpoints' variance about their mean that the reconstructions keep (1: all of it, 0: no better than
    decoding every checkpoint to the mean). None when the checkpoints do not differ."""
    spread = (x - x.mean(0)).pow(2).sum()
    if spread == 0:
        return None
    return 1 - ((reconstructed - x).pow(2).sum() / spread).item()
