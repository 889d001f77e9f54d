import pytest

from pdiff.config import STAGES
from pdiff.hashing import base_hash, hashed_values
from pdiff.pipeline import STAGE_MODULES, stage_hash
from pdiff.presets import load_config

CASES = {  # name: (task, overrides)
    "mnist1d-convnet": ("mnist1d-convnet", []),
    "mnist1d-convnet-official": ("mnist1d-convnet-official", []),
    "cifar10-resnet18": ("cifar10-resnet18", []),
    "mnist-mlp-full": ("mnist-mlp-full", []),  # tokens_per_step, global_steps, standardise: none at the inert value
    "tokens-untouched": ("mnist-mlp-full", ["train.diffusion.global_steps=0", "train.autoencoder.tokens_per_step=0",
                                            "train.diffusion.tokens_per_step=0"]),
    "seed": ("mnist1d-convnet", ["train.seed=1", "seed=3"]),
    "precision": ("mnist1d-convnet", ["precision=bf16"]),
    "conditioned": ("mnist1d-convnet", ["train.diffusion.condition=accuracy", "train.diffusion.p_uncond=0.5",
                                        "generate.target=max", "generate.guidance=2"]),
    "conditioned-untargeted": ("mnist1d-convnet", ["train.diffusion.condition=accuracy", "generate.guidance=0"]),
    "raw-deviation": ("mnist1d-convnet", ["train.diffusion.standardise_latents=false",
                                          "train.autoencoder.standardise=deviation"]),
    "imagefolder": ("mnist1d-convnet", ["data.name=imagefolder", "data.data_dir=/srv/photos", "data.download=false"]),
    # Values that change no result, and p_uncond unconditioned: the default preset's hashes.
    "unhashed": ("mnist1d-convnet", ["data.data_dir=/elsewhere", "data.download=false", "evaluate.model_chunk=7",
                                     "device=cpu", "task=other", "description=x", "hardware=y",
                                     "train.diffusion.p_uncond=0.5"]),
    "one-generator": ("mnist1d-convnet", ["train.generators=1", "train.diffusion.prior=auto"]),  # the inert values
    "no-adapters": ("mnist1d-convnet", ["model.peft=null", "data.pretrain=null"]),  # the inert values
    "holdout-unused": ("mnist1d-convnet", ["train.holdout_seed=null"]),  # the inert value of the held-out family
}
# The hashes of collect, train, generate, evaluate (report's is evaluate's) and the base model, as the config
# module gave them before the fields carried their own hashing rules. Runs made then must stay done: a row may
# change only where its preset's values were changed on purpose.
PINNED = {
    "mnist1d-convnet": "ba9404523c4bba5d b572d32a1e4232f5 53907a0968773193 7f02b9603b31645c 1caeab2f4c9da4ab",
    "mnist1d-convnet-official": "ba9404523c4bba5d 63a042e80a00c9c7 564a9d810da1c4ab 95edbf5ea0eea36b 1caeab2f4c9da4ab",
    "cifar10-resnet18": "57aa9507921267cf 8c1f3ab611c04b8b d7a75a0f3ce4a254 256854a75620d25a ff45caf61a8c7443",
    "mnist-mlp-full": "85071e7e39c7810c a459fb0ad55cf9de f7a53b881c4489ea 2ae8dc152502ba64 b210e1fb2f21ef32",
    "tokens-untouched": "85071e7e39c7810c 69281a13aede1547 4182efc81b1411a6 a840e0ff0acebe9e b210e1fb2f21ef32",
    "seed": "14917a79231d870f 0e0c7b28964db49f db76e17449b55ddd e8b4b810933a329a a83cb747d44fb887",
    "precision": "daaf25be1bc39fb1 94610b7d5013297f 11fb21f36d50c963 eec1e75b6d9d02d1 1caeab2f4c9da4ab",
    "conditioned": "ba9404523c4bba5d cab8843c2b929c89 ce7c6bda177a4031 9bd901cfd9718eec 1caeab2f4c9da4ab",
    "conditioned-untargeted": "ba9404523c4bba5d 1518624d9f8b7c58 c0079d09c216f252 9c7725d7c14003ea 1caeab2f4c9da4ab",
    "raw-deviation": "ba9404523c4bba5d 89aa35244a2957d0 02059e491215bffb 595f790c15deeaf3 1caeab2f4c9da4ab",
    "imagefolder": "44bbae421ad8cd54 bb17ebcd82789278 5249b4e41132a53d 3fcf1acb669217aa 5e6203499bf97b1b",
    "unhashed": "ba9404523c4bba5d b572d32a1e4232f5 53907a0968773193 7f02b9603b31645c 1caeab2f4c9da4ab",
    "one-generator": "ba9404523c4bba5d b572d32a1e4232f5 53907a0968773193 7f02b9603b31645c 1caeab2f4c9da4ab",
    "no-adapters": "ba9404523c4bba5d b572d32a1e4232f5 53907a0968773193 7f02b9603b31645c 1caeab2f4c9da4ab",
    "holdout-unused": "ba9404523c4bba5d b572d32a1e4232f5 53907a0968773193 7f02b9603b31645c 1caeab2f4c9da4ab",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_stage_hashes_are_pinned(name: str) -> None:
    task, overrides = CASES[name]
    config = load_config(task, overrides)
    *stages, base = PINNED[name].split()
    assert [stage_hash(config, stage) for stage in STAGES] == [*stages, stages[-1]]
    assert base_hash(config) == base


def test_each_stage_depends_on_every_section_upstream_of_it() -> None:
    """A stage's CONFIG_SECTIONS hold those of the stage before it: changing collect reruns everything after."""
    modules = [STAGE_MODULES[stage] for stage in STAGES]
    for before, after in zip(modules, modules[1:], strict=False):
        assert set(before.CONFIG_SECTIONS) <= set(after.CONFIG_SECTIONS)
    every = {"seed", "precision", "data", "model", "collect", "train", "generate", "evaluate"}
    assert set(STAGE_MODULES["report"].CONFIG_SECTIONS) == every


def test_a_key_at_its_inert_value_is_left_out_with_what_it_drops() -> None:
    base = hashed_values(load_config("mnist1d-convnet"), "train")
    assert "condition" not in base["diffusion"] and "p_uncond" not in base["diffusion"] and "seed" not in base
    conditioned = hashed_values(load_config("mnist1d-convnet", ["train.diffusion.condition=accuracy"]), "train")
    assert conditioned["diffusion"]["condition"] == "accuracy" and conditioned["diffusion"]["p_uncond"] == 0.1
    assert "data_dir" not in hashed_values(load_config("mnist1d-convnet"), "data")


def test_several_generators_change_the_hashes_from_the_train_stage_on() -> None:
    base, three = load_config("mnist1d-convnet"), load_config("mnist1d-convnet", ["train.generators=3"])
    assert stage_hash(three, "collect") == stage_hash(base, "collect") and base_hash(three) == base_hash(base)
    for stage in STAGES[1:]:
        assert stage_hash(three, stage) != stage_hash(base, stage)
    assert hashed_values(three, "train")["generators"] == 3 and "generators" not in hashed_values(base, "train")
