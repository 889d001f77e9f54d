"""The runner: the run folder's mechanics. What each stage does lives in its own module.

runs/<task>/{config.yaml, collect/, train/, generate/, evaluate/, report/} (`pdiff.layout` names them); the
stage modules collect, train, generate, evaluate and report each have an entry `run(task, run_dir, out)`.
A stage is done when its folder holds `stage.json` with the hash of the config it depends on (written
last, after every artifact) and every file it lists, so a rerun skips finished stages and resumes after a
crash. A stage writes into `.<folder>.partial/`, swapped onto its folder only once it succeeds
(`pdiff.folders.atomic_folder`; which un-marks the stages after it): a failure or a kill leaves the last complete
state untouched. A run folder of an earlier pdiff, whose train stage wrote `generator/`, is read as it is.
config.yaml is written once a stage has succeeded under the config, so it describes what is on disk.
Under a multi-process launch every process runs every stage (training and evaluation are shared, see
`pdiff.distributed`), the main process alone writes, and all wait for each other after each stage.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml

from . import collect, distributed, evaluate, generate, report, train
from .checkpoint_files import absolute
from .config import STAGES, Config, check_task_name
from .errors import ArtifactError, ConfigError, StorageError
from .folders import atomic_folder
from .hashing import config_hash
from .layout import OLD_STAGE_FOLDERS, RUN_CONFIG_FILE, STAGE_FILE, STAGE_FOLDERS, resolve_data_dir, stage_folder
from .params import ParamSpec
from .presets import leaves, load_config, task_names, to_dict, to_yaml
from .runlock import run_lock
from .store import STORAGE_ERRNOS, load_json, load_record, save_json, save_text, storage_error
from .task import Task
from .tasks.imported import is_import_path

log = logging.getLogger(__name__)
STAGE_MODULES = {"collect": collect, "train": train, "generate": generate, "evaluate": evaluate, "report": report}
STAGE_DIRS = STAGE_FOLDERS  # stage -> its folder's name in a run folder
Entry = Callable[[Path], dict]  # fills a stage's folder, returns the extra fields of its stage.json
TRAINED_STAGES = ("collect", "train")  # they train networks: a finished one is replaced only when asked
EXPECTED_COSTS = Path(__file__).parent / "tasks" / "expected.json"  # see `expected_costs`


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
        """The folder of `stage` (an earlier pdiff's name for it where only that one exists)."""
        return stage_folder(self.root, stage)

    def path(self, stage: str, name: str) -> Path:
        """The file `name` of `stage`'s folder (see `pdiff.layout` for the names)."""
        return self.stage_dir(stage) / name

    def finished(self, stage: str) -> dict | None:
        """The stage's stage.json if the stage finished under any config (it and every file it lists are
        there), else None."""
        marker = self.stage_dir(stage) / STAGE_FILE
        if not marker.is_file():
            return None
        done = load_record(marker, {"hash": str, "files": list}, f"rerun `pdiff {stage} --force`")
        return done if all((self.stage_dir(stage) / str(name)).is_file() for name in done["files"]) else None

    def is_done(self, stage: str) -> bool:
        """Finished under this config, from the data as it is now (an image folder's contents included)."""
        done = self.finished(stage)
        return (done is not None and done["hash"] == stage_hash(self.config, stage)
                and self.task.made_from_this_data(done.get("data")))


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
    main = distributed.is_main_process()  # the only process that touches files
    log.info("%s: running", stage)
    torch.manual_seed(run.config.seed)
    start = time.perf_counter()
    with _stage_folder(run, stage, main) as out:  # moved into place only if every line below succeeds
        extra = entry(out) or {}
        seconds = time.perf_counter() - start
        if main:
            files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
            save_json(out / STAGE_FILE, {"hash": stage_hash(run.config, stage), "data": run.task.data_identity,
                                         "seconds": round(seconds, 2), "files": files, **extra})
            for after in STAGES[STAGES.index(stage) + 1:]:  # made from the folder this one replaces
                (run.stage_dir(after) / STAGE_FILE).unlink(missing_ok=True)
    if main and stage in OLD_STAGE_FOLDERS:  # the folder an earlier pdiff wrote for this stage, now replaced
        shutil.rmtree(run.root / OLD_STAGE_FOLDERS[stage], ignore_errors=True)
    if not run.config_written:  # the config that made what is now on disk
        save_text(run.root / RUN_CONFIG_FILE, f"# hash: {stage_hash(run.config, 'report')}\n{to_yaml(run.config)}")
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
        summary = source.finished(stage) or {}
        if distributed.is_main_process():
            folder = source.stage_dir(stage)
            for path in sorted(folder.rglob("*")):  # train/generator-1/... too
                if path.is_file() and path.relative_to(folder).as_posix() != STAGE_FILE:
                    (out / path.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
                    _link(path, out / path.relative_to(folder))
        return {k: v for k, v in summary.items() if k not in ("hash", "data", "seconds", "files")}

    run_stage(run, stage, force=True, entry=link)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _stage_folder(run: Run, stage: str, main: bool) -> AbstractContextManager[Path]:
    """The folder a stage writes into: a fresh one swapped in on success (`atomic_folder`) on the main process;
    on the others the same path, which they never write to."""
    final = run.root / STAGE_FOLDERS[stage]
    if main:
        return atomic_folder(final, lock=False)  # under the run lock
    return nullcontext(final.with_name(f".{final.name}.partial"))


@contextmanager
def lock(run: Run) -> Iterator[Path]:
    """Hold `run`'s folder for this process (`pdiff.runlock`): one pdiff process per run folder."""
    with run_lock(run.root, distributed.is_main_process) as path:
        yield path


def run_stages(run: Run, stages: tuple[str, ...] = STAGES, force: str | None = None, keep_finished: bool = True
               ) -> Run:
    """Take `run` through `stages` under its lock; `force` reruns that stage and every stage after it.

    `keep_finished`: refuse to replace a finished collect or train made under another config (or from other
    data) unless `force` asks for it (`check_replacements`); False where the folder is derived from another
    run and follows it (an ablation's variants).
    """
    if force is not None and force not in STAGES:
        raise ConfigError(f"--force {force!r}: choose one of {', '.join(STAGES)}")
    with lock(run):
        if distributed.is_main_process():
            for leftover in sorted(run.root.glob(f".{RUN_CONFIG_FILE}.*.tmp")):  # from a process killed while writing
                leftover.unlink()
        to_run = [s for s in stages if (force is not None and STAGES.index(s) >= STAGES.index(force))
                  or not run.is_done(s)]
        if keep_finished:
            check_replacements(run, [s for s in to_run if force is None or STAGES.index(s) < STAGES.index(force)])
        if "generate" in to_run or "evaluate" in to_run:
            check_generate_memory(run)  # before collect: a too large generate.n must not wait for training
        if to_run and distributed.is_main_process():
            for line in expected_costs(run.config, to_run):
                log.info(line)
        try:
            for stage in stages:
                run_stage(run, stage, force=force is not None and STAGES.index(stage) >= STAGES.index(force))
        except OSError as e:  # a full disk or a folder we may not write, outside pdiff.store's writes
            if isinstance(e, StorageError) or e.errno not in STORAGE_ERRNOS:
                raise
            raise storage_error(Path(e.filename or run.root), e) from None
    return run


def expected_costs(config: Config, stages: list[str]) -> list[str]:
    """One short line per stage about to run: its wall time and peak memory as measured for this preset
    (tasks/expected.json, written by `python -m bench --render-all` from the committed benchmark results), or
    "unknown" where nothing measured that stage under this config; first, for an unknown one, what the preset says
    it is sized for."""
    measured = load_json(EXPECTED_COSTS).get(config.task, {})
    preset = load_config(config.task) if config.task in task_names() else None
    lines = []
    for stage in stages:
        cost = measured.get("stages", {}).get(stage)
        if cost is None or preset is None or stage_hash(preset, stage) != stage_hash(config, stage):
            lines.append(f"{stage}: expected time and memory unknown")
            continue
        memory = f"peak {cost['peak_mib'] / 1024:.1f} GiB" if "peak_mib" in cost else "memory unknown"
        lines.append(f"{stage}: expected about {_duration(cost['seconds'])}, {memory} (on {measured['on']})")
    if preset is not None and any(line.endswith("unknown") for line in lines):
        lines.insert(0, f"{config.task} is sized for: {preset.hardware}")
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def check_replacements(run: Run, unasked: list[str]) -> None:
    """Refuse to replace trained work nobody asked to replace; say which cheaper stages are replaced and why.

    `unasked`: the stages about to run that `--force` did not name. Where one of them finished under another
    config or from other data, a collect or train (networks trained for minutes to hours) stops the run with
    one line naming the stages, the reason and both ways on; generate, evaluate and report only sample from
    and measure the generator, so a new `generate.n` reruns them, with a warning.
    """
    replaced = [stage for stage in unasked if run.finished(stage) is not None]
    if not replaced:
        return
    why = _why_replaced(run, replaced[0])
    trained = [stage for stage in replaced if stage in TRAINED_STAGES]
    if trained:
        later = [s for s in STAGES[STAGES.index(trained[0]):] if run.finished(s) is not None]
        raise ArtifactError(
            f"{run.root} holds {', '.join(later)} finished under another config ({why}); pdiff does not replace "
            f"trained work unasked: rerun with --force {trained[0]} to replace it, or keep it and give this config "
            "its own folder (task=NEW-NAME or --runs-dir)"
            + ("; --force train keeps the generators already trained and trains only the new ones"
               if why.startswith("train.generators:") and "," not in why else ""))
    log.warning("%s: replacing the finished stage%s made under another config (%s)", ", ".join(replaced),
                "s" if len(replaced) > 1 else "", why)


def _why_replaced(run: Run, stage: str) -> str:
    """What differs between the finished `stage` and this run: the config keys changed, or the data."""
    if run.finished(stage)["hash"] == stage_hash(run.config, stage):
        return f"the data changed since: {run.config.data.name} at {resolve_data_dir(run.config.data.data_dir)}"
    path = run.root / RUN_CONFIG_FILE
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return f"{path.name} unreadable"
    old = leaves(old) if isinstance(old, dict) else {}
    new = leaves(to_dict(run.config))
    unhashed = ("data.download", "evaluate.model_chunk") + (() if run.config.data.name == "imagefolder" else
                                                            ("data.data_dir",))  # an image folder is the dataset
    changed = [f"{key}: {old.get(key)!r} -> {value!r}" for key, value in new.items()
               if old.get(key) != value and key not in unhashed]
    if len(changed) > 3:
        changed = [*changed[:3], f"{len(changed) - 3} more"]
    if not changed:  # the same keys: a factory named by import path changed its source
        imported = [f"{key}={name}" for key, name in (("model.name", run.config.model.name),
                                                     ("data.name", run.config.data.name)) if is_import_path(name)]
        changed = [f"the source of {' or '.join(imported)} changed"] if imported else []
    own = [key for key in ("collect.from", "collect.base", "train.holdout_from") if new.get(key) is not None]
    return "; ".join(changed) or (f"a file of {' or '.join(own)} changed since" if own else f"see {path}")


def check_generate_memory(run: Run) -> None:
    """Refuse, before any work, a generate.n whose models cannot fit in memory (`pdiff.generate.check_memory`)."""
    if run.is_done("collect"):
        dim = load_record(run.stage_dir("collect") / STAGE_FILE, {"dim": int}, "rerun `pdiff collect --force`")["dim"]
    else:
        dim = ParamSpec.select(run.task.adapt(run.task.new_model()), run.config.collect.subset).dim
    examples = len(run.task.data.val) + len(run.task.data.test)
    generate.check_memory(run.config.generate.n, dim, examples, f"generate.n={run.config.generate.n}")


def run_pipeline(config: Config, runs_dir: str | Path = "runs", force: str | None = None,
                 stages: tuple[str, ...] = STAGES, progress: bool = True) -> Run:
    """Take a task through `stages` in RUNS_DIR/<task>/; `force` reruns that stage and every stage after it."""
    check_task_name(config.task)  # a name, never a path: nothing is written outside runs_dir
    if config.data.data_dir is not None or config.data.name == "imagefolder":  # config.yaml works from anywhere
        config = replace(config, data=replace(config.data, data_dir=str(resolve_data_dir(config.data.data_dir))))
    c, t = config.collect, config.train  # your checkpoint files, found from any folder too
    config = replace(config, collect=replace(c, from_=absolute(c.from_), base=absolute(c.base)),
                     train=replace(t, holdout_from=absolute(t.holdout_from)))
    return run_stages(Run(config, Path(runs_dir) / config.task, progress), stages, force)
