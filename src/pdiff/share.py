"""Share a finished run: `pdiff export` (its generator, or its checkpoints, as a Hugging Face hub repository
folder) and `pdiff push` (the same, uploaded).

An exported generator is the folder `ParameterGenerator.save_pretrained` writes (`pdiff.pretrained`) plus the run's
base model (base.safetensors, so that samples become full, ready-to-load models, with the class names, input shape
and normalisation they expect), the run's resolved config.yaml and, in the model card, the run's results and the
`pdiff run config.yaml` command that reruns it. An exported checkpoint set is `CheckpointSet.save_pretrained`'s
folder plus the base model. The run is read through `open_run`; the folder is written whole or not at all, and
replaces only an earlier export of the same kind, with `force`.
"""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from .config import Config
from .folders import atomic_folder
from .hub import check_upload, upload
from .layout import BASE_FILE, RESULTS_FILE, RUN_CONFIG_FILE
from .pipeline import stage_hash
from .presets import leaves, load_config, task_names, to_dict, to_yaml, yaml_value
from .pretrained import CHECKPOINTS, GENERATOR
from .provenance import version
from .render import Section
from .report import accuracy_table
from .run_folder import FinishedRun, open_run
from .store import load_json, save_tensors, save_text
from .words import summary_in_words, verdict_lines


def export(run_dir: str | Path, out_dir: str | Path, base: bool = True, repo_id: str | None = None,
           force: bool = False) -> Path:
    """Write the generator of a finished run (with its base model unless `base=False`) into `out_dir` as a hub
    model repository with a model card; returns `out_dir`."""
    run = open_run(run_dir)
    gen, config = run.generator, run.config
    metadata = _metadata(run, stage_hash(config, "train"))
    sections = results_sections(_current_results(run), run.checkpoints.test_predictions)
    with atomic_folder(out_dir, GENERATOR, force, option="OUT_DIR") as folder:
        if base:
            metadata["base"] = _copy_base(run, folder)
        gen.write_pretrained(folder, metadata, sections, _write_config(config, folder, "run"), repo_id)
    return Path(out_dir)


def export_checkpoints(run_dir: str | Path, out_dir: str | Path, base: bool = True, repo_id: str | None = None,
                       force: bool = False) -> Path:
    """Write the collected checkpoints of a run (with its base model unless `base=False`) into `out_dir` as a
    hub dataset repository with a dataset card; returns `out_dir`."""
    run = open_run(run_dir)
    ckpts = run.checkpoints
    metadata = _metadata(run, stage_hash(run.config, "collect"))
    with atomic_folder(out_dir, CHECKPOINTS, force, option="OUT_DIR") as folder:
        if base:
            metadata["base"] = _copy_base(run, folder)
        ckpts.write_pretrained(folder, metadata, _write_config(run.config, folder, "collect"), repo_id)
    return Path(out_dir)


def push(run_dir: str | Path, repo_id: str, private: bool = False, checkpoints: bool = False, base: bool = True,
         token: str | None = None) -> str:
    """Export the run's generator (or with `checkpoints`, its checkpoint set as a dataset) and upload it to the
    hub repo `repo_id`, created if missing; returns the repo's URL."""
    token = check_upload(repo_id, token)  # before the export: an upload that cannot happen fails at once
    repo_type = "dataset" if checkpoints else "model"
    with tempfile.TemporaryDirectory(prefix="pdiff-push-") as tmp:
        folder = Path(tmp) / "export"
        (export_checkpoints if checkpoints else export)(run_dir, folder, base, repo_id)
        return upload(folder, repo_id, repo_type, f"pdiff {version()}: {repo_type} exported from {Path(run_dir).name}",
                      private, token)


def results_sections(results: dict | None, test_predictions: Any = None) -> list[Section]:
    """The model card's sections on a run's results.json: accuracy table with CIs, resolution and verdicts."""
    if results is None:
        return [Section("Results", text="The run folder holds no evaluation of this generator's models "
                                        "(`pdiff evaluate` makes one).")]
    header, rows = accuracy_table(results["summary"], comparisons=results.get("comparisons"))
    n_test = None if test_predictions is None else test_predictions.shape[1]
    sections = [Section(
        "Results", header=header, rows=rows,
        text=f"Test accuracy (%) of the run's models{f' on {n_test} test examples' if n_test else ''}: *best* is "
             "the test accuracy of the model with the best validation accuracy, *max* the test-set maximum; the "
             "mean's 95% CI counts the model, test-example and interaction variance once each, and each verdict "
             "says whether it speaks for this generator or for p-diff on this task (several generators).")]
    lines = [summary_in_words(results)] if summary_in_words(results) else []
    if "resolution" in results:
        lines.append(f"This test set resolves differences of about ±{100 * results['resolution']:.2f} points.")
    lines += [f"- {line}" for line in verdict_lines(results)
              if line.startswith(("generated ", "trade-off: generated "))]  # generated is the subject
    return sections + ([Section("Verdicts", text="\n".join(lines))] if lines else [])


def run_arguments(config: Config) -> list[str]:
    """[TASK, key=value, ...]: the preset and the overrides that give `config`, made from the preset that
    config.task names (data.data_dir left out: it is a local path), so that `pdiff run` with them reproduces it."""
    preset = leaves(to_dict(load_config(config.task)))
    overrides = []
    for key, value in leaves(to_dict(config)).items():
        if key not in ("data.data_dir", "data.download") and preset.get(key, object()) != value:
            overrides.append(f"{key}={yaml_value(value)}")
    return [config.task, *overrides]


def _write_config(config: Config, folder: Path, command: str) -> str:
    """Write the run's resolved config into `folder` as config.yaml (its data folder left out: a local path means
    nothing elsewhere); returns the commands that rerun it: `pdiff COMMAND config.yaml` from the export, and the
    preset with its overrides where the run came from a preset."""
    save_text(folder / RUN_CONFIG_FILE, to_yaml(replace(config, data=replace(config.data, data_dir=None))))
    data = "" if config.data.name == "mnist1d" else " --data-dir DATA"  # mnist1d is generated, the others read
    lines = [f"pdiff {command} {RUN_CONFIG_FILE}{data}    # the resolved config in this folder"]
    if config.task in task_names():
        lines.append(shlex.join(["pdiff", command, *run_arguments(config)]) + data + "    # the same, as a preset "
                     "and its overrides")
    return "\n".join(lines)


def _metadata(run: FinishedRun, config_hash: str) -> dict:
    config = run.config
    return {"task": config.task, "config_hash": config_hash, "model": config.model.name, "dataset": config.data.name}


def _current_results(run: FinishedRun) -> dict | None:
    """The run's results.json if it was made under the run's config, else None."""
    path = run.stage_dir("evaluate") / RESULTS_FILE
    if not path.is_file():
        return None
    results = load_json(path)
    if not isinstance(results, dict) or results.get("config_hash") != stage_hash(run.config, "evaluate"):
        return None
    return run.results


def _copy_base(run: FinishedRun, out: Path) -> dict:
    """Copy the run's base model into `out`; returns what config.json records about its architecture."""
    tensors, meta = run.base_state
    save_tensors(out / BASE_FILE, tensors, meta)
    described = {key: meta[key] for key in ("classes", "normalisation") if key in meta}  # older runs lack them
    return {"file": BASE_FILE, "model": meta["model"], "input_shape": meta["input_shape"],
            "num_classes": meta["num_classes"], "model_kwargs": meta.get("model_kwargs", {}), **described,
            **({"peft": meta["peft"]} if meta.get("peft") is not None else {})}
