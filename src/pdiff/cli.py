"""The `pdiff` command line: a thin typer layer over the library (`pdiff.pipeline`, `pdiff.ablation`, ...).

    pdiff run [TASK] [key=value ...]      every stage, skipping those already done
    pdiff collect|train|generate|evaluate|report [TASK] [key=value ...]
    pdiff sample RUN_DIR -n 10 --out DIR  ready-to-load state_dicts from a trained generator (or an export, a repo id)
                 [--target max --guidance 2]  ... at a validation accuracy (a generator conditioned on it)
                 [--format peft]              ... as PEFT adapter folders (a run with model.peft)
    pdiff export RUN_DIR OUT_DIR          the generator as a Hugging Face hub repository folder, with a model card
                                          (OUT_DIR new or empty; --force replaces an earlier export there)
    pdiff push RUN_DIR REPO_ID            export and upload it to the hub
    pdiff ablate [TASK] [key=value ...] --study k|location|noise|steps [VALUES ...]
    pdiff tasks                           the named tasks (and --keys: every config key, with its help)
    pdiff show [TASK] [key=value ...]     the resolved config: each key's value, type, default, range and help

Several processes: `accelerate launch --multi_gpu --num_processes N -m pdiff run ...` (docs/scaling-out.md).
"""

from __future__ import annotations

import difflib
import logging
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import distributed, share
from .ablation import STUDIES, ablation_table
from .ablation import ablate as run_ablation
from .config import STAGES, Config
from .diffusion import SAMPLERS
from .errors import ArtifactError, ConfigError, PdiffError
from .layout import STAGE_FILE
from .pipeline import run_pipeline
from .presets import KeyHelp, key_help, load_config, task_names, yaml_value
from .rules import check_seed
from .run_folder import open_run
from .sample import sample_models
from .store import load_record
from .terminal import print_summary, table

DEFAULT_TASK = "mnist1d-convnet"

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="p-diff: generate neural-network parameters with latent diffusion.")
console = Console(stderr=True)

Args = Annotated[list[str] | None, typer.Argument(help="[TASK] then key=value overrides, e.g. collect.k=50")]
DataDir = Annotated[Path | None, typer.Option(help="dataset folder (default $PDIFF_DATA or ~/.cache/pdiff/data)")]
RunsDir = Annotated[Path, typer.Option(help="where run folders go: RUNS_DIR/<task>/")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars (a log that is not a terminal gets "
                                                         "none either: one line per stage)")]


def _split_task(args: list[str] | None, takes_values: bool = False) -> tuple[str, list[str]]:
    """[TASK] then the rest: the first argument is the task unless it is a key=value override, or (for a
    command that also takes plain values, like `ablate`) a value that names no task and no YAML file."""
    args = list(args or [])
    first = args[0] if args and "=" not in args[0] else None
    if first is None or (takes_values and first not in task_names() and not first.endswith((".yaml", ".yml"))):
        return DEFAULT_TASK, args
    return first, args[1:]


def _config(task: str, overrides: list[str], data_dir: Path | None) -> Config:
    if data_dir is not None:
        overrides = [*overrides, f"data.data_dir={data_dir}"]
    return load_config(task, overrides)


def _fail(error: Exception) -> None:
    line = str(error).replace("\r", "\\r").replace("\n", "\\n")  # a newline in a path must not split the line
    console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _print_summary(run_root: Path) -> None:
    """The finished run's results (stdout) and the report's path (stderr), on the main process only."""
    if not distributed.is_main_process():
        return
    run = open_run(run_root)
    results = run.results
    if not isinstance(results.get("summary"), dict):
        raise ArtifactError(f"{run.stage_dir('evaluate')} holds no evaluation summary: rerun `pdiff evaluate --force`")
    asked = load_record(run.stage_dir("generate") / STAGE_FILE, {}, "rerun `pdiff generate --force`")
    print_summary(results, Console(), asked)
    _show_path(run.stage_dir("report") / "report.html")


def _show_path(report: Path) -> None:
    console.print(f"report: {report}", soft_wrap=True, highlight=False, markup=False)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)


@app.command()
def run(args: Args = None, data_dir: DataDir = None, runs_dir: RunsDir = Path("runs"),
        force: Annotated[str | None, typer.Option(help=f"rerun from this stage: {', '.join(STAGES)}")] = None,
        quiet: Quiet = False) -> None:
    """Run every stage of TASK (default mnist1d-convnet): collect, train, generate, evaluate, report."""
    try:
        result = run_pipeline(_config(*_split_task(args), data_dir), runs_dir, force=force, progress=not quiet)
        _print_summary(result.root)
    except PdiffError as e:
        _fail(e)


def _stage_command(stage: str):
    def command(args: Args = None, data_dir: DataDir = None, runs_dir: RunsDir = Path("runs"),
                force: Annotated[bool, typer.Option(help="rerun even if done for this config")] = False,
                quiet: Quiet = False) -> None:
        try:
            result = run_pipeline(_config(*_split_task(args), data_dir), runs_dir, force=stage if force else None,
                                  stages=(stage,), progress=not quiet)
            if stage == "report":
                _print_summary(result.root)
        except PdiffError as e:
            _fail(e)

    command.__doc__ = f"Run the {stage} stage of TASK only (the stages before it must be done)."
    return command


for _stage in STAGES:
    app.command(_stage)(_stage_command(_stage))


@app.command()
def sample(run_dir: Annotated[Path, typer.Argument(
               help="a finished run folder (runs/mnist1d-convnet), a folder from `pdiff export` or a hub repo id")],
           n: Annotated[int, typer.Option("-n", help="how many models")] = 10,
           out: Annotated[Path, typer.Option(help="folder for model_000.safetensors, ...")] = Path("samples"),
           seed: int = 0,
           sampler: Annotated[str, typer.Option(help=", ".join(SAMPLERS) + "; a flow: euler, midpoint")] = "ddpm",
           steps: Annotated[int | None, typer.Option(help="sampling steps (default: all)")] = None,
           target: Annotated[str | None, typer.Option(
               help="validation accuracy to ask for: a fraction (0.98) or max, median, min, qNN of the training "
                    "checkpoints' (needs train.diffusion.condition=accuracy)")] = None,
           guidance: Annotated[float, typer.Option(help="classifier-free guidance weight w (with --target)")] = 0.0,
           force: Annotated[bool, typer.Option(help="replace an earlier `pdiff sample` output in --out")] = False,
           format: Annotated[str, typer.Option(help="safetensors (full state_dicts) or peft (LoRA adapter folders "
                                                    "of a run with model.peft)")] = "safetensors"
           ) -> None:
    """Write N full-model state_dicts (or PEFT adapter folders) from a trained generator, without retraining."""
    try:
        check_seed(seed, "--seed ")
        paths = sample_models(run_dir, n, out, seed=seed, sampler=sampler, steps=steps, force=force, target=target,
                              guidance=guidance, format=format)
    except PdiffError as e:
        _fail(e)
    what = "PEFT adapter folders" if format == "peft" else "state_dicts"
    console.print(f"wrote {len(paths)} {what} to {out}/", highlight=False, markup=False, soft_wrap=True)


Base = Annotated[bool, typer.Option("--base/--no-base", help="include the base model (base.safetensors)")]
Checkpoints = Annotated[bool, typer.Option("--checkpoints", help="the checkpoint set (a dataset repo) instead")]


@app.command()
def export(run_dir: Annotated[Path, typer.Argument(help="a finished run folder, e.g. runs/mnist1d-convnet")],
           out_dir: Annotated[Path, typer.Argument(help="the folder to write: new or empty")],
           base: Base = True, checkpoints: Checkpoints = False,
           force: Annotated[bool, typer.Option(help="replace an earlier export of the same kind in OUT_DIR")] = False
           ) -> None:
    """Write the run's generator as a Hugging Face hub model repository folder: config.json, weights, model card."""
    try:
        (share.export_checkpoints if checkpoints else share.export)(run_dir, out_dir, base, force=force)
    except PdiffError as e:
        _fail(e)
    console.print(f"wrote {out_dir}/", soft_wrap=True, highlight=False, markup=False)


@app.command()
def push(run_dir: Annotated[Path, typer.Argument(help="a finished run folder, e.g. runs/mnist1d-convnet")],
         repo_id: Annotated[str, typer.Argument(help="the hub repository, user/name (created if missing)")],
         private: Annotated[bool, typer.Option(help="create the repository private")] = False,
         base: Base = True, checkpoints: Checkpoints = False) -> None:
    """Export the run's generator (or checkpoints) and upload it to the Hugging Face hub (needs a network and a
    token: `hf auth login` or HF_TOKEN)."""
    try:
        url = share.push(run_dir, repo_id, private=private, checkpoints=checkpoints, base=base)
    except PdiffError as e:
        _fail(e)
    console.print(f"uploaded to {url}", soft_wrap=True, highlight=False, markup=False)


@app.command()
def ablate(args: Annotated[list[str] | None, typer.Argument(
               help="[TASK], key=value overrides, then the values to compare (default: the paper's)")] = None,
           study: Annotated[str, typer.Option(help=f"what to vary: {', '.join(STUDIES)}")] = "k",
           data_dir: DataDir = None, runs_dir: RunsDir = Path("runs"), quiet: Quiet = False) -> None:
    """Run one ablation study of TASK; writes RUNS_DIR/<task>/ablation/<study>/report.html."""
    try:
        task, rest = _split_task(args, takes_values=True)
        _check_not_a_misspelt_task(rest)
        overrides = [a for a in rest if "=" in a]
        values = [a for a in rest if "=" not in a] or None
        report = run_ablation(_config(task, overrides, data_dir), study, values, runs_dir, progress=not quiet)
        rows = load_record(report.parent / "ablation.json", {"variants": list},
                           f"rerun `pdiff ablate --study {study}`")["variants"]
    except PdiffError as e:
        _fail(e)
    if distributed.is_main_process():
        out = Console()
        out.print(table(f"ablation {study}: generated test accuracy (%)", *ablation_table(rows), out))
        _show_path(report.with_suffix(".html"))


def _check_not_a_misspelt_task(rest: list[str]) -> None:
    """A first value that is nearly a task name is a misspelt task, not a study value."""
    if rest and "=" not in rest[0]:
        close = difflib.get_close_matches(rest[0], task_names(), n=1, cutoff=0.8)
        if close:
            raise ConfigError(f"{rest[0]!r} is not a task (did you mean {close[0]}?): give the task first, "
                              "spelt as `pdiff tasks` lists it, then the values")


@app.command()
def tasks(keys: Annotated[bool, typer.Option("--keys", help="list every config key instead, with its type, "
                                                           "default, allowed values and help")] = False) -> None:
    """List the named tasks (presets)."""
    if keys:
        _print_keys(key_help(), values=False)
        return
    table = Table("task", "hardware", "description")
    for name in task_names():
        config = load_config(name)
        table.add_row(name, config.hardware, config.description)
    Console().print(table)


@app.command()
def show(args: Args = None, data_dir: DataDir = None) -> None:
    """Print TASK's resolved config (default mnist1d-convnet, with any key=value overrides): each key's value, type,
    default, allowed values and help."""
    try:
        config = _config(*_split_task(args), data_dir)
    except PdiffError as e:
        _fail(e)
    _print_keys(key_help(config), values=True)


def _print_keys(entries: list[KeyHelp], values: bool) -> None:
    """One entry per key: `key: value (type; default ...; allowed)` (without the value for --keys), then its help
    indented, wrapped to the terminal's width."""
    width = shutil.get_terminal_size().columns
    for e in entries:
        facts = "; ".join(part for part in (e.type, f"default {yaml_value(e.default)}", e.allowed) if part)
        head = f"{e.key}: {yaml_value(e.value)} ({facts})" if values else f"{e.key} ({facts})"
        print(textwrap.fill(head, width, subsequent_indent="    ", break_on_hyphens=False))
        print(textwrap.fill(e.help, width, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False))

