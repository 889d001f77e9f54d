"""The one training loop of the generator's networks (the autoencoder and every prior's denoisers), and the
mini-batches it draws.

`fit_network`: AdamW with cosine lr decay on random mini-batches, the last finite weights kept, the loss logged
every 100 steps; `fit_averaged`: the same with an EMA of the weights (the denoisers). `Batches` draws each
step's rows and, with a `TokenCrop`, the crop of token data a step trains on (`token_crop`), so that a step
costs the same at any number of tokens.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import distributed
from .errors import TrainingError

# loss_fn(network (a DDP wrapper under a multi-process launch), batch [b, *], noise generator, token_ids [n] of a
# crop or None) -> the scalar loss of the step
LossFn = Callable[[nn.Module, Tensor, torch.Generator, Tensor | None], Tensor]


class Schedule(Protocol):
    """What the loop reads of a train.autoencoder / train.diffusion section."""
    steps: int
    batch_size: int
    lr: float
    weight_decay: float


def lr_at(step: int, total: int, peak: float) -> float:
    """Cosine decay from `peak` to zero over `total` steps."""
    return 0.5 * peak * (1 + math.cos(math.pi * step / max(1, total)))


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


@dataclass(frozen=True)
class TokenCrop:
    """Train on crops of token data [K, T, *]: the first `prefix` tokens and `length` consecutive others, starting
    at a multiple of `align` (see token_crop)."""
    length: int
    align: int = 1
    prefix: int = 0


class Batches:
    """The mini-batches of a training run over data [K, *]: each step `size` random rows, the same on every
    process (one seeded generator draws them), of which this process (`rank` of `world`) takes its share; with
    a TokenCrop only that crop of the rows' tokens, the same for every row of the step."""

    def __init__(self, data: Tensor, size: int, generator: torch.Generator, crop: TokenCrop | None = None,
                 rank: int = 0, world: int = 1):
        self.data, self.size, self.generator, self.crop = data, size, generator, crop
        self.rank, self.world = rank, world

    def draw(self) -> tuple[Tensor, Tensor | None]:
        """(this step's batch [b, *] or, cropped, [b, n, *]; the crop's token positions [n] or None)."""
        rows = torch.randperm(len(self.data), generator=self.generator, device=self.data.device)[:self.size]
        rows = rows[self.rank::self.world]
        if self.crop is None:
            return self.data[rows], None
        token_ids = token_crop(self.data.shape[1], self.crop.length, self.crop.align, self.generator,
                               self.crop.prefix)  # [n]
        return self.data[rows[:, None], token_ids], token_ids


def fit_network(net: nn.Module, data: Tensor, loss_fn: LossFn, cfg: Schedule, name: str, *, seed: int,
                metrics: list[dict], progress: bool = True, crop: TokenCrop | None = None,
                on_step: Callable[[nn.Module], None] | None = None, section: str | None = None) -> None:
    """Train `net` for cfg.steps steps of AdamW with cosine lr decay on mini-batches of `data` [K, *] (on the
    device that trains), appending {"network": name, "step", "loss"} to `metrics` every 100 steps and at the end.

    on_step(net) runs after every optimiser step (an EMA update). section: the train.<section> that holds cfg
    (default: `name`), named in the error when the loss stops being finite. Under a multi-process launch every
    process draws the same mini-batch (and crop), trains a DDP copy on its 1/n of it with its own noise, and
    DDP averages the gradients.
    """
    accelerator = distributed.accelerator()
    rank, world = accelerator.process_index, accelerator.num_processes
    generator = torch.Generator(data.device).manual_seed(seed)  # batch order: the same everywhere
    noise = generator if world == 1 else torch.Generator(data.device).manual_seed(seed + 1 + rank)
    torch.manual_seed(seed + rank)  # the noise augmentation inside the networks
    # fused: every tensor updated in one kernel instead of one small update per tensor
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    net.train()
    batch_size = min(cfg.batch_size, len(data))
    if batch_size < world:
        raise TrainingError(f"{len(data)} checkpoints cannot be split over {world} processes: collect more")
    ddp_net, optimizer = accelerator.prepare(net, optimizer)
    if isinstance(ddp_net, DistributedDataParallel):  # its constructor sent the main process's buffers once;
        ddp_net.broadcast_buffers = False  # they are fixed (the global basis: [16, D], 68 MB a step at 10^6)
    batches = Batches(data, batch_size, generator, crop, rank, world)
    last_good, last_good_step = copy.deepcopy(net.state_dict()), 0  # weights whose loss was finite
    bar = distributed.progress_bar(range(cfg.steps), progress, desc=f"train {name}")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr)
        batch, token_ids = batches.draw()
        loss = loss_fn(ddp_net, batch, noise, token_ids)
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
            metrics.append({"network": name, "step": step, "loss": loss.item()})
    distributed.release(ddp_net)


def fit_averaged(net: nn.Module, data: Tensor, loss_fn: LossFn, cfg: Schedule, name: str, ema_decay: float,
                 **kwargs) -> nn.Module:
    """fit_network (kwargs: its keywords) with an exponential moving average of the weights, updated every step;
    returns the network to sample with, in eval mode: the average, or for ema_decay 0 the raw weights (no
    average is kept then: AveragedModel would copy them every step)."""
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay)) if ema_decay else None
    fit_network(net, data, loss_fn, cfg, name, on_step=ema.update_parameters if ema else None, **kwargs)
    return (ema.module if ema else net).eval()
