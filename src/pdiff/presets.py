"""Task presets and `key=value` overrides into a validated Config, and a Config back out as YAML, dicts and key
lists.

A task is a preset's name (`tasks/presets/<name>.yaml`) or a YAML file of one's own; the command line's
`key=value` overrides go over it, and the schema (pdiff.config) checks every key and value before any work.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import rules
from .config import Config, validate
from .errors import ConfigError, first_line
from .tasks.imported import importable

PRESETS_DIR = Path(__file__).parent / "tasks" / "presets"


def task_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_config(task: str | Path = "mnist1d-convnet", overrides: list[str] | None = None) -> Config:
    """Resolve a task (preset name or YAML path) plus `key=value` overrides into a validated Config."""
    path = Path(task) if str(task).endswith((".yaml", ".yml")) else PRESETS_DIR / f"{task}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(str(task), task_names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown task {str(task)!r}{hint}: `pdiff tasks` lists the tasks, or pass a YAML path")
    if path.parent != PRESETS_DIR:  # the factories a YAML file names by import path may sit beside it
        importable(path.parent)
    schema = OmegaConf.structured(Config)
    try:
        preset = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        raise ConfigError(f"{path} is not valid YAML ({first_line(e)}): fix its syntax") from None
    try:
        layers = [preset, OmegaConf.from_dotlist(list(overrides or []))]
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        star = next((o for o in overrides or [] if o.partition("=")[2].startswith("*")), None)
        fix = (f"quote a value that starts with * (YAML reads it as an alias), e.g. '{star.partition('=')[0]}="
               f"\"{star.partition('=')[2]}\"'" if star else "write key=value, quoting lists and dicts, e.g. "
               "'collect.subset=[layer4.*]'")
        raise ConfigError(f"an override is not valid YAML ({first_line(e)}): {fix}") from None
    if not isinstance(preset, DictConfig):
        raise ConfigError(f"{path} holds no mapping of config keys: write e.g. `collect: {{k: 50}}`")
    if "task" not in layers[0]:
        layers[0].task = path.stem
    for layer, source in zip(layers, (str(path), "the command line"), strict=True):
        rules.field_names(layer)
        _check_keys(layer, schema, source)
    _kwargs_follow_arch(*layers, schema)
    try:
        merged = OmegaConf.merge(schema, *layers)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{e.full_key}: {first_line(e)}; give it a value of its type (see "
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
        keys.append(f"{prefix}{rules.config_key(key)}")
        if isinstance(value, DictConfig) and key != "kwargs":
            keys.extend(config_keys(value, f"{prefix}{key}."))
    return keys


@dataclass(frozen=True)
class KeyHelp:
    """One settable key as `pdiff show` and `pdiff tasks --keys` print it."""

    key: str  # dotted, e.g. "train.diffusion.steps"
    type: str  # as declared, e.g. "int | None"
    default: Any
    value: Any  # in the config described (the default when none is)
    allowed: str  # what its rules allow, in a few words ("" when its help says)
    help: str


def key_help(config: Config | None = None) -> list[KeyHelp]:
    """Every settable key in field order, with its type, default, value in `config`, allowed values and help."""
    return _key_help(Config(), config or Config())


def _key_help(defaults: Any, node: Any, prefix: str = "") -> list[KeyHelp]:
    found = []
    for f in fields(node):
        value = getattr(node, f.name)
        if is_dataclass(value):
            found += _key_help(getattr(defaults, f.name), value, f"{prefix}{f.name}.")
        else:
            found.append(KeyHelp(f"{prefix}{rules.config_key(f.name)}", str(f.type), getattr(defaults, f.name), value,
                                 rules.allowed_values(f.metadata.get("rules", ())), f.metadata.get("help", "")))
    return found




def to_dict(config: Config) -> dict[str, Any]:
    """The config as plain containers, under the keys a user writes (`collect.from`, see `rules.config_key`)."""
    return rules.user_keys(OmegaConf.to_container(OmegaConf.structured(config), resolve=True))


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
    return OmegaConf.to_yaml(to_dict(config))


def yaml_value(value: Any) -> str:
    """`value` as an override's right-hand side: YAML in flow style ([a, b], {hidden: 64}, null, 0.001)."""
    return yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]
