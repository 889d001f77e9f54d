"""Config hashes: a short name for the config values an artifact depends on.

Each stage module declares the config sections its output depends on, its own and those of every stage
upstream of it, as `CONFIG_SECTIONS`; the runner (pdiff.pipeline) marks a stage done under the hash of those
sections, and every artifact records it, so a stage reruns exactly when a value it depends on changes.
The fields of pdiff.config say, in their metadata, what is left out of the hash:
- `hashed=False`: where the data lives, how many models are evaluated together (the results do not change), or
  a function of the section saying whether (an image folder is the dataset, so its path is hashed); `hash_as`
  turns the value into what is hashed (that path resolved: one folder, however it is written);
- `inert`: a key added after runs were made is left out (with its `drops`) while it holds the value at which
  it changes nothing, so that those runs keep their hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from .config import Config
from .errors import ArtifactError
from .presets import to_dict
from .rules import config_key

BASE_TRAINING = ("epochs", "lr", "momentum", "weight_decay")  # the collect fields base training reads


def config_hash(config: Config, sections: Iterable[str]) -> str:
    """The hash of `config`'s hashed values in `sections` (top-level keys: "seed", "data", "train", ...)."""
    flat = to_dict(config)
    return _digest({section: _hashed(getattr(config, section), flat[section]) for section in sections})


def base_hash(config: Config) -> str:
    """Hash of what the trained base model depends on: seed, data, model and collect's base-training fields."""
    flat = to_dict(config)
    chosen = {section: _hashed(getattr(config, section), flat[section]) for section in ("seed", "data", "model")}
    chosen["collect"] = {key: flat["collect"][key] for key in BASE_TRAINING}
    return _digest(chosen)


def hashed_values(config: Config, section: str) -> Any:
    """The values of `section` that go into a hash, as plain containers."""
    return _hashed(getattr(config, section), to_dict(config)[section])


def made_under(config: Config, sections: Iterable[str]) -> dict:
    """What an artifact records about the config that made it: its task, model, seed and the hash of `sections`."""
    return {"task": config.task, "config_hash": config_hash(config, sections), "model": config.model.name,
            "seed": config.seed}


def check_made_under(config: Config, sections: Iterable[str], path: Path, meta: dict, stage: str) -> None:
    """Refuse an artifact of `stage` (at `path`, with metadata `meta`) made under other values of `sections`."""
    check_hash(path, meta, config_hash(config, sections), stage)


def check_hash(path: Path, meta: dict, expected: str, stage: str) -> None:
    """Refuse an artifact of `stage` (at `path`, with metadata `meta`) whose recorded config hash is not
    `expected` (a finished run's, read without its Task)."""
    if meta.get("config_hash") != expected:
        raise ArtifactError(f"{path.name} was made under another config (hash {meta.get('config_hash')}, "
                            f"this config {expected}): rerun `pdiff {stage} --force`")


def _hashed(node: Any, value: Any) -> Any:
    """`value` (the config object `node` as plain containers) without what its fields leave out of the hash."""
    if not is_dataclass(node):
        return value
    dropped = set()
    for f in fields(node):
        if "inert" in f.metadata and value[config_key(f.name)] == f.metadata["inert"]:
            dropped.update((f.name, *f.metadata.get("drops", ())))
    kept = {}
    for f in fields(node):
        hashed = f.metadata.get("hashed", True)
        if f.name in dropped or not (hashed(node) if callable(hashed) else hashed):
            continue
        key, hash_as = config_key(f.name), f.metadata.get("hash_as")
        kept[key] = hash_as(value[key]) if hash_as else _hashed(getattr(node, f.name), value[key])
    return kept


def _digest(chosen: dict) -> str:
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]
