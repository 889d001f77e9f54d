"""Several processes, GPUs and nodes on HuggingFace accelerate; a plain Python call is one process.

Under `accelerate launch` (or torchrun) every process runs the same code. Training wraps the model in
DistributedDataParallel and feeds each process its own share of the batches; evaluation gives each process
whole chunks of the parameter vectors and gathers the predictions (`pdiff.inference.predict_many`), so every
process holds the same results, equal to a single-process run. Only the main process writes files (see
`pdiff.store`); the pipeline makes the others wait at a barrier after each stage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast
from torch import nn
from torch.utils.data import DataLoader

from . import store
from .errors import ConfigError

PRECISIONS = ("auto", "no", "bf16", "fp16")
_accelerator: Accelerator | None = None
_settings: tuple[bool, str] | None = None  # (cpu, precision) the accelerator was made with


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available, else cpu; any other name must be a torch device that exists here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a torch device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but torch sees no CUDA GPU here: use device=cpu or device=auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r} but torch sees {torch.cuda.device_count()} CUDA GPU(s) here: use "
                          f"cuda:0..cuda:{torch.cuda.device_count() - 1} or device=auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r} but this machine has no usable Apple GPU: use device=cpu or device=auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name!r} cannot train or run models: use auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> "bf16" on a GPU that supports it, else "no" (full float32)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not valid: choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"


def setup(device: str | torch.device = "auto", precision: str = "no") -> torch.device:
    """Make this process's Accelerator and return the device this process computes on.

    Under a multi-process launch "cuda" (or "auto" on a GPU machine) means this process's own GPU.
    Calling again with the same settings is free; other settings remake it (single process only).
    """
    global _accelerator, _settings
    device = resolve_device(device) if isinstance(device, str) else device
    settings = (device.type == "cpu", resolve_precision(precision, device))
    if settings != _settings:
        if _accelerator is not None:
            if _accelerator.num_processes > 1:
                raise ConfigError(f"this launch already runs with precision={_settings[1]} on "
                                  f"{'cpu' if _settings[0] else 'gpu'}: one launch cannot switch; start another")
            AcceleratorState._reset_state(reset_partial_state=True)  # a plain process may switch freely
        try:
            _accelerator = Accelerator(cpu=settings[0], mixed_precision=settings[1], device_placement=False)
        except ValueError as e:
            raise ConfigError(f"precision={settings[1]} does not work on {device} ({e}): use precision=no") from None
        _settings = settings
        store.write_only_where(is_main_process)
        if not _accelerator.is_main_process:
            logging.getLogger("pdiff").setLevel(logging.WARNING)  # one process reports progress
    if _accelerator.num_processes == 1 or device.type == "cpu":
        return device
    if device.index is not None:
        raise ConfigError(f"device={device} names one GPU but each of the {_accelerator.num_processes} processes "
                          "needs its own: use device=cuda (accelerate launch --gpu_ids chooses the GPUs)")
    return _accelerator.device


def accelerator() -> Accelerator:
    """This process's Accelerator; made with defaults (full precision) if `setup` was never called."""
    if _accelerator is None:
        setup()
    return _accelerator


def is_main_process() -> bool:
    """True on the process that writes files and logs; a process that never called `setup` is alone."""
    return _accelerator is None or _accelerator.is_main_process


def wait_for_everyone() -> None:
    if _accelerator is not None:
        _accelerator.wait_for_everyone()


def main_decides(flag: bool) -> bool:
    """The main process's `flag`, on every process (so all of them skip, or run, a stage together)."""
    acc = accelerator()
    if acc.num_processes == 1:
        return flag
    return bool(broadcast(torch.tensor([int(flag)], device=acc.device), from_process=0).item())


def all_finite(loss: torch.Tensor) -> bool:
    """Whether `loss` is finite on every process, so that all of them stop at the same step."""
    acc = accelerator()
    finite = bool(torch.isfinite(loss.detach()))
    if acc.num_processes == 1:
        return finite
    bad = torch.tensor([0.0 if finite else 1.0], device=acc.device)
    return acc.reduce(bad, "sum").item() == 0


def release(model: nn.Module) -> nn.Module:
    """The plain module inside a prepared (DDP / mixed-precision) one; accelerate drops its references."""
    acc = accelerator()
    module = acc.unwrap_model(model, keep_fp32_wrapper=False)  # restores the float32 forward
    acc.free_memory()
    return module


def broadcast_buffers(model: nn.Module) -> None:
    """Copy the main process's buffers to every process: BatchNorm statistics drift apart on local batches."""
    if accelerator().num_processes > 1:
        broadcast(list(model.buffers()), from_process=0)


def shard(loader: Iterable) -> Iterable:
    """This process's share of `loader`'s batches (all of them when it runs alone).

    A DataLoader is sharded by accelerate; any other iterable of batches round-robin (see `RoundRobin`).
    """
    acc = accelerator()
    if acc.num_processes == 1:
        return loader
    if hasattr(loader, "__len__") and len(loader) < acc.num_processes:
        raise ConfigError(f"{len(loader)} batches cannot be shared by {acc.num_processes} processes: "
                          "lower data.batch_size or launch fewer processes")
    if isinstance(loader, DataLoader):
        return acc.prepare_data_loader(loader, device_placement=False)
    return RoundRobin(loader, acc.process_index, acc.num_processes)


class RoundRobin:
    """Batch i of every group of n consecutive batches goes to process i.

    An incomplete last group is dropped, so every process takes the same number of steps (DDP needs that).
    Every process must see the batches in the same order: seed the loader's shuffling the same everywhere.
    """

    def __init__(self, loader: Iterable, rank: int, num_processes: int):
        self.loader, self.rank, self.num_processes = loader, rank, num_processes

    def __len__(self) -> int:
        return len(self.loader) // self.num_processes

    def __iter__(self) -> Iterator:
        group = []
        for batch in self.loader:
            group.append(batch)
            if len(group) == self.num_processes:
                yield group[self.rank]
                group = []


def chunk_bounds(m: int, chunk: int, num_processes: int) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) of `m` rows per process, cut at multiples of `chunk` (whole evaluation chunks)."""
    chunks = -(-m // chunk)
    cuts = [min(m, chunk * (chunks * r // num_processes)) for r in range(num_processes + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))
