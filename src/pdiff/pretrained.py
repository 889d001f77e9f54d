"""The folder format of an exported generator or checkpoint set: a Hugging Face hub repository.

    config.json               what it is: library_name pdiff, kind (generator / checkpoints), format_version, the
                              pdiff version, task and config hash, parameter spec, the files pdiff wrote, and the
                              generator's settings or the number of checkpoints; the base model's architecture,
                              the class names, input shape and normalisation its inputs need
    config.yaml               (`pdiff export`) the run's resolved config: `pdiff run config.yaml` reruns it
    *.safetensors             the weights: autoencoder + diffusion, or checkpoints; base.safetensors (optional)
    README.md                 the model or dataset card (`library_name: pdiff`), rendered by `pdiff.render`

`ParameterGenerator.save_pretrained` and `CheckpointSet.save_pretrained` write it (through `atomic_folder`, so an
existing folder is replaced only when it is an earlier export of the same kind and `force` is given); `pdiff
export` adds a run's base model and results. config.json is the folder's marker. Exports carry an integer
`format_version`: older ones are read, newer ones refused with one line.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import DatasetCardData, ModelCardData

from .errors import ArtifactError
from .folders import LIBRARY, Marker, owned_by_pdiff
from .layout import CARD_FILE, EXPORT_CONFIG_FILE
from .params import ParamSpec
from .provenance import version
from .render import Section, render_markdown
from .store import check_format_version, save_json, save_text

FORMAT_VERSION = 1  # of config.json; 0: written before it carried one
GENERATOR = Marker(EXPORT_CONFIG_FILE, "generator", "pdiff export of a generator")
CHECKPOINTS = Marker(EXPORT_CONFIG_FILE, "checkpoints", "pdiff export of checkpoints")
PAPER = "https://arxiv.org/abs/2402.13144"


def write_export(folder: Path, marker: Marker, fields: dict, card: str) -> dict:
    """Write config.json (the marker, with `fields`) and README.md (`card`) into `folder`; returns the config."""
    config = {"library_name": LIBRARY, "kind": marker.kind, "format_version": FORMAT_VERSION,
              "pdiff_version": version(), **fields}
    save_json(folder / EXPORT_CONFIG_FILE, config)
    save_text(folder / CARD_FILE, card)
    return config


def read_export(folder: Path, marker: Marker) -> dict:
    """config.json of an export of `marker`'s kind, checked to be one that this pdiff reads."""
    config = owned_by_pdiff(folder, marker)
    if config is None:
        raise ArtifactError(f"{folder} holds no pdiff {marker.kind} export (no config.json with library_name pdiff "
                            f"and kind {marker.kind}): give a folder written by `pdiff export`")
    check_format_version(folder / EXPORT_CONFIG_FILE, config, FORMAT_VERSION)
    if not isinstance(config.get("spec"), dict):
        raise ArtifactError(f"{folder / EXPORT_CONFIG_FILE} lacks the parameter spec: export the run again")
    return config


# ---- cards --------------------------------------------------------------------------------------
def generator_card(config: dict, sections: list[Section] = (), command: str | None = None,
                   repo_id: str | None = None) -> str:
    """The model card of an exported generator: YAML metadata (library_name: pdiff, tags, the dataset), what the
    subset is, `sections` (a run's results), the command that made it and how to sample."""
    spec = ParamSpec.from_dict(config["spec"])
    task, model, dataset = config.get("task", "custom"), config.get("model"), config.get("dataset")
    network = f"a `{model}` trained on `{dataset}`" if model and dataset else "a network"
    data = ModelCardData(library_name=LIBRARY, tags=_tags(model, dataset), datasets=[dataset] if dataset else None)
    repo, base = repo_id or "USER/REPO", config.get("base")
    ae, dm = config["train"]["autoencoder"], config["train"]["diffusion"]
    flow = config["train"].get("family") == "flow"
    coder = (f"Projection on {ae['latent_dim']} principal axes (the vectors themselves if that is D or more), "
             f"flow matching with a `{dm['arch']}` velocity network ({dm['steps']} steps)" if flow else
             f"Autoencoder `{ae['arch']}` (latent dim {ae['latent_dim']}, {ae['steps']} steps), denoiser "
             f"`{dm['arch']}` ({dm['steps']} steps, T = {dm['num_train_timesteps']})")
    sampler = 'sampler="euler", ' if flow else ""
    made = (coder
            + (f" with an MLP denoiser of its own for the global latent ({dm['global_steps']} steps; sampled by "
               "the full DDPM chain)" if dm.get("global_steps") else "") + f", seed {config['seed']}, "
            f"train-stage config hash `{config.get('config_hash')}`; `config.json` holds every setting.")
    sample = ["```bash", f"pdiff sample {repo} -n 10 --out samples/"
              + ("   # 10 full state_dicts: base + generated subset" if base else ""), "```", "", "```python",
              "from pdiff import ParameterGenerator", "", f'gen = ParameterGenerator.from_pretrained("{repo}")',
              f"vectors = gen.sample(10, {sampler}seed=0)  # [10, {spec.dim}]",
              "subset = gen.spec.to_state_dict(vectors[0])    # name -> tensor: load_state_dict(subset, strict=False)",
              "```"]
    if base:
        sample += ["", "The base model's architecture: `pdiff.tasks.models.build_model("
                   f"{base['model']!r}, {tuple(base['input_shape'])}, {base['num_classes']}"
                   + "".join(f", {k}={v!r}" for k, v in base["model_kwargs"].items()) + ")`"
                   + (f", wrapped with LoRA adapters by `pdiff.adapters.add_adapters(model, {base['peft']!r}, seed=0)`"
                      " (`pdiff sample --format peft` writes PEFT adapter folders)" if base.get("peft") else "")
                   + ".", "", *_inputs(base)]
    body = [
        Section("What it is", text=f"A {'flow-matching' if flow else 'latent diffusion'} model over trained network "
                f"parameters ([p-diff]({PAPER}), Wang et al. 2024), made with pdiff {config['pdiff_version']}. It "
                f"generates {len(spec.names)} parameter tensors (D = {spec.dim} numbers) of {network}; "
                + ("every other weight comes from the base model in `base.safetensors`." if base else
                   "the base model was not exported, so bring your own with the other weights.")),
        Section("The generated subset", header=["tensor", "shape"],
                rows=[[f"`{name}`", str(list(shape))] for name, shape in zip(spec.names, spec.shapes, strict=True)]),
        *sections,
        Section("How it was made", text="\n".join([*(["```bash", command, "```", ""] if command else []), made])),
        Section("How to sample", text="\n".join(sample)),
    ]
    return _card(data.to_yaml(), f"p-diff parameter generator: {task}", body)


def checkpoints_card(config: dict, test_accuracy: list[float] | None = None, n_test: int | None = None,
                     command: str | None = None, repo_id: str | None = None) -> str:
    """The dataset card of an exported checkpoint set: what the checkpoints are, their test accuracies (in [0, 1],
    on `n_test` examples), how to load them."""
    model, dataset, task = config.get("model"), config.get("dataset"), config.get("task", "custom")
    spec = ParamSpec.from_dict(config["spec"])
    network = f"a `{model}` trained on `{dataset}`" if model and dataset else "a network"
    data = DatasetCardData(tags=[*_tags(model, dataset), "model-checkpoints"], library_name=LIBRARY,
                           pretty_name=f"p-diff checkpoints: {task}")
    text = (f"K = {config['k']} checkpoints of {len(spec.names)} parameter tensors (D = {spec.dim}) of {network}, "
            f"saved along one training trajectory of that subset ([p-diff]({PAPER})), made with pdiff "
            f"{config['pdiff_version']}: `checkpoints.safetensors` holds `params` [K, D]"
            + (", `val_accuracy`, `test_accuracy` [K] and `test_predictions` [K, n_test]." if test_accuracy else "."))
    if test_accuracy:
        acc = [100 * a for a in test_accuracy]
        text += (f"\n\nTest accuracy: {min(acc):.2f} to {max(acc):.2f}% (mean {sum(acc) / len(acc):.2f}%) on "
                 f"{n_test} test examples.")
    if command:
        text += f"\n\nMade by:\n\n```bash\n{command}\n```"
    load = "\n".join(["```python", "import pdiff", "",
                      f'ckpts = pdiff.CheckpointSet.from_pretrained("{repo_id or "USER/REPO"}")',
                      "gen = pdiff.ParameterGenerator(ckpts.spec, pdiff.load_config(\"mnist1d-convnet\").train)"
                      ".fit(ckpts)", "```"])
    return _card(data.to_yaml(), f"p-diff checkpoints: {task}",
                 [Section("What they are", text=text), Section("How to load and train a generator on them",
                                                               text=load)])


def _inputs(base: dict) -> list[str]:
    """What the models expect of a new input, from config.json's `base`: its shape, the class names in label
    order and the normalisation (each "not recorded" in an export of a run made before they were kept)."""
    classes = base.get("classes")
    norm = base.get("normalisation", "not recorded")
    if norm is None:
        how = "none: inputs are used as the dataset gives them"
    elif isinstance(norm, dict):
        mean, std = ([round(v, 4) for v in norm[key]] for key in ("mean", "std"))
        how = f"pixels divided by 255, then per channel (x - mean) / std with mean {mean} and std {std}"
    else:
        how = "not recorded"
    return [f"Inputs: shape {list(base['input_shape'])}; normalisation: {how}.",
            "Classes, in label order: " + (", ".join(f"`{c}`" for c in classes) if classes else "not recorded") + "."]


def _card(front_matter: str, title: str, sections: list[Section]) -> str:
    return f"---\n{front_matter}\n---\n\n" + render_markdown(title, sections) + "\n"


def _tags(model: str | None, dataset: str | None) -> list[str]:
    return ["pdiff", "p-diff", "parameter-generation", "diffusion", *(t for t in (model, dataset) if t)]
