"""LoRA adapters (PEFT) around a model, and PEFT's adapter folder (`adapter_config.json` + `adapter_model.safetensors`).

`model.peft: {...}` holds the keyword arguments of `peft.LoraConfig`; `add_adapters` wraps a trained model with
them (a `peft.PeftModel`, whose adapter parameters are named `base_model.model.<layer>.lora_A.default.weight`, ...),
and `save_adapter` / `read_adapter` write and read the folder that `peft.PeftModel.from_pretrained(base, folder)`
loads, the layout the field's LoRA generators exchange. peft imports transformers (seconds), so it is imported
only where adapters are asked for.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ArtifactError, ConfigError, first_line

ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"  # PEFT's names
ADAPTER_NAME = "default"  # PEFT's name of a model's one adapter, inside its parameter names (not in the file)


def lora_config(kwargs: dict[str, Any], key: str = "model.peft") -> Any:
    """`peft.LoraConfig(**kwargs)`, or a one-line ConfigError naming `key`: an argument LoraConfig does not take,
    a value it refuses, or no layers to adapt (PEFT guesses them only for the transformers models it knows)."""
    import peft  # slow: only when adapters are asked for

    accepted = list(inspect.signature(peft.LoraConfig).parameters)
    for name in kwargs:
        if name not in accepted:
            close = difflib.get_close_matches(str(name), accepted, n=3)
            hint = f"did you mean {' or '.join(close)}?" if close else "see peft.LoraConfig's arguments"
            raise ConfigError(f"{key} has {name!r}, which peft.LoraConfig does not take: {hint}")
    if not kwargs.get("target_modules") and not kwargs.get("target_parameters"):
        raise ConfigError(f"{key} names no target_modules: list the layers to adapt, e.g. "
                          f"{key}.target_modules=[qkv] (module names, or their last part)")
    try:
        return peft.LoraConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}={kwargs} is not a LoRA config ({first_line(e)}): fix {key}") from None


def add_adapters(model: nn.Module, kwargs: dict[str, Any], seed: int, key: str = "model.peft") -> nn.Module:
    """A copy of `model` wrapped with the LoRA adapters `kwargs` asks for (`model` itself is left as it is).

    The adapters are initialised from `seed` (lora_B at zero, so the wrapped model computes what `model` does)
    without drawing from the global random stream, so wrapping changes nothing else a run draws. The base
    weights are frozen; only the adapters (and `modules_to_save`) require grad, as PEFT leaves them.
    """
    import peft

    config = lora_config(kwargs, key)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return peft.get_peft_model(copy.deepcopy(model), config)
        except (ValueError, TypeError, NotImplementedError) as e:  # PEFT's NoMatchingPeftModuleError is one
            names = [name for name, module in model.named_modules() if name and not list(module.children())]
            raise ConfigError(f"{key}={kwargs} cannot adapt {type(model).__name__} ({first_line(e)}): fix {key}; "
                              f"the model's layers are named e.g. {', '.join(names[:4])}") from None


def save_adapter(model: nn.Module, folder: Path) -> None:
    """Write the adapters of a PEFT-wrapped `model` (as they are now) into `folder` in PEFT's layout."""
    import peft
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.peft_config[ADAPTER_NAME])
    config.inference_mode = True  # as PeftModel.save_pretrained writes it
    config.save_pretrained(str(folder))
    tensors = peft.get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
    save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(folder / ADAPTER_WEIGHTS_FILE),
              metadata={"format": "pt"})


def read_adapter(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The LoraConfig arguments and the adapter tensors of a PEFT adapter folder, the tensors under the names
    they have in a model wrapped by `add_adapters` (PEFT drops the adapter's name in the file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path = folder / ADAPTER_CONFIG_FILE, folder / ADAPTER_WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ArtifactError(f"{folder} holds no {path.name}: a PEFT adapter folder has {ADAPTER_CONFIG_FILE} "
                                f"and {ADAPTER_WEIGHTS_FILE} (as PeftModel.save_pretrained writes them)")
    try:
        config = json.loads(config_path.read_text())
        tensors = load_file(str(weights_path))
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as e:
        raise ArtifactError(f"{folder} is not a readable PEFT adapter ({first_line(e)}): write it again with "
                            "PeftModel.save_pretrained") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise ArtifactError(f"{config_path} is not a LoRA adapter's config (peft_type "
                            f"{config.get('peft_type') if isinstance(config, dict) else None!r}): pdiff reads LoRA")
    return config, {_with_adapter_name(name): t for name, t in tensors.items()}


# The LoraConfig fields that change what an adapter computes (its shapes, where it sits, its scaling).
COMPUTING_FIELDS = ("target_modules", "r", "lora_alpha", "use_rslora", "use_dora", "bias", "fan_in_fan_out",
                    "rank_pattern", "alpha_pattern")


def check_same_adapter(config: dict[str, Any], kwargs: dict[str, Any], folder: Path, key: str = "model.peft"
                       ) -> None:
    """Refuse, with one line naming the first difference, an adapter folder whose config (`config`, its
    adapter_config.json) computes otherwise than `kwargs` (`key`) would: pdiff would evaluate its numbers at
    another scale or in other layers."""
    wanted = lora_config(kwargs, key).to_dict()
    for field in COMPUTING_FIELDS:
        theirs, ours = config.get(field, wanted[field]), wanted[field]
        if field == "target_modules" and isinstance(theirs, list | set) and isinstance(ours, list | set):
            theirs, ours = sorted(theirs), sorted(ours)
        if theirs != ours:
            raise ConfigError(f"{folder}/{ADAPTER_CONFIG_FILE} has {field}={theirs!r}, {key} gives {ours!r}: set "
                              f"{key}.{field} to the adapters' value")


def _with_adapter_name(name: str) -> str:
    """`...qkv.lora_A.weight` (the file's name) -> `...qkv.lora_A.default.weight` (the wrapped model's)."""
    head, dot, leaf = name.rpartition(".")
    return f"{head}.{ADAPTER_NAME}.{leaf}" if dot and head.rpartition(".")[2].startswith("lora_") else name
