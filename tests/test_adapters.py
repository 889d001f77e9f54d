"""LoRA adapters: the wrap leaves the model and the global random stream alone, the subset is the adapters
alone, PEFT's folder is written and read back under the model's names, and a bad model.peft is one line."""

from __future__ import annotations

from pathlib import Path

import peft
import pytest
import torch

from pdiff.adapters import add_adapters, read_adapter, save_adapter
from pdiff.errors import ArtifactError, ConfigError, SelectionError
from pdiff.params import ParamSpec
from pdiff.tasks.models import build_model
from tests.conftest import tiny_config

LORA = {"target_modules": ["net.1", "net.4"], "r": 2}


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", (1, 40), 10, hidden=[16, 8]).eval()


def test_adapters_wrap_a_copy_that_computes_what_the_model_does() -> None:
    model, x = mlp(), torch.randn(5, 1, 40)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    state = torch.get_rng_state()
    adapted = add_adapters(model, LORA, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the run's own draws are unchanged
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert torch.allclose(adapted.eval()(x), model(x))  # lora_B starts at zero
    again = add_adapters(model, LORA, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(adapted.state_dict().values(), again.state_dict().values(),
                                                 strict=True))


def test_the_adapters_subset_is_the_lora_parameters_alone() -> None:
    adapted = add_adapters(mlp(), LORA, seed=0)
    spec = ParamSpec.select(adapted, "adapters")
    assert spec.names == tuple(f"base_model.model.net.{layer}.lora_{m}.default.weight" for layer in (1, 4)
                               for m in "AB")
    assert spec.shapes == ((2, 40), (16, 2), (2, 16), (8, 2))
    assert set(spec.names) == {name for name, p in adapted.named_parameters() if p.requires_grad}
    with pytest.raises(SelectionError, match="add them with model.peft"):
        ParamSpec.select(mlp(), "adapters")


def test_an_adapter_folder_is_peft_s_and_reads_back_under_the_model_s_names(tmp_path: Path) -> None:
    model = mlp()
    adapted = add_adapters(model, LORA, seed=0)
    spec = ParamSpec.select(adapted, "adapters")
    vector = torch.randn(spec.dim)
    save_adapter(spec.load_into(adapted, vector), tmp_path / "adapter")
    loaded = peft.PeftModel.from_pretrained(mlp(), tmp_path / "adapter").eval()
    x = torch.randn(4, 1, 40)
    assert torch.allclose(loaded(x), adapted.eval()(x))
    config, tensors = read_adapter(tmp_path / "adapter")
    assert config["r"] == 2 and sorted(config["target_modules"]) == ["net.1", "net.4"]
    assert torch.equal(spec.flatten(tensors), vector)
    with pytest.raises(ArtifactError, match="holds no adapter_config.json"):
        read_adapter(tmp_path)


@pytest.mark.parametrize(("peft_kwargs", "message"), [
    ("{rr: 4, target_modules: [net.1]}", "model.peft has 'rr', which peft.LoraConfig does not take: did you mean r"),
    ("{r: 4}", "model.peft names no target_modules: list the layers to adapt"),
    ("{target_modules: [net.1], layers_pattern: blocks}", "is not a LoRA config"),
])
def test_a_bad_lora_config_is_one_line(peft_kwargs: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        tiny_config("model.name=mlp", f"model.peft={peft_kwargs}", "collect.subset=[adapters]")
    assert "\n" not in str(error.value)


def test_target_modules_the_model_lacks_and_a_subset_without_the_adapters_are_one_line() -> None:
    for kwargs, cause in (({"target_modules": ["nope"]}, "Target modules {'nope'} not found"),
                          ({"target_modules": ["net.1"], "bias": "sometimes"}, "bias: sometimes")):
        with pytest.raises(ConfigError, match=f"model.peft=.* cannot adapt MLP .*{cause}.*fix model.peft; the "
                                              "model's layers are named e.g. net.0, net.1") as error:
            add_adapters(mlp(), kwargs, seed=0)
        assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"leaves out: set collect.subset=\[adapters\]"):
        tiny_config("model.name=mlp", "model.peft={target_modules: [net.1]}")
