"""Task presets and `key=value` overrides read into a Config, and a Config written back out."""

import pytest

from pdiff.errors import ConfigError
from pdiff.presets import config_keys, key_help, load_config, task_names, to_yaml


@pytest.mark.parametrize("task", task_names())
def test_every_preset_parses(task: str) -> None:
    config = load_config(task)
    assert config.task == task
    assert config.description and config.hardware


def test_overrides_apply() -> None:
    config = load_config("mnist1d-convnet", ["collect.k=50", "generate.n=100", "train.diffusion.steps=2000"])
    assert (config.collect.k, config.generate.n, config.train.diffusion.steps) == (50, 100, 2000)


def test_misspelt_key_names_the_nearest() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'collect\.kk'.*collect\.k"):
        load_config("mnist1d-convnet", ["collect.kk=5"])
    with pytest.raises(ConfigError, match="train.diffusion.steps"):
        load_config("mnist1d-convnet", ["train.difusion.steps=5"])


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(ConfigError, match="collect.k"):
        load_config("mnist1d-convnet", ["collect.k=many"])


def test_unknown_task_suggests() -> None:
    with pytest.raises(ConfigError, match="mnist1d-convnet"):
        load_config("mnist1d-convnt")


def test_switching_an_arch_drops_the_presets_kwargs_for_the_old_one() -> None:
    """The preset's `hidden: 256` is the MLP's; `arch=conv1d` on the command line starts from conv1d's defaults."""
    config = load_config("mnist1d-convnet", ["train.autoencoder.arch=conv1d", "train.diffusion.arch=conv1d"])
    assert config.train.autoencoder.kwargs == {} and config.train.diffusion.kwargs == {}
    config = load_config("mnist1d-convnet",
                         ["train.autoencoder.arch=conv1d", "train.autoencoder.kwargs={channels: [8]}"])
    assert config.train.autoencoder.kwargs == {"channels": [8]}
    same_arch = load_config("mnist1d-convnet", ["train.diffusion.arch=mlp", "train.diffusion.kwargs={depth: 2}"])
    assert same_arch.train.diffusion.kwargs == {"width": 256, "depth": 2}  # same arch: merged as before


def test_precision_no_is_the_word_not_false() -> None:
    """YAML reads a bare `no` as false; precision=no must still mean full float32."""
    assert load_config("mnist1d-convnet", ["precision=no"]).precision == "no"


def test_collect_from_is_written_from_in_yaml_and_read_back(tmp_path) -> None:
    from pdiff.layout import RUN_CONFIG_FILE
    from pdiff.run_folder import read_run_config

    (tmp_path / "c.safetensors").write_bytes(b"")  # a name is enough to load the config; collect reads the file
    preset = tmp_path / "mine.yaml"
    preset.write_text(f"collect: {{from: '{tmp_path}/*.safetensors', state_dict_key: model}}\n")
    config = load_config(str(preset))
    assert config.collect.from_ == f"{tmp_path}/*.safetensors" and config.collect.state_dict_key == "model"
    assert f"  from: {tmp_path}/*.safetensors" in to_yaml(config) and "from_:" not in to_yaml(config)
    (tmp_path / RUN_CONFIG_FILE).write_text(to_yaml(config))
    assert read_run_config(tmp_path) == config
    assert "collect.from" in config_keys() and "collect.from_" not in config_keys()


def test_every_key_says_what_it_sets_and_ranges_come_from_its_rules() -> None:
    entries = {e.key: e for e in key_help(load_config("mnist1d-convnet"))}
    leaves = [k for k in config_keys() if not any(other.startswith(k + ".") for other in config_keys())]
    assert sorted(entries) == sorted(leaves)
    assert not [key for key, e in entries.items() if not e.help], "every setting(...) needs a help string"
    assert entries["collect.momentum"].allowed == "[0, 1]" and entries["collect.epochs"].allowed == ">= 0"
    assert entries["train.diffusion.beta_start"].allowed == "(0, 1)"
    assert entries["generate.sampler"].allowed == "one of ddpm, ddim, dpm, euler, midpoint"
    assert entries["collect.k"].default == 200 and entries["generate.n"].value == load_config().generate.n
