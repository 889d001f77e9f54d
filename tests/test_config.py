import json

import pytest

from pdiff.errors import ConfigError
from pdiff.hashing import hashed_values
from pdiff.pipeline import stage_hash
from pdiff.presets import load_config


def test_defaults_follow_the_paper() -> None:
    config = load_config("mnist1d-convnet")
    assert config.collect.k == 200 and config.generate.n == 200
    assert (config.collect.lr, config.collect.momentum, config.collect.weight_decay) == (0.1, 0.9, 5e-4)
    assert (config.train.autoencoder.input_noise, config.train.autoencoder.latent_noise) == (0.001, 0.1)
    dm = config.train.diffusion
    assert (dm.num_train_timesteps, dm.beta_start, dm.beta_end) == (1000, 1e-4, 2e-2)


@pytest.mark.parametrize("override", ["collect.k=0", "generate.n=-1", "generate.sampler=euler",
                                      "collect.recipe=daily", "train.autoencoder.arch=vae",
                                      "train.diffusion.ema_decay=1.0"])
def test_bad_values(override: str) -> None:
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config("mnist1d-convnet", [override])


def test_stage_hash_changes_only_downstream() -> None:
    base = load_config("mnist1d-convnet")
    more = load_config("mnist1d-convnet", ["generate.n=10"])
    assert stage_hash(base, "train") == stage_hash(more, "train")
    assert stage_hash(base, "generate") != stage_hash(more, "generate")
    moved = load_config("mnist1d-convnet", ["data.data_dir=/elsewhere"])
    assert stage_hash(base, "report") == stage_hash(moved, "report")


def test_train_seed_makes_another_generator_from_the_same_checkpoints() -> None:
    base = load_config("mnist1d-convnet")
    other = load_config("mnist1d-convnet", ["train.seed=1"])
    assert stage_hash(base, "collect") == stage_hash(other, "collect")
    assert stage_hash(base, "train") != stage_hash(other, "train")


def test_raw_latents_change_the_train_hash_and_the_default_keeps_the_older_one() -> None:
    """standardise_latents=true (the default) is left out of the hash, so runs made before the key keep theirs."""
    base = load_config("mnist1d-convnet")
    raw = load_config("mnist1d-convnet", ["train.diffusion.standardise_latents=false"])
    assert stage_hash(base, "collect") == stage_hash(raw, "collect")
    assert stage_hash(base, "train") != stage_hash(raw, "train")
    assert "standardise_latents" not in json.dumps(hashed_values(base, "train"))
    assert "tokens_per_step" not in json.dumps(hashed_values(base, "train"))  # 0: every token, as before


def test_deviation_standardisation_changes_the_train_hash_and_tensor_keeps_the_older_one() -> None:
    base = load_config("mnist1d-convnet")
    deviation = load_config("mnist1d-convnet", ["train.autoencoder.standardise=deviation"])
    assert stage_hash(base, "collect") == stage_hash(deviation, "collect")
    assert stage_hash(base, "train") != stage_hash(deviation, "train")
    assert "standardise" not in json.dumps(hashed_values(base, "train")).replace("standardise_latents", "")
    with pytest.raises(ConfigError, match="standardise.*deviation"):
        load_config("mnist1d-convnet", ["train.autoencoder.standardise=per-number"])


def test_an_image_folder_is_part_of_the_hash() -> None:
    """For data.name=imagefolder the folder is the dataset: another folder must rerun every stage."""
    here, there = (load_config("mnist1d-convnet", ["data.name=imagefolder", f"data.data_dir={d}"]) for d in "ab")
    assert stage_hash(here, "collect") != stage_hash(there, "collect")


def test_an_image_folder_is_one_dataset_however_its_path_is_written(tmp_path, monkeypatch) -> None:
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    relative, absolute = (load_config("mnist1d-convnet", ["data.name=imagefolder", f"data.data_dir={d}"])
                          for d in ("photos", tmp_path / "photos"))
    assert stage_hash(relative, "collect") == stage_hash(absolute, "collect")


def test_baseline_settings_are_checked() -> None:
    config = load_config("mnist1d-convnet", ["evaluate.baselines=[noise,mean_of_k]", "evaluate.mean_of_k=8"])
    assert config.evaluate.baselines == ["noise", "mean_of_k"]
    assert config.evaluate.noise_strengths == [0.001, 0.05, 0.15]  # the official evaluation's
    with pytest.raises(ConfigError, match="evaluate.baselines: unknown 'nosie'.*noise"):
        load_config("mnist1d-convnet", ["evaluate.baselines=[nosie]"])
    with pytest.raises(ConfigError, match="evaluate.noise_strengths"):
        load_config("mnist1d-convnet", ["evaluate.noise_strengths=[0.1,-0.1]"])
    with pytest.raises(ConfigError, match="evaluate.mean_of_k=0 must be positive"):
        load_config("mnist1d-convnet", ["evaluate.mean_of_k=0"])


def test_token_latents_need_a_token_denoiser() -> None:
    load_config("mnist1d-convnet", ["train.autoencoder.arch=tokens", "train.diffusion.arch=transformer"])
    for overrides in (["train.autoencoder.arch=tokens"], ["train.diffusion.arch=transformer"]):
        with pytest.raises(ConfigError, match="token denoiser"):
            load_config("mnist1d-convnet", overrides)
    tokens = ["train.autoencoder.arch=tokens", "train.diffusion.arch=transformer"]
    load_config("mnist1d-convnet", [*tokens, "train.autoencoder.tokens_per_step=3",
                                    "train.diffusion.tokens_per_step=512"])  # two windows of 256
    with pytest.raises(ConfigError, match="crops token sequences.*set it to 0"):
        load_config("mnist1d-convnet", ["train.autoencoder.tokens_per_step=8"])
    with pytest.raises(ConfigError, match="not a multiple of the transformer's window"):
        load_config("mnist1d-convnet", [*tokens, "train.diffusion.tokens_per_step=100"])
    with pytest.raises(ConfigError, match="numels|token_size"):
        load_config("mnist1d-convnet", ["train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                                        "train.autoencoder.kwargs={channels: [4]}"])


def test_one_checkpoint_is_a_valid_config() -> None:
    """The paper's K = 1 ablation: nothing held out, one checkpoint to copy."""
    assert load_config("mnist1d-convnet", ["collect.k=1"]).collect.k == 1


def test_conditioning_keys_leave_unconditioned_hashes_as_they_were() -> None:
    """Runs made before conditioning existed stay done: their hashes (pinned here) do not move."""
    base = load_config("mnist1d-convnet")
    assert stage_hash(base, "train") == "b572d32a1e4232f5" and stage_hash(base, "report") == "7f02b9603b31645c"
    assert stage_hash(load_config("mnist1d-convnet", ["train.diffusion.p_uncond=0.5"]), "report") == \
        stage_hash(base, "report")  # p_uncond does nothing unconditioned


def test_a_target_reruns_only_generate_and_after() -> None:
    conditioned = load_config("mnist1d-convnet", ["train.diffusion.condition=accuracy"])
    assert stage_hash(conditioned, "train") != stage_hash(load_config("mnist1d-convnet"), "train")
    asked = load_config("mnist1d-convnet", ["train.diffusion.condition=accuracy", "generate.target=max"])
    assert asked.generate.target == "max"
    assert stage_hash(asked, "train") == stage_hash(conditioned, "train")
    assert stage_hash(asked, "generate") != stage_hash(conditioned, "generate")
    guided = load_config("mnist1d-convnet", ["train.diffusion.condition=accuracy", "generate.target=max",
                                             "generate.guidance=2"])
    assert stage_hash(guided, "generate") != stage_hash(asked, "generate")
    assert load_config("mnist1d-convnet", ["train.diffusion.condition=accuracy", "generate.target=0.98"]
                       ).generate.target == "0.98"


@pytest.mark.parametrize(("overrides", "message"), [
    (["generate.target=max"], "generate.target=max needs a generator conditioned.*condition=accuracy"),
    (["train.diffusion.condition=accuracy", "generate.target=1.5"], r"generate.target=1.5 is outside \[0, 1\]"),
    (["train.diffusion.condition=accuracy", "generate.target=best"], "'best' is not a target"),
    (["train.diffusion.condition=accuracy", "generate.guidance=2"], "generate.guidance=2.0 steers.*set a target"),
    (["train.diffusion.condition=accuracy", "generate.target=max", "generate.guidance=-1"], "generate.guidance"),
    (["train.diffusion.condition=accuracy", "train.diffusion.p_uncond=0", "generate.target=max",
      "generate.guidance=1"], "p_uncond=0 never trains"),
    (["train.diffusion.p_uncond=1.5"], r"p_uncond=1.5 is a probability"),
    (["train.diffusion.condition=loss"], "train.diffusion.condition='loss' is not valid.*accuracy"),
    (["train.autoencoder.arch=tokens", "train.diffusion.arch=transformer", "train.diffusion.condition=accuracy"],
     "transformer denoiser takes no condition"),
])
def test_bad_conditioning_settings(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("mnist1d-convnet", overrides)


def test_own_checkpoint_files_are_hashed_by_their_bytes_where_they_are_read(tmp_path, monkeypatch) -> None:
    """collect.from and collect.base change collect and after; train.holdout_from changes train and after only;
    the same bytes under another name and folder are the same run."""
    import torch

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        torch.save({"w": torch.zeros(2)}, tmp_path / folder / "x.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "b" / "y.pt")
    plain = load_config("mnist1d-convnet")
    own = load_config("mnist1d-convnet", [f"collect.from={tmp_path}/a/*.pt"])
    assert stage_hash(own, "collect") != stage_hash(plain, "collect")
    monkeypatch.chdir(tmp_path / "b")
    assert stage_hash(load_config("mnist1d-convnet", ["collect.from=x.pt"]), "collect") == stage_hash(own, "collect")
    assert stage_hash(load_config("mnist1d-convnet", ['collect.from="*.pt"']), "collect") != stage_hash(own, "collect")
    with pytest.raises(ConfigError, match="quote a value that starts with \\*.*'collect.from=\"\\*.pt\"'"):
        load_config("mnist1d-convnet", ["collect.from=*.pt"])
    based = load_config("mnist1d-convnet", ["collect.base=y.pt"])
    assert stage_hash(based, "collect") != stage_hash(plain, "collect")
    heldout = load_config("mnist1d-convnet", ["train.holdout_from=y.pt"])
    assert stage_hash(heldout, "collect") == stage_hash(plain, "collect")
    assert stage_hash(heldout, "train") != stage_hash(plain, "train")


@pytest.mark.parametrize("val_size, held_out", [(0.1, 800), (200, 200)])
def test_val_size_is_a_count_or_a_fraction_of_the_training_data(val_size, held_out) -> None:
    from pdiff.tasks.datasets import load_dataset

    data = load_dataset("mnist1d", val_size=val_size, num_samples=10000)
    assert len(data.val) == held_out and len(data.train) + len(data.val) == 8000


@pytest.mark.parametrize("override", ["data.val_size=1.5", "data.val_size=0.0", "data.val_size=-0.1"])
def test_val_size_fractions_are_below_one_and_above_zero(override: str) -> None:
    with pytest.raises(ConfigError, match="data.val_size"):
        load_config("mnist1d-convnet", [override])


def test_the_run_split_is_hashed_from_train_on_and_unused_leaves_every_hash() -> None:
    """train.holdout_seed is hashed only when set: null (the default) keeps the hashes of runs made before it."""
    base = load_config("mnist1d-convnet")
    assert "holdout_seed" not in hashed_values(load_config("mnist1d-convnet", ["train.holdout_seed=null"]), "train")
    run = load_config("mnist1d-convnet", ["train.holdout=40", "train.holdout_split=run"])
    seeded = load_config("mnist1d-convnet", ["train.holdout=40", "train.holdout_split=run", "train.holdout_seed=7"])
    assert stage_hash(run, "collect") == stage_hash(seeded, "collect") == stage_hash(base, "collect")
    assert len({stage_hash(c, "train") for c in (base, run, seeded)}) == 3


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.holdout=1"], "train.holdout=1: the held-out test compares"),
    (["train.holdout=199"], "train.holdout=199 leaves fewer than 2"),
    (["train.holdout=201", "train.holdout_split=run"], "takes more than the collect.k=200 checkpoints"),
    (["train.holdout=40", "train.holdout_seed=3"], "train.holdout_seed=3 seeds the second collection"),
    (["train.holdout_split=run", "train.holdout_seed=-1"], "train.holdout_seed=-1 is not a 64-bit seed"),
])
def test_bad_holdout_settings(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("mnist1d-convnet", overrides)
    load_config("mnist1d-convnet", ["train.holdout=200", "train.holdout_split=run"])  # all of the second collection
