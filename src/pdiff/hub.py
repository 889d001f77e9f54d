"""Share a run's generator and checkpoints as Hugging Face hub repositories (`pdiff export`, `pdiff push`).

An exported generator is one folder that is a valid hub model repository:

    config.json               what it is: pdiff version, task and its train-stage config hash, parameter spec,
                              the generator's config (autoencoder, diffusion), the base model's architecture
    autoencoder.safetensors   the run's generator/ weights (the same tensors)
    diffusion.safetensors
    base.safetensors          the base model (optional), so that samples become full, ready-to-load models
    README.md                 the model card (`huggingface_hub.ModelCard`, `library_name: pdiff`)

An exported checkpoint set is a hub dataset repository: config.json, checkpoints.safetensors, base.safetensors
and a dataset card. `ParameterGenerator.from_pretrained` and `CheckpointSet.from_pretrained` read either a local
folder or a repo id (downloaded through `huggingface_hub.snapshot_download`, which serves the local cache offline).
"""

from __future__ import annotations

import importlib.metadata
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx2  # the HTTP client of huggingface_hub; its network errors are no OSErrors
import huggingface_hub
import torch
import yaml
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from . import evaluate, train
from .checkpoints import CheckpointSet
from .collect import BASE_FILE, CHECKPOINTS_FILE, weights_finite
from .collect import CONFIG_SECTIONS as COLLECT_SECTIONS
from .collect import FOLDER as COLLECT_FOLDER  # `from . import collect` gives pdiff.collect, the function
from .config import Config, load_config, task_names, to_dict
from .errors import ArtifactError, HubError
from .generator import ParameterGenerator
from .hashing import config_hash
from .params import ParamSpec
from .report import accuracy_table, verdict_lines
from .store import load_json, load_tensors, save_json, save_tensors, save_text

CONFIG_FILE, CARD_FILE = "config.json", "README.md"
LIBRARY = "pdiff"
PAPER = "https://arxiv.org/abs/2402.13144"
NETWORK_ERRORS = (OSError, HfHubHTTPError, httpx2.TransportError)


def version() -> str:
    return importlib.metadata.version("pdiff")


# ---- generators ---------------------------------------------------------------------------------
def save_generator(gen: ParameterGenerator, directory: str | Path, metadata: dict | None = None,
                   results: dict | None = None, command: str | None = None, repo_id: str | None = None) -> Path:
    """Write `gen` as a hub model repository into `directory`: its two weight files, config.json, README.md.

    `metadata` (task, config_hash, model, dataset, base, ...) goes into config.json and the weight files;
    `results` (a run's results.json), `command` (what made it) and `repo_id` fill in the model card.
    """
    directory = Path(directory)
    metadata = dict(metadata or {})
    gen.save(directory, metadata)
    config = {"library_name": LIBRARY, "kind": "generator", "pdiff_version": version(), **metadata,
              "seed": gen.seed, "spec": gen.spec.to_dict(),
              "train": {"autoencoder": asdict(gen.config.autoencoder), "diffusion": asdict(gen.config.diffusion)}}
    save_json(directory / CONFIG_FILE, config)
    save_text(directory / CARD_FILE, str(generator_card(config, results, command, repo_id)))
    return directory


def load_generator(name_or_path: str | Path, device: torch.device | str = "cpu",
                   revision: str | None = None) -> ParameterGenerator:
    """A fitted generator from an exported folder or a hub repo id (see `download`)."""
    folder = download(name_or_path, "model", revision)
    config = _read_config(folder, "generator")
    gen = ParameterGenerator.load(folder, device)
    if gen.spec != ParamSpec.from_dict(config["spec"]):
        raise ArtifactError(f"{folder}: config.json and the weight files describe different parameter subsets; "
                            "export the run again")
    return gen


def export(run_dir: str | Path, out_dir: str | Path, base: bool = True, repo_id: str | None = None) -> Path:
    """Write the generator of a finished run (with its base model unless `base=False`) into `out_dir` as a hub
    model repository with a model card; returns `out_dir`."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    train_hash = config_hash(config, train.CONFIG_SECTIONS)
    gen = ParameterGenerator.load(run_dir / train.FOLDER, config_hash=train_hash)
    metadata = {"task": config.task, "config_hash": train_hash, "model": config.model.name, "dataset": config.data.name}
    results = _current_results(run_dir, config)
    with _folder(Path(out_dir)) as out:
        if base:
            metadata["base"] = _copy_base(run_dir, config, out)
        save_generator(gen, out, metadata, results, shlex.join(["pdiff", "run", *run_arguments(config)]), repo_id)
    return Path(out_dir)


# ---- checkpoint sets ----------------------------------------------------------------------------
def save_checkpoints(ckpts: CheckpointSet, directory: str | Path, metadata: dict | None = None,
                     command: str | None = None, repo_id: str | None = None) -> Path:
    """Write `ckpts` as a hub dataset repository into `directory`: checkpoints.safetensors, config.json, README.md."""
    directory = Path(directory)
    metadata = dict(metadata or {})
    ckpts.save(directory / CHECKPOINTS_FILE, metadata)
    config = {"library_name": LIBRARY, "kind": "checkpoints", "pdiff_version": version(), **metadata,
              "k": len(ckpts), "spec": ckpts.spec.to_dict()}
    save_json(directory / CONFIG_FILE, config)
    save_text(directory / CARD_FILE, str(checkpoints_card(ckpts, config, command, repo_id)))
    return directory


def load_checkpoints(name_or_path: str | Path, revision: str | None = None) -> CheckpointSet:
    """A checkpoint set from an exported folder or a hub dataset repo id (see `download`)."""
    folder = download(name_or_path, "dataset", revision)
    _read_config(folder, "checkpoints")
    ckpts, _ = CheckpointSet.load(folder / CHECKPOINTS_FILE)
    return ckpts


def export_checkpoints(run_dir: str | Path, out_dir: str | Path, base: bool = True,
                       repo_id: str | None = None) -> Path:
    """Write the collected checkpoints of a run (with its base model unless `base=False`) into `out_dir` as a
    hub dataset repository with a dataset card; returns `out_dir`."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    path = run_dir / COLLECT_FOLDER / CHECKPOINTS_FILE
    ckpts, meta = CheckpointSet.load(path)
    _check_hash(path, meta, config)
    metadata = {"task": config.task, "config_hash": meta["config_hash"], "model": config.model.name,
                "dataset": config.data.name}
    with _folder(Path(out_dir)) as out:
        if base:
            metadata["base"] = _copy_base(run_dir, config, out)
        save_checkpoints(ckpts, out, metadata, shlex.join(["pdiff", "collect", *run_arguments(config)]), repo_id)
    return Path(out_dir)


# ---- the hub ------------------------------------------------------------------------------------
def is_repo_id(name: str) -> bool:
    """Whether `name` can be a hub repo id ("user/name" or "name")."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def download(name_or_path: str | Path, repo_type: str = "model", revision: str | None = None) -> Path:
    """The local folder of an export: `name_or_path` itself if it is a folder, else the hub repo of that id,
    downloaded (or taken from the cache; with HF_HUB_OFFLINE=1 only from the cache)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    name = str(name_or_path)
    if not is_repo_id(name):
        raise HubError(f"{name} is neither a folder nor a hub repo id (user/name): give an exported folder "
                       "(`pdiff export`) or a repo id")
    try:
        return Path(huggingface_hub.snapshot_download(name, repo_type=repo_type, revision=revision,
                                                      library_name=LIBRARY, library_version=version()))
    except LocalEntryNotFoundError:
        why = ("HF_HUB_OFFLINE=1 forbids downloading it" if huggingface_hub.constants.HF_HUB_OFFLINE
               else "the hub cannot be reached")
        raise HubError(f"{name} is no local folder, and the hub {repo_type} repo {name} is not in the local cache "
                       f"while {why}: check the path, or download it once on a connected machine") from None
    except RepositoryNotFoundError:
        raise HubError(f"{name} is no local folder, and the hub has no {repo_type} repo {name} that this token may "
                       "read: check the path or id, or log in with `hf auth login` if it is private") from None
    except HfHubHTTPError as e:
        raise HubError(f"downloading {name} failed ({_first_line(e)}): check the repo id and revision") from None


def push(run_dir: str | Path, repo_id: str, private: bool = False, checkpoints: bool = False, base: bool = True,
         token: str | None = None) -> str:
    """Export the run's generator (or with `checkpoints`, its checkpoint set as a dataset) and upload it to the
    hub repo `repo_id`, created if missing; returns the repo's URL."""
    if not is_repo_id(repo_id) or "/" not in repo_id:
        raise HubError(f"{repo_id!r} is not a hub repo id: write it as user/name")
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise HubError("HF_HUB_OFFLINE=1 forbids uploading: push from a machine with a network, without "
                       "HF_HUB_OFFLINE set (`pdiff export` writes the same folder offline)")
    token = token or huggingface_hub.get_token()
    if token is None:
        raise HubError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN, then push again")
    repo_type = "dataset" if checkpoints else "model"
    with tempfile.TemporaryDirectory(prefix="pdiff-push-") as tmp:
        folder = Path(tmp) / "export"
        (export_checkpoints if checkpoints else export)(run_dir, folder, base, repo_id)
        api = huggingface_hub.HfApi(token=token, library_name=LIBRARY, library_version=version())
        try:
            url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=folder,
                              commit_message=f"pdiff {version()}: {repo_type} exported from {Path(run_dir).name}")
        except NETWORK_ERRORS as e:
            raise HubError(f"uploading to the hub failed ({type(e).__name__}: {_first_line(e)}): check the network "
                           f"and that your token may write to {repo_id}") from None
    return str(url)


# ---- model and dataset cards --------------------------------------------------------------------
def generator_card(config: dict, results: dict | None = None, command: str | None = None,
                   repo_id: str | None = None) -> ModelCard:
    """The model card of an exported generator: YAML metadata (library_name: pdiff, tags, the dataset) and a body
    saying what the subset is, the run's results with their CIs, the command that made it and how to sample."""
    spec = ParamSpec.from_dict(config["spec"])
    task, model, dataset = config.get("task", "custom"), config.get("model"), config.get("dataset")
    network = f"a `{model}` trained on `{dataset}`" if model and dataset else "a network"
    data = ModelCardData(library_name=LIBRARY, tags=_tags(model, dataset), datasets=[dataset] if dataset else None)
    repo = repo_id or "USER/REPO"
    base = config.get("base")
    lines = [f"# p-diff parameter generator: {task}", "",
             f"A latent diffusion model over trained network parameters ([p-diff]({PAPER}), Wang et al. 2024), "
             f"made with pdiff {config['pdiff_version']}. It generates {len(spec.names)} parameter tensors "
             f"(D = {spec.dim} numbers) of {network}; "
             + ("every other weight comes from the base model in `base.safetensors`." if base else
                "the base model was not exported, so bring your own with the other weights."),
             "", "## The generated subset", "", "| tensor | shape |", "|---|---|",
             *(f"| `{name}` | {list(shape)} |" for name, shape in zip(spec.names, spec.shapes, strict=True)), "",
             "## Results", "", *_results_lines(results), "", "## How it was made", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    ae, dm = config["train"]["autoencoder"], config["train"]["diffusion"]
    lines += [f"Autoencoder `{ae['arch']}` (latent dim {ae['latent_dim']}, {ae['steps']} steps), denoiser "
              f"`{dm['arch']}` ({dm['steps']} steps, T = {dm['num_train_timesteps']})"
              + (f" with an MLP denoiser of its own for the global latent ({dm['global_steps']} steps; sampled by "
                 "the full DDPM chain)" if dm.get("global_steps") else "") + f", seed {config['seed']}, "
              f"train-stage config hash `{config.get('config_hash')}`; `config.json` holds every setting.", "",
              "## How to sample", "", "```bash", f"pdiff sample {repo} -n 10 --out samples/"
              + ("   # 10 full state_dicts: base + generated subset" if base else ""), "```", "", "```python",
              "from pdiff import ParameterGenerator", "",
              f'gen = ParameterGenerator.from_pretrained("{repo}")',
              f"vectors = gen.sample(10, seed=0)              # [10, {spec.dim}]",
              "subset = gen.spec.to_state_dict(vectors[0])    # name -> tensor: load_state_dict(subset, strict=False)",
              "```"]
    if base:
        lines += ["", "The base model's architecture: `pdiff.tasks.models.build_model("
                  f"{base['model']!r}, {tuple(base['input_shape'])}, {base['num_classes']}"
                  + "".join(f", {k}={v!r}" for k, v in base["model_kwargs"].items()) + ")`."]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def checkpoints_card(ckpts: CheckpointSet, config: dict, command: str | None = None,
                     repo_id: str | None = None) -> DatasetCard:
    """The dataset card of an exported checkpoint set: what the checkpoints are, their accuracies, how to load them."""
    model, dataset = config.get("model"), config.get("dataset")
    network = f"a `{model}` trained on `{dataset}`" if model and dataset else "a network"
    data = DatasetCardData(tags=[*_tags(model, dataset), "model-checkpoints"], library_name=LIBRARY,
                           pretty_name=f"p-diff checkpoints: {config.get('task', 'custom')}")
    lines = [f"# p-diff checkpoints: {config.get('task', 'custom')}", "",
             f"K = {len(ckpts)} checkpoints of {len(ckpts.spec.names)} parameter tensors (D = {ckpts.spec.dim}) of "
             f"{network}, saved along one training trajectory of that subset "
             f"([p-diff]({PAPER})), made with pdiff {config['pdiff_version']}: `checkpoints.safetensors` holds "
             "`params` [K, D]" + (", `val_accuracy`, `test_accuracy` [K] and `test_predictions` [K, n_test]"
                                  if ckpts.test_accuracy is not None else "") + ".", ""]
    if ckpts.test_accuracy is not None:
        acc = 100 * ckpts.test_accuracy
        lines += [f"Test accuracy: {acc.min():.2f} to {acc.max():.2f}% (mean {acc.mean():.2f}%) on "
                  f"{ckpts.test_predictions.shape[1]} test examples.", ""]
    if command:
        lines += ["Made by:", "", "```bash", command, "```", ""]
    lines += ["## How to load and train a generator on them", "", "```python", "import pdiff", "",
              f'ckpts = pdiff.CheckpointSet.from_pretrained("{repo_id or "USER/REPO"}")',
              "gen = pdiff.ParameterGenerator(ckpts.spec, pdiff.load_config(\"mnist1d-convnet\").train).fit(ckpts)",
              "```"]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def _tags(model: str | None, dataset: str | None) -> list[str]:
    return ["pdiff", "p-diff", "parameter-generation", "diffusion", *(t for t in (model, dataset) if t)]


def _results_lines(results: dict | None) -> list[str]:
    if results is None:
        return ["The run folder holds no evaluation of this generator's models (`pdiff evaluate` makes one)."]
    header, rows = accuracy_table(results["summary"], comparisons=results.get("comparisons"))
    n_test = results.get("n_test")
    lines = [f"Test accuracy (%) of the run's models{f' on {n_test} test examples' if n_test else ''}: "
             "*best* is the test accuracy of the model with the best validation accuracy, *max* the test-set "
             "maximum; the CIs are 95% two-level bootstrap intervals (test examples and models resampled).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             *("| " + " | ".join(row) + " |" for row in rows)]
    if "resolution" in results:
        lines += ["", f"This test set resolves differences of about ±{100 * results['resolution']:.2f} points."]
    verdicts = [line for line in verdict_lines(results) if line.startswith("generated vs")]
    return lines + (["", *(f"- {line}" for line in verdicts)] if verdicts else [])


# ---- run folders --------------------------------------------------------------------------------
def run_config(run_dir: Path) -> Config:
    """The resolved config a run folder records in config.yaml."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: {run_dir} is not a run folder (run `pdiff run` first)")
    return load_config(path)


def run_arguments(config: Config) -> list[str]:
    """[TASK, key=value, ...]: the preset and the overrides that give `config` (data.data_dir left out: it is a
    local path), so that `pdiff run` with them reproduces the run."""
    if config.task not in task_names():
        return [f"{config.task}.yaml"]
    preset = _leaves(to_dict(load_config(config.task)))
    overrides = []
    for key, value in _leaves(to_dict(config)).items():
        if key not in ("data.data_dir", "data.download") and preset.get(key, object()) != value:
            overrides.append(f"{key}={_yaml_value(value)}")
    return [config.task, *overrides]


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; an empty dict stays a leaf."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _yaml_value(value: Any) -> str:
    """`value` as an override's right-hand side: YAML in flow style ([a, b], {hidden: 64}, null, 0.001)."""
    return yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]


def _current_results(run_dir: Path, config: Config) -> dict | None:
    """The run's results.json if it was made under `config`, with the number of test examples; else None."""
    path = run_dir / evaluate.FOLDER / "results.json"
    if not path.is_file():
        return None
    results = load_json(path)
    if results.get("config_hash") != config_hash(config, evaluate.CONFIG_SECTIONS):
        return None
    ckpts, _ = CheckpointSet.load(run_dir / COLLECT_FOLDER / CHECKPOINTS_FILE)
    n_test = None if ckpts.test_predictions is None else ckpts.test_predictions.shape[1]
    return {**results, "n_test": n_test}


def _copy_base(run_dir: Path, config: Config, out: Path) -> dict:
    """Copy the run's base model into `out`; returns what config.json records about its architecture."""
    path = run_dir / COLLECT_FOLDER / BASE_FILE
    tensors, meta = load_tensors(path)
    _check_hash(path, meta, config)
    if not weights_finite(tensors):
        raise ArtifactError(f"{path} contains NaN or Inf weights: rerun `pdiff collect --force`")
    save_tensors(out / BASE_FILE, tensors, meta)
    return {"file": BASE_FILE, "model": meta["model"], "input_shape": meta["input_shape"],
            "num_classes": meta["num_classes"], "model_kwargs": meta.get("model_kwargs", {})}


def _check_hash(path: Path, meta: dict, config: Config) -> None:
    """Refuse a collect artifact made under another config than the run's config.yaml."""
    if meta.get("config_hash") != config_hash(config, COLLECT_SECTIONS):
        raise ArtifactError(f"{path} was made under another config than {path.parents[1] / 'config.yaml'}: "
                            "rerun `pdiff collect` in that folder")


def _read_config(folder: Path, kind: str) -> dict:
    path = folder / CONFIG_FILE
    config = load_json(path) if path.is_file() else {}
    if config.get("library_name") != LIBRARY or config.get("kind") != kind:
        raise ArtifactError(f"{folder} holds no pdiff {kind} export (no config.json with library_name pdiff and "
                            f"kind {kind}): give a folder written by `pdiff export`")
    return config


@contextmanager
def _folder(out: Path) -> Iterator[Path]:
    """Yield a fresh `.<out>.partial` folder, moved onto `out` only if the block succeeds. An existing `out`
    is replaced only if it is empty or an earlier export (it holds a pdiff config.json)."""
    if out.exists() and any(out.iterdir()) and not (out / CONFIG_FILE).is_file():
        raise ArtifactError(f"{out} exists and holds no pdiff export: give a new or empty folder")
    partial, old = out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.old")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
