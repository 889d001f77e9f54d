"""ParameterGenerator: the latent diffusion model over parameter vectors.

fit(checkpoints): standardise (each tensor, or the checkpoints' deviations from their mean:
train.autoencoder.standardise) -> train the autoencoder (with noise augmentation) -> encode the checkpoints ->
train a DDPM on the (standardised) latents (EMA weights for sampling, unless train.diffusion.ema_decay=0).
sample(n): noise -> denoiser -> decoder -> de-standardise -> parameter vectors [n, D].
With train.diffusion.condition=accuracy the denoiser also learns each checkpoint's validation accuracy
(standardised over the training checkpoints), and sample(n, target=..., guidance=...) asks for one.
With a global latent and train.diffusion.global_steps, a flat denoiser of its own draws the global latent and the
transformer draws the other tokens given it.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from . import distributed
from .autoencoder import TokenAutoencoder, build_autoencoder
from .checkpoints import CheckpointSet
from .config import AutoencoderConfig, DiffusionConfig, TrainConfig, parse_target
from .diffusion import DDPM, build_denoiser
from .errors import ArtifactError, ConfigError, NotFittedError, TrainingError
from .folders import atomic_folder
from .hub import download
from .layout import AUTOENCODER_FILE, DIFFUSION_FILE
from .params import Normalizer, ParamSpec
from .pretrained import GENERATOR, generator_card, read_export, version, write_export
from .render import Section
from .store import load_tensors, save_tensors

log = logging.getLogger(__name__)


class ParameterGenerator:
    """Generates parameter vectors for `spec` after `fit` on checkpoints of it."""

    def __init__(self, spec: ParamSpec, config: TrainConfig | None = None, device: torch.device | str = "cpu",
                 seed: int = 0):
        self.spec, self.config = spec, config or TrainConfig()
        self.device, self.seed = torch.device(device), seed
        ae, dm = self.config.autoencoder, self.config.diffusion
        self.autoencoder = build_autoencoder(ae.arch, spec.dim, spec.numels, latent_dim=ae.latent_dim,
                                             input_noise=ae.input_noise, latent_noise=ae.latent_noise,
                                             **ae.kwargs).to(self.device)
        self.latent_shape = self.autoencoder.latent_shape  # (d,), or (G + T, c) for token latents
        tokens = self.latent_shape[0] if len(self.latent_shape) == 2 else None
        self.global_tokens = self.autoencoder.global_tokens  # G: the token latents' global prefix
        self.conditioned = dm.condition == "accuracy"
        conditioning = {"conditioned": True} if self.conditioned else {}  # config refuses it for the transformer
        self.denoiser = build_denoiser(dm.arch, self.latent_shape[-1], tokens, self.global_tokens, **conditioning,
                                       **dm.kwargs).to(self.device)
        if dm.global_steps and not self.global_tokens:
            raise ConfigError(f"train.diffusion.global_steps={dm.global_steps} trains a denoiser for the global "
                              "latent, which this autoencoder lacks: give the tokens autoencoder a global_dim, or "
                              "set global_steps: 0")
        # The global latent [G * c] flat, by an MLP denoiser of its own (see fit_diffusion); None: the transformer's.
        self.global_denoiser = (build_denoiser("mlp", self.global_tokens * self.latent_shape[-1]).to(self.device)
                                if dm.global_steps else None)
        self.ddpm = DDPM(dm.num_train_timesteps, dm.beta_start, dm.beta_end)
        self.normalizer: Normalizer | None = None
        self.latent_mean = torch.zeros(self.latent_shape)  # latents are standardised before diffusion
        self.latent_scale = torch.ones(())
        self.accuracies: torch.Tensor | None = None  # conditioned: the training checkpoints' val accuracies [K]
        self.metrics: list[dict] = []

    # ---- training -------------------------------------------------------------------------------
    def fit(self, checkpoints: CheckpointSet | torch.Tensor, progress: bool = True) -> ParameterGenerator:
        """Train the autoencoder, then the diffusion model, on checkpoints [K, D] (with their val accuracies
        when conditioned)."""
        if self.conditioned:
            self._accuracies_of(checkpoints)  # fail before training anything
        self.fit_autoencoder(checkpoints, progress)
        self.fit_diffusion(checkpoints, progress)
        return self

    def fit_autoencoder(self, checkpoints: CheckpointSet | torch.Tensor, progress: bool = True) -> None:
        params = self._params_of(checkpoints)
        cfg = self.config.autoencoder
        fit = Normalizer.fit_deviations if cfg.standardise == "deviation" else Normalizer.fit
        self.normalizer = fit(params, self.spec)
        x = self.normalizer.normalize(params).to(self.device)  # [K, D]
        crop = 0
        if isinstance(self.autoencoder, TokenAutoencoder):
            self.autoencoder.init_from(x)
            layout = self.autoencoder.layout
            crop = cfg.tokens_per_step if cfg.tokens_per_step < layout.num_tokens else 0  # 0: every token
            if crop:  # steps on random crops of the token sequence (of what the global latent leaves)
                x = layout.cut(self.autoencoder.split_global(x)[1])  # [K, T, token_size], zeros in the padding
                mask = layout.mask.to(self.device)  # [T, token_size]

        def loss_fn(autoencoder: nn.Module, batch: torch.Tensor, generator: torch.Generator,
                    token_ids: torch.Tensor | None) -> torch.Tensor:
            if token_ids is None:
                return F.mse_loss(autoencoder(batch), batch)  # noise augmentation happens inside forward
            kept = mask[token_ids].expand_as(batch)  # [b, n, token_size]: the padding stays out of the loss
            return F.mse_loss(autoencoder(batch, token_ids)[kept], batch[kept])

        self._train(self.autoencoder, x, loss_fn, cfg, "autoencoder", progress, crop=crop)
        self.autoencoder.eval()

    def fit_diffusion(self, checkpoints: CheckpointSet | torch.Tensor, progress: bool = True) -> None:
        if self.normalizer is None:
            raise NotFittedError("fit_autoencoder must run before fit_diffusion: call fit(), which runs both")
        z = self.encode(self._params_of(checkpoints))  # [K, *latent_shape]
        cfg = self.config.diffusion
        if cfg.standardise_latents:  # else mean 0 and scale 1 stay: the DDPM sees the raw latents
            self.latent_mean = z.mean(0)
            # One scale for flat latents; one per token [G + T, 1] for token latents, whose global tokens vary far
            # more than the tokens that code what is left (mnist-mlp-full: a spread of 259 against 0.1-0.6).
            deviations = z - self.latent_mean
            spread = deviations.std(dim=(0, 2))[:, None] if z.ndim == 3 else deviations.std()
            self.latent_scale = spread.clamp(min=1e-8)
        z = self._standardise_latents(z)
        # ema_decay 0: no average, the raw weights are sampled (AveragedModel would copy them every step)
        ema = AveragedModel(self.denoiser, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay else None

        if self.conditioned:
            self.accuracies = self._accuracies_of(checkpoints)
            c = self.standardise_accuracy(self.accuracies).to(self.device)  # [K]
            z = torch.cat([z, c[:, None]], dim=1)  # [K, d + 1]: each latent's condition rides in its last column
        if self.global_denoiser is not None:
            self._fit_global_denoiser(z[:, :self.global_tokens].flatten(1), progress)
        # The global latent: drawn by the global denoiser, so the transformer sees it clean (and learns the rest
        # given it); else drawn by the transformer too, with half its loss (see token_loss_weights).
        clean, weighted = ((self.global_tokens, 0) if self.global_denoiser is not None else (0, self.global_tokens))

        def loss_fn(denoiser: nn.Module, batch: torch.Tensor, generator: torch.Generator,
                    token_ids: torch.Tensor | None) -> torch.Tensor:
            weights = token_loss_weights(batch.shape[1], weighted, batch.device) if weighted else None
            if token_ids is not None:  # a crop of the token sequence (the config keeps it unconditioned)
                return self.ddpm.loss(partial(denoiser, token_ids=token_ids), batch, generator=generator,
                                      token_weights=weights, clean_prefix=clean)
            if not self.conditioned:
                return self.ddpm.loss(denoiser, batch, generator=generator, token_weights=weights,
                                      clean_prefix=clean)
            return self.ddpm.loss(denoiser, batch[:, :-1], generator=generator, c=batch[:, -1], p_uncond=cfg.p_uncond)

        tokens = self.latent_shape[0] - self.global_tokens if len(self.latent_shape) == 2 else 0
        crop = cfg.tokens_per_step if cfg.tokens_per_step < tokens else 0  # 0: the whole sequence (or flat latents)
        self._train(self.denoiser, z, loss_fn, cfg, "diffusion", progress, on_step=ema.update_parameters if ema else
                    None, crop=crop, crop_align=self.denoiser.window if crop else 1, crop_prefix=self.global_tokens)
        self.denoiser = (ema.module if ema else self.denoiser).eval()

    def _fit_global_denoiser(self, z: torch.Tensor, progress: bool) -> None:
        """Train the global denoiser for train.diffusion.global_steps on the standardised global latents [K, G * c].

        Why a denoiser of its own: drawn by the transformer among T other tokens, mnist-mlp-full's 16 global
        coordinates strayed off the checkpoints' trajectory along directions of little variance, and 28 of 100
        models landed above the best checkpoint; a flat MLP over just them, many cheap steps, keeps them on it.
        """
        cfg = self.config.diffusion
        ema = AveragedModel(self.global_denoiser, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)
                            ) if cfg.ema_decay else None

        def loss_fn(denoiser: nn.Module, batch: torch.Tensor, generator: torch.Generator,
                    token_ids: torch.Tensor | None) -> torch.Tensor:
            return self.ddpm.loss(denoiser, batch, generator=generator)

        self._train(self.global_denoiser, z, loss_fn, replace(cfg, steps=cfg.global_steps), "global diffusion",
                    progress, on_step=ema.update_parameters if ema else None, section="diffusion")
        self.global_denoiser = (ema.module if ema else self.global_denoiser).eval()

    def _train(self, net: nn.Module, data: torch.Tensor, loss_fn, cfg: AutoencoderConfig | DiffusionConfig,
               name: str, progress: bool, on_step=None, crop: int = 0, crop_align: int = 1, crop_prefix: int = 0,
               section: str | None = None) -> None:
        """AdamW with cosine lr decay on random mini-batches of `data` [K, *]; logs into self.metrics.

        With `crop` (token data [K, T, *]), each step sees the first `crop_prefix` tokens (the global latent) and
        a random crop of `crop` of the others of its mini-batch (see `token_crop`; loss_fn gets their positions),
        so a step costs the same at any T. section: the train.<section> that holds cfg (default: `name`).
        Under a multi-process launch every process draws the same mini-batch (and crop), trains a DDP copy on
        its 1/n of it with its own noise, and DDP averages the gradients.
        """
        accelerator = distributed.accelerator()
        rank, world = accelerator.process_index, accelerator.num_processes
        generator = torch.Generator(self.device).manual_seed(self.seed)  # batch order: the same everywhere
        noise = generator if world == 1 else torch.Generator(self.device).manual_seed(self.seed + 1 + rank)
        torch.manual_seed(self.seed + rank)  # the noise augmentation inside the networks
        # fused: every tensor updated in one kernel; the train stage ran 25% faster with it on 2 CPU cores
        optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        net.train()
        batch_size = min(cfg.batch_size, len(data))
        if batch_size < world:
            raise TrainingError(f"{len(data)} checkpoints cannot be split over {world} processes: collect more")
        ddp_net, optimizer = accelerator.prepare(net, optimizer)
        if isinstance(ddp_net, DistributedDataParallel):  # its constructor sent the main process's buffers once;
            ddp_net.broadcast_buffers = False  # they are fixed (the global basis: [16, D], 68 MB a step at 10^6)
        last_good, last_good_step = copy.deepcopy(net.state_dict()), 0  # weights whose loss was finite
        bar = tqdm(range(cfg.steps), desc=f"train {name}", disable=not (progress and distributed.is_main_process()))
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg.steps, cfg.lr)
            rows = torch.randperm(len(data), generator=generator, device=self.device)[:batch_size][rank::world]
            if crop:
                token_ids = token_crop(data.shape[1], crop, crop_align, generator, crop_prefix)  # [n]
                loss = loss_fn(ddp_net, data[rows[:, None], token_ids], noise, token_ids)  # on [b, n, *] only
            else:
                loss = loss_fn(ddp_net, data[rows], noise, None)
            if not distributed.all_finite(loss):
                net.load_state_dict(last_good)
                raise TrainingError(f"{name} loss became {loss.item()} at step {step}: lower "
                                    f"train.{section or name}.lr (the weights of step {last_good_step}, the last "
                                    "good ones kept, were restored)")
            if step % 100 == 0:
                last_good, last_good_step = copy.deepcopy(net.state_dict()), step
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            if on_step is not None:
                on_step(net)
            if step % 100 == 0 or step == cfg.steps - 1:
                self.metrics.append({"network": name, "step": step, "loss": loss.item()})
        distributed.release(ddp_net)

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
        return self.decode(self.encode(params))

    @torch.no_grad()
    def sample_latents(self, n: int, sampler: str = "ddpm", steps: int | None = None, seed: int | None = None,
                       progress: bool = False, target: str | float | None = None, guidance: float = 0.0
                       ) -> torch.Tensor:
        """Latents [n, *latent_shape] drawn from the diffusion model; with `target`, conditioned on that validation
        accuracy.

        target (a conditioned generator): a fraction, or "max", "median", "min", "qNN" of the training
        checkpoints' accuracies (see `target_accuracy`); guidance: classifier-free guidance w. Without a target
        a conditioned generator samples its unconditional model. The noise is drawn on the CPU and moved to the
        device, so a seed gives the same latents on any device (up to float rounding): a generator trained on
        a GPU samples the same vectors when loaded on a CPU.
        With a global denoiser (train.diffusion.global_steps), `sampler` and `steps` draw the other tokens; the
        global latent is always drawn by the full DDPM chain: a flat network of G * c numbers, its 1000 steps for
        100 models take seconds.
        """
        self._check_fitted("sample")
        if guidance < 0:
            raise ConfigError(f"guidance={guidance}: give a guidance weight of 0 or more")
        if target is None and guidance != 0:
            raise ConfigError(f"guidance={guidance} steers towards a target: give a target too (e.g. target='max')")
        c = None if target is None else self.standardise_accuracy(torch.tensor(self.target_accuracy(target))).item()
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        prefix = None
        if self.global_denoiser is not None:  # first the global latent (the full DDPM chain), then the rest given it
            G, channels = self.global_tokens, self.latent_shape[-1]
            prefix = self.ddpm.sample(self.global_denoiser, n, G * channels, sampler="ddpm", generator=generator,
                                      device=self.device, progress=progress)
            prefix = prefix.reshape(n, G, channels)
        z = self.ddpm.sample(self.denoiser, n, self.latent_shape, sampler=sampler, steps=steps,
                             generator=generator, device=self.device, progress=progress, c=c, guidance=guidance,
                             prefix=prefix)
        return z.cpu() * self.latent_scale + self.latent_mean

    def sample(self, n: int, sampler: str = "ddpm", steps: int | None = None, seed: int | None = None,
               progress: bool = False, target: str | float | None = None, guidance: float = 0.0) -> torch.Tensor:
        """New parameter vectors [n, D] (`target`, `guidance`: see `sample_latents`)."""
        return self.decode(self.sample_latents(n, sampler, steps, seed, progress, target, guidance))

    def target_accuracy(self, target: str | float, key: str = "target") -> float:
        """The validation accuracy (a fraction) that `target` asks for: a fraction as it is, a percentile
        ("max" = q100, "median" = q50, "min" = q0, "q90") of the training checkpoints' accuracies."""
        if not self.conditioned:
            raise ConfigError(f"{key}={target}: this generator was trained without a condition; retrain it with "
                              "train.diffusion.condition=accuracy (`pdiff train --force`) to ask for an accuracy")
        kind, value = parse_target(target, key)
        if kind == "accuracy":
            return value
        return torch.quantile(self.accuracies.double(), value / 100).item()

    def standardise_accuracy(self, accuracy: torch.Tensor) -> torch.Tensor:
        """Validation accuracies (fractions) in units of the training checkpoints' mean and std: the condition."""
        return ((accuracy.double() - self.accuracies.double().mean()) / self.accuracies.double().std()).float()

    def _accuracies_of(self, checkpoints: CheckpointSet | torch.Tensor) -> torch.Tensor:
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
                                 "or ParameterGenerator.load(run_dir / 'generator') first")

    def _standardise_latents(self, z: torch.Tensor) -> torch.Tensor:
        return ((z - self.latent_mean) / self.latent_scale).to(self.device)

    def _params_of(self, checkpoints: CheckpointSet | torch.Tensor) -> torch.Tensor:
        params = checkpoints.params if isinstance(checkpoints, CheckpointSet) else checkpoints
        if params.ndim != 2 or params.shape[1] != self.spec.dim:
            raise ValueError(f"checkpoints must be [K, {self.spec.dim}] for this spec, got {tuple(params.shape)}")
        finite = torch.isfinite(params).all(dim=1)
        if not finite.all():
            row = int((~finite).nonzero()[0])
            raise TrainingError(f"checkpoint {row} (of {len(params)}) holds NaN or Inf values, so training cannot "
                                "start: drop those rows or collect the checkpoints again")
        return params.float()

    # ---- files ----------------------------------------------------------------------------------
    def save(self, directory: str | Path, metadata: dict | None = None) -> None:
        """Write autoencoder.safetensors and diffusion.safetensors into `directory`."""
        self._check_fitted("save")
        directory = Path(directory)
        common = {**(metadata or {}), "spec": self.spec.to_dict(), "seed": self.seed}
        ae_tensors = {f"model.{k}": v for k, v in self.autoencoder.state_dict().items()}
        save_tensors(directory / AUTOENCODER_FILE, {**ae_tensors, **self.normalizer.state_dict()},
                     {**common, "autoencoder": asdict(self.config.autoencoder)})
        dm_tensors = {f"model.{k}": v for k, v in self.denoiser.state_dict().items()}
        if self.conditioned:
            dm_tensors["accuracies"] = self.accuracies
        if self.global_denoiser is not None:
            dm_tensors.update({f"global_model.{k}": v for k, v in self.global_denoiser.state_dict().items()})
        save_tensors(directory / DIFFUSION_FILE,
                     {**dm_tensors, "latent_mean": self.latent_mean, "latent_scale": self.latent_scale},
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
        config = TrainConfig(AutoencoderConfig(**ae_meta["autoencoder"]), DiffusionConfig(**dm_meta["diffusion"]))
        gen = cls(saved_spec, config, device, ae_meta.get("seed", 0))
        try:
            gen.autoencoder.load_state_dict(_strip(ae_tensors, "model."))
            gen.denoiser.load_state_dict(_strip(dm_tensors, "model."))
            if gen.global_denoiser is not None:
                gen.global_denoiser.load_state_dict(_strip(dm_tensors, "global_model."))
        except RuntimeError as e:
            reason = " ".join(str(e).split())  # torch's message spans lines; the error stays one
            raise ArtifactError(f"{directory}: the weights do not fit the saved architecture ({reason}): "
                                "rerun `pdiff train --force`") from None
        gen.autoencoder.eval()
        gen.denoiser.eval()
        if gen.global_denoiser is not None:
            gen.global_denoiser.eval()
        gen.normalizer = Normalizer.from_state_dict(ae_tensors)
        gen.latent_mean, gen.latent_scale = dm_tensors["latent_mean"], dm_tensors["latent_scale"]
        gen.accuracies = dm_tensors.get("accuracies")
        if gen.conditioned and gen.accuracies is None:
            raise ArtifactError(f"{directory}: a conditioned generator without its checkpoints' accuracies: "
                                "rerun `pdiff train --force`")
        return gen

    def save_pretrained(self, directory: str | Path, metadata: dict | None = None, force: bool = False) -> Path:
        """Write a Hugging Face hub model repository into `directory` (new or empty; an earlier generator export
        is replaced only with `force`): config.json, the two weight files and a model card (README.md).
        `pdiff export` adds a run's base model and results (`pdiff.share`)."""
        with atomic_folder(directory, GENERATOR, force) as folder:
            self.write_pretrained(folder, metadata)
        return Path(directory)

    def write_pretrained(self, folder: Path, metadata: dict | None = None, sections: list[Section] = (),
                         command: str | None = None, repo_id: str | None = None) -> None:
        """`save_pretrained`'s files, written into `folder` as it is; `sections`, `command` and `repo_id` fill in
        the model card (an export adds the run's results and the command that made it)."""
        metadata = dict(metadata or {})
        self.save(folder, metadata)
        fields = {**metadata, "seed": self.seed, "spec": self.spec.to_dict(),
                  "train": {"autoencoder": asdict(self.config.autoencoder), "diffusion": asdict(self.config.diffusion)}}
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


def token_crop(num_tokens: int, length: int, align: int, generator: torch.Generator, prefix: int = 0
               ) -> torch.Tensor:
    """Positions [prefix + length] of a random crop of a T-token sequence: the first `prefix` tokens (the
    global latent, in every crop), then `length` consecutive tokens of the other T - prefix from a start drawn
    uniformly among the multiples of `align` (the transformer's window, so that the crop's windows are windows
    of the whole sequence), wrapping around the end so that every token is seen equally often."""
    rest = num_tokens - prefix
    start = align * torch.randint(-(-rest // align), (), generator=generator, device=generator.device)
    crop = prefix + (start + torch.arange(length, device=generator.device)) % rest
    return torch.cat([torch.arange(prefix, device=generator.device), crop])


def token_loss_weights(num_tokens: int, num_global: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[num_tokens] weights of the denoiser's loss (summing to 1): half on the first num_global (the global
    latent), half on the others. Weighted alike, the one global token of mnist-mlp-full's crops of 256 had 1/257
    of the loss, and its samples strayed from the checkpoints' (models below 50% test accuracy)."""
    weights = torch.full((num_tokens,), 0.5 / (num_tokens - num_global), device=device)
    weights[:num_global] = 0.5 / num_global
    return weights


def lr_at(step: int, total: int, peak: float) -> float:
    """Cosine decay from `peak` to zero over `total` steps."""
    return 0.5 * peak * (1 + math.cos(math.pi * step / max(1, total)))


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
