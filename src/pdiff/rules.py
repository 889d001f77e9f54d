"""Config fields that carry their own rules, and the one validator that runs them.

`setting(default, *rules, **hashing)` is a dataclass field whose metadata holds the rules its value must pass
and how the config hash treats it (pdiff.hashing). A rule is a function (dotted key, value, whole config) that
raises a ConfigError naming the key and the fix; `check_fields` runs every field's rules in field order, so a
rule may rely on the fields declared before its own. `check_networks` holds the rules between the generator's
two networks, which read the attributes of the networks' registry entries: a new network sets its attributes,
and neither this module nor pdiff.config changes.
"""

from __future__ import annotations

import copy
import inspect
import keyword
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import field, fields, is_dataclass
from typing import Any

from omegaconf import DictConfig

from .autoencoder import AUTOENCODER_ARGUMENTS, AUTOENCODERS, build_autoencoder
from .denoisers import DENOISER_ARGUMENTS, DENOISERS, build_denoiser
from .errors import ConfigError, try_build

Rule = Callable[[str, Any, Any], None]  # (dotted key, value, whole config): raises a ConfigError naming the key


def setting(default: Any, *rules: Rule, help: str = "", **hashing: Any) -> Any:
    """A config field: its default, the `rules` its value must pass, its `help` (what it sets, for `pdiff show`
    and `pdiff tasks --keys`; every field of pdiff.config gives one), and how pdiff.hashing treats it (`hashed`:
    False or a function of the section; `hash_as`; `inert`: the value at which a key added after runs were made
    changes nothing, left out of the hash then with the sibling keys it `drops`)."""
    metadata = {"rules": rules, "help": help, **hashing}
    if isinstance(default, list | dict):  # mutable: every config gets its own copy
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def config_key(name: str) -> str:
    """The key a user writes for the field `name`: a field named after a Python keyword carries a trailing
    underscore in Python (`from_`), not in YAML or on the command line (`collect.from`)."""
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


def field_name(key: str) -> str:
    """The field a user's `key` names (`config_key`'s inverse)."""
    return f"{key}_" if keyword.iskeyword(key) else key


def field_names(node: DictConfig) -> DictConfig:
    """`node` (a config as the user writes it) with its keys renamed, in place, to the fields' names (`from` to
    `from_`); free-form kwargs are left as they are."""
    for key in list(node.keys()):
        if isinstance(node[key], DictConfig) and key != "kwargs":
            field_names(node[key])
        if str(key) != field_name(str(key)):
            node[field_name(str(key))] = node.pop(key)
    return node


def user_keys(tree: dict[str, Any]) -> dict[str, Any]:
    """A config as plain containers (field names) under the keys a user writes (`from_` to `from`)."""
    return {config_key(key): user_keys(value) if isinstance(value, dict) and key != "kwargs" else value
            for key, value in tree.items()}


def check_fields(node: Any, config: Any, prefix: str = "") -> None:
    """Run the rules of every field of the dataclass `node` (and of the dataclasses inside it) in field order."""
    for f in fields(node):
        value = getattr(node, f.name)
        for rule in f.metadata.get("rules", ()):
            rule(f"{prefix}{config_key(f.name)}", value, config)
        if is_dataclass(value):
            check_fields(value, config, f"{prefix}{config_key(f.name)}.")


def ensure(ok: Callable[[Any, Any], bool], message: str, allowed: str | None = None) -> Rule:
    """The rule `ok(value, config)`; else `message`, formatted with the key, the value and the config `c`.
    `allowed` says in a few words which values pass, for `pdiff show` (none: the help says it)."""
    def rule(key: str, value: Any, config: Any) -> None:
        if not ok(value, config):
            raise ConfigError(message.format(key=key, value=value, c=config))
    return allows(rule, lambda: allowed)


def allows(rule: Rule, allowed: Callable[[], str | None]) -> Rule:
    """`rule`, telling `allowed_values` which values pass (read when asked, so registry entries added later
    count)."""
    rule.allowed = allowed
    return rule


def allowed_values(rules: Iterable[Rule]) -> str:
    """What `rules` allow, in a few words ("> 0; <= 1000"); "" when none of them says."""
    said = [rule.allowed() for rule in rules if getattr(rule, "allowed", None)]
    return "; ".join(dict.fromkeys(text for text in said if text))  # in order, each once


def one_of(choices: Iterable[str], known: bool = False) -> Rule:
    """The value must be one of `choices`; a registry is read when checked, so entries added later count."""
    def rule(key: str, value: Any, config: Any) -> None:
        if value not in choices:
            names = ", ".join(sorted(choices) if known else choices)
            raise ConfigError(f"{key}={value!r} is {'not known' if known else 'not valid'}: choose one of {names}")
    return allows(rule, lambda: "one of " + ", ".join(sorted(choices) if known else choices))


def each_of(choices: Iterable[str]) -> Rule:
    """Every item of the list value must be one of `choices`."""
    def rule(key: str, values: list, config: Any) -> None:
        unknown = [v for v in values if v not in choices]
        if unknown:
            raise ConfigError(f"{key}: unknown {unknown[0]!r}: choose from {', '.join(choices)}")
    return allows(rule, lambda: "each of " + ", ".join(choices))


def positive(fix: str = ": set it to 1 or more") -> Rule:
    return ensure(lambda v, c: v is None or v > 0, "{key}={value} must be positive" + fix,  # None: a null default
                  "> 0" + (" or null" if "null" in fix else ""))


def within(low: float, high: float, low_ok: bool, high_ok: bool) -> Rule:
    """A finite real from `low` to `high`, each end included where its `*_ok`."""
    interval = f"{'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"
    return ensure(lambda v, c: math.isfinite(v) and (v >= low if low_ok else v > low)
                  and (v <= high if high_ok else v < high), "{key}={value} is out of range: give a finite value "
                  "in " + interval, f"> {low}" if math.isinf(high) and not low_ok else f">= {low}" if math.isinf(high)
                  else interval)


AT_LEAST_0 = ensure(lambda v, c: v >= 0, "{key}={value} must be zero or more: set it to 0 or above", ">= 0")
INF = float("inf")
REAL_ABOVE_0, REAL_AT_LEAST_0 = within(0, INF, False, False), within(0, INF, True, False)
FRACTION, OPEN_FRACTION = within(0, 1, True, True), within(0, 1, False, False)


def sizes(key: str, kwargs: dict[str, Any], config: Any) -> None:
    """Every number inside a network's kwargs (lists and nested dicts included) is finite and not negative."""
    for name, value in _numbers(kwargs):
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


def check_networks(ae: Any, dm: Any, family: str = "latent_diffusion") -> None:
    """The rules between the generator's networks, given the train.autoencoder (`ae`) and train.diffusion (`dm`)
    sections: each one's kwargs, and what one asks of the other, read from their registry entries: the latent
    each codes or takes (`latent`: "flat" [d] or "tokens" [T, c], which alone can be cropped), the kwarg that
    gives an autoencoder a global latent (`global_kwarg`), and whether a denoiser `takes_condition`. The flow
    family trains no autoencoder (of train.autoencoder it reads latent_dim, the projection's rank), so there the
    autoencoder's arch and kwargs are not checked: a preset's tokens autoencoder does not stand in a flow's way."""
    denoiser = DENOISERS[dm.arch]
    check_kwargs(denoiser, dm.kwargs, "train.diffusion.kwargs", DENOISER_ARGUMENTS)
    if family == "latent_diffusion":
        check_autoencoder(ae, dm)
    elif dm.global_steps:
        raise ConfigError(f"train.diffusion.global_steps={dm.global_steps} trains a denoiser for a global latent, "
                          f"which train.family={family} has none of: set train.diffusion.global_steps=0")
    if dm.tokens_per_step and denoiser.latent != "tokens":
        raise crops_nothing("train.diffusion", dm, DENOISERS)
    parameters = inspect.signature(denoiser).parameters  # a windowed denoiser's crop is whole windows
    window = dm.kwargs.get("window", parameters["window"].default) if "window" in parameters else 1
    if not isinstance(window, int) or window < 1:
        raise ConfigError(f"train.diffusion.kwargs.window={window!r}: a window is a whole number of tokens, 1 or "
                          "more (tokens attend within it)")
    if dm.tokens_per_step % window:
        raise ConfigError(f"train.diffusion.tokens_per_step={dm.tokens_per_step} is not a multiple of the "
                          f"transformer's window ({window}): give a multiple, so a crop is whole windows")
    if dm.condition != "none" and not denoiser.takes_condition:
        takers = " or ".join(name for name, net in DENOISERS.items() if net.takes_condition)
        raise ConfigError(f"train.diffusion.condition={dm.condition} with train.diffusion.arch={dm.arch}: the "
                          f"{dm.arch} denoiser takes no condition yet; use the {takers} denoiser")
    tokens = 4 if denoiser.latent == "tokens" else None  # a nominal T (built on the meta device: no memory)
    try_build(lambda: build_denoiser(dm.arch, ae.latent_dim, tokens, **dm.kwargs), "train.diffusion.kwargs", dm.kwargs)


def check_autoencoder(ae: Any, dm: Any) -> None:
    """The autoencoder's rules and what it asks of the denoiser (for `check_networks`, latent diffusion only)."""
    encoder, denoiser = AUTOENCODERS[ae.arch], DENOISERS[dm.arch]
    check_kwargs(encoder, ae.kwargs, "train.autoencoder.kwargs", AUTOENCODER_ARGUMENTS)
    has_global = bool(encoder.global_kwarg and ae.kwargs.get(encoder.global_kwarg))
    if has_global and not dm.standardise_latents:
        raise ConfigError("train.diffusion.standardise_latents=false with a global latent (train.autoencoder.kwargs."
                          "global_dim): its coordinates spread far beyond the noise the sampler starts from; "
                          "standardise the latents or set global_dim: 0 (and train.diffusion.global_steps: 0)")
    if dm.global_steps and not has_global:
        raise ConfigError(f"train.diffusion.global_steps={dm.global_steps} trains a denoiser for the global latent, "
                          "which only the tokens autoencoder with a global_dim has: set train.autoencoder.kwargs."
                          "global_dim (and arch tokens), or global_steps: 0")
    if encoder.latent != denoiser.latent:
        raise ConfigError(f"train.autoencoder.arch={ae.arch} with train.diffusion.arch={dm.arch}: token latents "
                          "[T, c] need a token denoiser; set both to tokens / transformer, or neither")
    if ae.tokens_per_step and encoder.latent != "tokens":
        raise crops_nothing("train.autoencoder", ae, AUTOENCODERS)
    # Built on the meta device (no memory), at a nominal D, since D needs the model.
    try_build(lambda: build_autoencoder(ae.arch, 64, latent_dim=ae.latent_dim, **ae.kwargs),
              "train.autoencoder.kwargs", ae.kwargs)


def crops_nothing(key: str, section: Any, registry: dict) -> ConfigError:
    """The error for `key`.tokens_per_step set on a network of flat vectors."""
    croppers = " or ".join(name for name, net in registry.items() if net.latent == "tokens")
    return ConfigError(f"{key}.tokens_per_step={section.tokens_per_step} crops token sequences, which "
                       f"{key}.arch={section.arch} does not have: set it to 0, or use arch {croppers}")


TARGET_PERCENTILES = {"min": 0.0, "median": 50.0, "max": 100.0}  # generate.target keywords, besides qNN


MAX_SEED = 2**63 - 1  # torch seeds are 64-bit; the seed + 1 + rank of each process must fit too


def check_seed(seed: int, key: str = "seed=") -> int:
    """`seed` itself when torch can take it (a whole number in 0..2^63 - 1), else a one-line ConfigError naming
    it as `key` ("seed=" in the library, "--seed " on the command line)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{key}{seed} is not a 64-bit seed: give a whole number in 0..{MAX_SEED}")
    return seed


SEED = ensure(lambda v, c: 0 <= v <= MAX_SEED, "{key}={value} is not a 64-bit seed: give a whole number in "
              f"0..{MAX_SEED}", "0 .. 2^63 - 1")


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
