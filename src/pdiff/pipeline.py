"""The runner: the run folder's mechanics. What each stage does lives in its own module.

runs/<task>/{config.yaml, collect/, generator/, generate/, evaluate/, report/} as DESIGN.md section 1; the
stage modules collect, train, generate, evaluate and report each have an entry `run(task, run_dir, out)`.
A stage is done when its folder holds `stage.json` with the hash of the config it depends on (written
last, after every artifact) and every file it lists, so a rerun skips finished stages and resumes after a
crash. A stage writes into `.<folder>.partial/`, renamed onto its folder only once it succeeds (which
un-marks the stages after it): a failure or a kill leaves the last complete state untouched.
config.yaml is written once a stage has succeeded under the config, so it describes what is on disk.
Under a multi-process launch every process runs every stage (training and evaluation are shared, see
`pdiff.distributed`), the main process alone writes, and all wait for each other after each stage.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import collect, distributed, evaluate, generate, report, train
from .config import STAGES, Config, check_task_name, to_yaml
from .errors import ArtifactError, ConfigError, StorageError
from .hashing import config_hash
from .params import ParamSpec
from .runlock import run_lock
from .store import STORAGE_ERRNOS, load_json, save_json, save_text, storage_error
from .tasks import Task

log = logging.getLogger(__name__)
STAGE_MODULES = {"collect": collect, "train": train, "generate": generate, "evaluate": evaluate, "report": report}
STAGE_DIRS = {stage: module.FOLDER for stage, module in STAGE_MODULES.items()}
Entry = Callable[[Path], dict]  # fills a stage's folder, returns the extra fields of its stage.json


def stage_hash(config: Config, stage: str) -> str:
    """Hash of every config value that `stage`'s output depends on (its module's CONFIG_SECTIONS, which include
    those of the stages before it): a stage is done while its stage.json holds this hash."""
    return config_hash(config, STAGE_MODULES[stage].CONFIG_SECTIONS)


@dataclass
class Run:
    """One task's run folder, and the Task (config, device, data) its stages share."""

    config: Config
    root: Path
    progress: bool = True
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds, for the stages completed here
    task: Task = field(init=False)
    config_written: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.task = Task(self.config, self.progress)

    @property
    def device(self) -> torch.device:
        return self.task.device

    def stage_dir(self, stage: str) -> Path:
        return self.root / STAGE_DIRS[stage]

    def is_done(self, stage: str) -> bool:
        marker = self.stage_dir(stage) / "stage.json"
        if not marker.is_file():
            return False
        done = load_json(marker)
        return (done.get("hash") == stage_hash(self.config, stage)
                and all((self.stage_dir(stage) / name).is_file() for name in done.get("files", [])))


def run_stage(run: Run, stage: str, force: bool = False, entry: Entry | None = None) -> bool:
    """Run one stage unless it is already done for this config; returns whether it ran.

    `entry(folder)` replaces the stage's own `run` where the work was done elsewhere (an ablation adopting a
    slice of another run's checkpoints, say); the runner still writes stage.json and moves the folder.
    """
    if not force and distributed.main_decides(run.is_done(stage)):
        log.info("%s: already done for this config, skipped (--force %s reruns it)", stage, stage)
        return False
    for before in STAGES[: STAGES.index(stage)]:
        if not run.is_done(before):
            raise ArtifactError(f"stage {stage!r} needs {before!r} first: run `pdiff {before}` (or `pdiff run`)")
    entry = entry or (lambda out: STAGE_MODULES[stage].run(run.task, run.root, out))
    final = run.stage_dir(stage)
    partial = final.with_name(f".{final.name}.partial")
    main = distributed.is_main_process()  # the only process that touches files
    if main:
        shutil.rmtree(partial, ignore_errors=True)  # from an interrupted attempt
        partial.mkdir(parents=True)
    log.info("%s: running", stage)
    torch.manual_seed(run.config.seed)
    start = time.perf_counter()
    try:
        extra = entry(partial) or {}
        seconds = time.perf_counter() - start
        if main:
            files = sorted(p.name for p in partial.iterdir())
            save_json(partial / "stage.json",
                      {"hash": stage_hash(run.config, stage), "seconds": round(seconds, 2), "files": files, **extra})
    except BaseException:
        if main:
            shutil.rmtree(partial, ignore_errors=True)  # the last complete state stays as it was
        raise
    if main:
        _replace_stage_folder(run, stage, partial, final)
    if not run.config_written:  # the config that made what is now on disk
        save_text(run.root / "config.yaml", f"# hash: {stage_hash(run.config, 'report')}\n{to_yaml(run.config)}")
        run.config_written = True
    run.seconds[stage] = seconds
    distributed.wait_for_everyone()  # the other processes read these files in the next stage
    log.info("%s: done in %.1f s", stage, seconds)
    return True


def adopt(run: Run, stage: str, source: Run) -> None:
    """Complete `stage` of `run` with the finished stage folder of `source`, hard-linked (copied across file
    systems): the stage's config hash must be the same in both runs."""
    if not source.is_done(stage) or stage_hash(source.config, stage) != stage_hash(run.config, stage):
        raise ArtifactError(f"cannot adopt {stage!r} from {source.root}: it is not done there under this config")

    def link(out: Path) -> dict:
        summary = load_json(source.stage_dir(stage) / "stage.json")
        if distributed.is_main_process():
            for path in sorted(source.stage_dir(stage).iterdir()):
                if path.is_file() and path.name != "stage.json":
                    _link(path, out / path.name)
        return {k: v for k, v in summary.items() if k not in ("hash", "seconds", "files")}

    run_stage(run, stage, force=True, entry=link)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _replace_stage_folder(run: Run, stage: str, partial: Path, final: Path) -> None:
    """Move a finished stage's folder into place; the stages after it were made from the old one."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    for after in STAGES[STAGES.index(stage) + 1:]:
        (run.stage_dir(after) / "stage.json").unlink(missing_ok=True)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def run_stages(run: Run, stages: tuple[str, ...] = STAGES, force: str | None = None) -> Run:
    """Take `run` through `stages` under its lock; `force` reruns that stage and every stage after it."""
    if force is not None and force not in STAGES:
        raise ConfigError(f"--force {force!r}: choose one of {', '.join(STAGES)}")
    with run_lock(run.root):
        if distributed.is_main_process():
            for leftover in sorted(run.root.glob(".config.yaml.*.tmp")):  # from a process killed while writing
                leftover.unlink()
        to_run = [s for s in stages if (force is not None and STAGES.index(s) >= STAGES.index(force))
                  or not run.is_done(s)]
        if "generate" in to_run or "evaluate" in to_run:
            check_memory(run)  # before collect: a too large generate.n must not wait for training
        try:
            for stage in stages:
                run_stage(run, stage, force=force is not None and STAGES.index(stage) >= STAGES.index(force))
        except OSError as e:  # a full disk or a folder we may not write, outside pdiff.store's writes
            if isinstance(e, StorageError) or e.errno not in STORAGE_ERRNOS:
                raise
            raise storage_error(Path(e.filename or run.root), e) from None
    return run


def check_memory(run: Run) -> None:
    """Refuse, before any work, a generate.n whose models cannot fit in memory (`pdiff.generate.check_memory`)."""
    if run.is_done("collect"):
        dim = load_json(run.stage_dir("collect") / "stage.json")["dim"]
    else:
        dim = ParamSpec.select(run.task.new_model(), run.config.collect.subset).dim
    examples = len(run.task.data.val) + len(run.task.data.test)
    generate.check_memory(run.config.generate.n, dim, examples, f"generate.n={run.config.generate.n}")


def run_pipeline(config: Config, runs_dir: str | Path = "runs", force: str | None = None,
                 stages: tuple[str, ...] = STAGES, progress: bool = True) -> Run:
    """Take a task through `stages` in RUNS_DIR/<task>/; `force` reruns that stage and every stage after it."""
    check_task_name(config.task)  # a name, never a path: nothing is written outside runs_dir
    return run_stages(Run(config, Path(runs_dir) / config.task, progress), stages, force)
