"""What every benchmark shares: the script convention, results JSON, BENCHMARKS.md sections, timing, runs.

The convention. A benchmark is bench/NAME.py, run as `python -m bench.NAME [options]`, and has:
- `NAME = "NAME"`: its results live in bench/NAME.json, its section of BENCHMARKS.md between
  `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`;
- `parser() -> argparse.ArgumentParser`: its options (`arguments()` adds the shared --data-dir, --threads and
  --runs-dir);
- `measure(args) -> dict`: does the work and returns `results(command, device, **figures)`, where `command` is
  the call as typed (the section shows it, so a reader can rerun it): JSON types only, with an integer
  `format_version` and the `provenance` (pdiff version, git commit, torch version, thread count, device, machine,
  command). A finished run is opened with `open_run`, and only so; a script that keeps entries over calls (one
  per task, say) reads the earlier ones with `load_results(NAME)`;
- `render(results: dict) -> str`: the section's markdown from the results alone (no measuring, no file read);
- `main()`: `publish(NAME, measure(parser().parse_args()), render)`, which writes bench/NAME.json atomically and
  then the section, with the commit and date it was measured on.
BENCHMARKS.md is written whole by `document`: a table of contents, then the sections grouped by the question they
answer (QUESTIONS: a new script adds its Entry there).
`python -m bench --render-all` rebuilds every section from the committed JSON (tests/bench checks that the
committed BENCHMARKS.md is what it renders, and each script's parts). A script imports pdiff and this module,
never another script: what two scripts share lives here. Sections whose results were never kept as JSON are
archival text, marked with ARCHIVAL, left as they are.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, vmap

# pdiff (and scipy) are imported inside the functions that use them: bench.gpu imports this module on a lent machine
# where a missing package must fail only the steps that need it, never the script that records what failed.

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
FORMAT_VERSION = 1  # of bench/NAME.json; raise it when a field changes meaning, and teach render the old one
LOAD_AT_START = os.getloadavg()[0]  # taken when a benchmark script starts, before its own work


# ---- runs and options -------------------------------------------------------------------------------------
def open_run(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()):
    """The pdiff.pipeline.Run of a finished run folder, its config read from the config.yaml there (with
    `overrides`, e.g. where its data lies now): every script opens a finished run through this one function."""
    from pdiff.pipeline import Run
    from pdiff.presets import load_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise SystemExit(f"{run_dir} holds no run (no config.yaml): run its task there first")
    return Run(load_config(run_dir / "config.yaml", list(overrides)), run_dir, progress=False)


def arguments(doc: str, runs_dir: str | None = None) -> argparse.ArgumentParser:
    """A parser described by the script's docstring, with the shared options: --data-dir, --threads and, when the
    script keeps runs, --runs-dir (default `runs_dir` under the repository root)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="dataset folder (else $PDIFF_DATA)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    if runs_dir is not None:
        parser.add_argument("--runs-dir", type=Path, default=ROOT / runs_dir)
    return parser


def data_overrides(args: argparse.Namespace) -> list[str]:
    """The config override that points a task at --data-dir, if one was given."""
    return [f"data.data_dir={args.data_dir}"] if args.data_dir else []


def set_threads(args: argparse.Namespace) -> None:
    if args.threads is not None:
        torch.set_num_threads(args.threads)


# ---- provenance and results ---------------------------------------------------------------------------
def git_commit() -> str | None:
    """The checked-out commit, with "+changes" when src/ or bench/ differ from it; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "bench"],
                                 cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    changed_code = [line for line in changed.stdout.splitlines() if line.endswith(".py")]
    return head.stdout.strip() + ("+changes" if changed_code else "")


def provenance(command: str, device: str = "cpu") -> dict:
    """Where and with what the numbers were taken (the `machine` phrase is rendered from these fields)."""
    try:
        pdiff_version = version("pdiff")
    except PackageNotFoundError:
        pdiff_version = None
    return {"command": command, "pdiff_version": pdiff_version, "git_commit": git_commit(),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device,
            "processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_at_start": round(LOAD_AT_START, 1)}


def results(command: str, device: str = "cpu", **figures) -> dict:
    """A script's results: `format_version`, `provenance` and its own figures (JSON types)."""
    return {"format_version": FORMAT_VERSION, "provenance": provenance(command, device), **figures}


def results_path(name: str) -> Path:
    return ROOT / "bench" / f"{name}.json"


def load_results(name: str) -> dict:
    """bench/NAME.json ({} when the script never ran); a newer format than this code knows is refused."""
    path = results_path(name)
    if not path.is_file():
        return {}
    loaded = json.loads(path.read_text())
    if loaded.get("format_version", 0) > FORMAT_VERSION:
        raise SystemExit(f"{path} has format_version {loaded['format_version']}, newer than this bench's "
                         f"{FORMAT_VERSION}: update the repository")
    return loaded


def save_results(name: str, figures: dict) -> Path:
    """Write bench/NAME.json atomically (a temporary file renamed over it)."""
    path = results_path(name)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(figures, indent=1) + "\n")
    tmp.replace(path)
    return path


def publish(name: str, figures: dict, render: Callable[[dict], str], path: Path = BENCHMARKS) -> None:
    """Save a script's results, then put its rendered section in BENCHMARKS.md with the commit measured on."""
    save_results(name, figures)
    write_section(name, render(figures), path, **measured_at(figures))


def measured_at(figures: dict) -> dict:
    """The commit and date a results dict was measured at (None where its provenance has none)."""
    p = figures["provenance"]
    return {"commit": p.get("git_commit"), "date": p.get("date")}


# ---- BENCHMARKS.md ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """A section of BENCHMARKS.md: its name (its markers, and bench/NAME.json where its results were kept), the
    script that writes it (bench/SCRIPT.py; "" for a measurement made by hand) and the task it measured."""

    name: str
    script: str
    task: str


# The sections grouped by the question they answer, in reading order.
QUESTIONS = {
    "Does p-diff reproduce the paper?": (
        Entry("paper_rows", "paper_rows", "the CPU presets"), Entry("claims", "claims", "cifar10-convnet3-cpu"),
        Entry("ablations", "ablations", "mnist1d-convnet")),
    "Are the generated models new, or copies of the checkpoints?": (
        Entry("novelty", "novelty", "mnist1d-convnet"),),
    "Does any generator beat averaging the checkpoints?": (
        Entry("beyond", "beyond", "mnist1d-mlp-full"),),
    "Does a verdict hold for p-diff as a method, and are the CIs right?": (
        Entry("seeds", "seeds", "mnist1d-convnet"), Entry("calibration", "calibration", "simulated accuracies")),
    "Can you ask for an accuracy?": (
        Entry("conditioning", "conditioning", "mnist1d-convnet"),
        Entry("conditioning-cifar10-convnet3-cpu", "conditioning", "cifar10-convnet3-cpu")),
    "Can it generate LoRA adapters?": (
        Entry("lora", "lora", "mnist-vit-lora"),),
    "Can whole networks and long vectors be generated?": (
        Entry("whole_networks", "whole_networks", "mnist-mlp-full, mnist-convnet3-full"),
        Entry("global_steps", "global_steps", "mnist-mlp-full"),
        Entry("scaling", "scaling", "random-walk checkpoints"),
        Entry("scaling-crops", "scaling", "random-walk checkpoints")),
    "How long does it take, and where does the time go?": (
        Entry("stages", "stages", "mnist1d-convnet"), Entry("training", "training", "mnist1d-convnet"),
        Entry("generation", "generation", "mnist1d-convnet"),
        Entry("evaluation", "evaluation", "mnist-convnet3, mnist1d-convnet"),
        Entry("scaling-out", "", "mnist1d-convnet (tiny)"), Entry("gpu", "gpu", "GPU presets")),
}
OTHER = "Other measurements"
TITLE = """# Benchmarks

Each section answers one question about pdiff by measuring it. The script named in the contents below writes it
(`python -m bench.NAME`) and keeps its results in bench/NAME.json with the commit, date, torch version and thread
count they were measured with; `python -m bench --render-all` rebuilds this file from that JSON without computing
anything. Sections marked *archival* have no JSON: their text stays as written until their script runs again.

**Read every accuracy comparison with its margin.** Every run's `results.json` and report give each comparison a
95% CI, a verdict and its scope (`pdiff.stats`; [docs/statistics.md](docs/statistics.md)); how well the CIs cover
is measured in "Calibration of the CIs". A section measured at an older commit may print the wider intervals of an
older bootstrap, and some archival tables have no CIs (their differences are counts of test examples); rerunning
its script restates it with the current intervals. A mean that differs by one test example, or a best by a few,
is no finding.
"""
ARCHIVAL = ("*Archival: written before its script kept its results in JSON, so `python -m bench --render-all` "
            "cannot rebuild it and keeps this text as it is.*")
STAMP = re.compile(r"\*Measured at commit `([^`]+)`(?: on (\S+))?\.\*")


def stamp(commit: str | None, date: str | None = None) -> str:
    """The line that ends a section: the commit (and date) it was measured at, or that they were not recorded."""
    if commit is None:
        return "*Commit not recorded.*"
    return f"*Measured at commit `{commit}`{f' on {date}' if date else ''}.*"


def write_section(name: str, body: str, path: Path = BENCHMARKS, commit: str | None = None,
                  date: str | None = None) -> None:
    """Replace (or add) the section `name` of BENCHMARKS.md with `body` and its stamp, and rewrite the file."""
    sections = read_sections(path) if path.is_file() else {}
    sections[name] = f"{body.strip()}\n\n{stamp(commit, date)}"
    write_document(sections, path)


def read_sections(path: Path = BENCHMARKS) -> dict[str, str]:
    """name -> the text between the section's markers, for every section of BENCHMARKS.md, in file order."""
    text = path.read_text()
    names = [line[len("<!-- bench:"):-len(" -->")] for line in text.splitlines()
             if line.startswith("<!-- bench:") and line.endswith(" -->")]
    return {n: text.split(f"<!-- bench:{n} -->\n", 1)[1].split(f"\n<!-- /bench:{n} -->", 1)[0] for n in names}


def write_document(sections: dict[str, str], path: Path = BENCHMARKS) -> None:
    """Write BENCHMARKS.md atomically from its sections' texts (see `document`)."""
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(document(sections))
    tmp.replace(path)


def document(sections: dict[str, str]) -> str:
    """BENCHMARKS.md: the title, a table of contents (question, section, script, task, commit, date), then the
    sections under their questions (QUESTIONS; any other under OTHER), each headed one level below its question."""
    known = {e.name: (question, e) for question, entries in QUESTIONS.items() for e in entries}
    groups: dict[str, list[tuple[Entry, str]]] = {}
    for question, entries in (*QUESTIONS.items(), (OTHER, [Entry(n, n, "") for n in sections if n not in known])):
        groups[question] = [(e, _demoted(sections[e.name])) for e in entries if e.name in sections]
    rows = [[question if i == 0 else "", link(body),
             f"`bench.{e.script}`" if e.script else "by hand", e.task, *_measured(body)]
            for question, members in groups.items() for i, (e, body) in enumerate(members)]
    parts = [TITLE, "## Contents\n", table(["question", "section", "script", "task", "commit", "date"], rows)]
    for question, members in groups.items():
        if members:
            parts.append(f"## {question}")
            parts += [f"<!-- bench:{e.name} -->\n{body}\n<!-- /bench:{e.name} -->" for e, body in members]
    return "\n\n".join(part.strip("\n") for part in parts) + "\n"


def _demoted(body: str) -> str:
    """A section's text with its level-2 headings at level 3, under the question's."""
    return "\n".join("#" + line if line.startswith("## ") else line for line in body.splitlines())


def link(body: str, page: str = "") -> str:
    """A markdown link to the section whose text is `body`, on `page` ("": this page): its title, its anchor."""
    return f"[{_title(body)}]({page}#{_slug(_heading(body))})"


def _heading(body: str) -> str:
    """A section's first heading."""
    return next((line.lstrip("#").strip() for line in body.splitlines() if line.startswith("#")), "untitled")


def _title(body: str) -> str:
    """A section's first heading, without the script it names (the contents give the script)."""
    return re.sub(r" \(`python -m bench\.[\w.]+`\)$", "", _heading(body))


def _slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _measured(body: str) -> list[str]:
    """[commit (short), date] from a section's stamp, each "not recorded" where absent."""
    found = STAMP.search(body)
    commit, date = found.groups() if found else (None, None)
    return [f"`{commit[:7]}`" if commit else "not recorded", date or "not recorded"]


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def wilson(count: int, n: int) -> tuple[float, float]:
    """The Wilson 95% interval of the share count / n (the share a new draw of n models would show, binomially)."""
    from scipy.stats import binomtest

    interval = binomtest(count, n).proportion_ci(0.95, method="wilson")
    return float(interval.low), float(interval.high)


def share_with_interval(count: int, n: int) -> str:
    """'99% [94.6, 99.8]': count of n as a percentage, with its Wilson 95% interval."""
    low, high = wilson(count, n)
    return f"{100 * count / n:.0f}% [{100 * low:.1f}, {100 * high:.1f}]"


def hardware(p: dict) -> str:
    """The processor, core count, torch version and thread count of provenance `p`, in one phrase."""
    return f"{p['processor']}, {p['cores']} CPU cores, torch {p['torch']} with {p['threads']} thread(s)"


def machine(p: dict) -> str:
    """One line naming the hardware and thread count of provenance `p`, and what the times are."""
    return (f"{hardware(p)} (1-minute load average {p['load_at_start']:.1f} at the start); times are CPU seconds of "
            "the benchmarking process")


# ---- timing -------------------------------------------------------------------------------------------
def clock(device: torch.device | str = "cpu") -> float:
    """Seconds now: CPU time of this process for the CPU, wall time after `torch.cuda.synchronize()` for a GPU.

    CPU time on the CPU: on a machine shared with other jobs the wall clock mostly measures them, and with one
    torch thread CPU time equals the wall time the same work takes on an idle core. On a GPU the work runs after
    the Python call that queued it returns, so the clock is read only once every queued kernel has finished.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device | str = "cpu"
                   ) -> tuple[float, list[float]]:
    """Median seconds (see `clock`) of `repeats` calls of fn (and every time, for the record)."""
    times = []
    for _ in range(repeats):
        start = clock(device)
        fn()
        times.append(clock(device) - start)
    return statistics.median(times), times


def stage_in_process(stage: str, task: str, runs_dir: Path, overrides: list[str]) -> dict:
    """Run one stage as `python -m pdiff STAGE` in a child process: wall seconds, CPU seconds, peak RSS (MiB). The
    child uses this process's thread count (`--threads`): left to its default, each child would start a thread
    per core, and several such processes on a few cores spend their time waiting on one another."""
    command = [sys.executable, "-m", "pdiff", stage, task, *overrides, "--runs-dir", str(runs_dir), "-q"]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                             env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"`{' '.join(command)}` failed")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024}


def measure_stages(task: str, folder: Path, runs_dir: Path, overrides: list[str], cached: dict) -> dict:
    """stage -> {"wall", "cpu", "rss"} of the run in `folder` (TASK with `overrides` under `runs_dir`): a stage not
    done yet runs in a child process (`stage_in_process`); one already done is read back from `cached` (an earlier
    measure) or its stage.json's seconds (cpu and rss None: another command ran it)."""
    from pdiff.config import STAGES
    from pdiff.pipeline import Run
    from pdiff.presets import load_config
    from pdiff.store import load_json

    run = Run(load_config(task, overrides), folder, progress=False)  # to run: it may not exist yet
    figures = {}
    for stage in STAGES:
        if run.is_done(stage):
            figures[stage] = cached.get(stage) or {
                "wall": load_json(run.stage_dir(stage) / "stage.json")["seconds"], "cpu": None, "rss": None}
            continue
        print(f"{folder.name}: {stage} ...", flush=True)
        figures[stage] = stage_in_process(stage, task, runs_dir, overrides)
    return figures


# ---- evaluating many models, timed (bench.evaluation on the CPU, bench.gpu on the device) -----------------------
EVALUATION_TASKS = {"mnist-convnet3": 500, "mnist1d-convnet": None}  # task -> test examples used (None: all)
EVALUATION_HEADER = ["task", "test examples x batch", "generated D", "chunk", "one by one (s)",
                     "whole-model vmap (s)", "split + vmap (s)", "floor (s)", "speedup vs one by one",
                     "split / floor", "predictions differing"]


def one_by_one(model: nn.Module, spec, vectors: torch.Tensor, loader, device: torch.device) -> torch.Tensor:
    """Predictions [M, n_test] of each vector loaded into a copy of the model in turn."""
    from pdiff.inference import predict

    model = copy.deepcopy(model)
    return torch.stack([predict(spec.load_into(model, v.to(device)), loader, device) for v in vectors])


@torch.no_grad()
def whole_model_vmap(model: nn.Module, spec, vectors: torch.Tensor, loader, chunk: int,
                     device: torch.device) -> torch.Tensor:
    """pdiff's evaluation before the split: every layer runs once per vector."""
    batched = vmap(lambda subset, x: functional_call(model, subset, (x,)), in_dims=(0, None))
    vectors = vectors.to(device)
    rows = [torch.cat([batched(spec.unflatten(vectors[s:s + chunk]), x.to(device)).argmax(-1).cpu()
                       for x, _ in loader], dim=1)
            for s in range(0, len(vectors), chunk)]
    return torch.cat(rows)


@torch.no_grad()
def floor_seconds(model: nn.Module, spec, loader, repeats: int, device: torch.device) -> tuple[float, float]:
    """(prefix over the test set once, suffix of one model over the test set), medians."""
    from pdiff.inference import split_model

    prefix, suffix, _ = split_model(model, spec)
    t_prefix, _ = median_seconds(lambda: [prefix(x.to(device)) for x, _ in loader], repeats, device)
    frontiers = [prefix(x.to(device)) for x, _ in loader]
    t_suffix, _ = median_seconds(lambda: [suffix(*f) for f in frontiers], repeats, device)
    return t_prefix, t_suffix


def measure_evaluation(task: str, n_test: int | None, n_models: int, repeats: int, data_dir: str | None,
                       device: torch.device | str = "cpu") -> dict:
    """Every figure of one task's row: seconds of each way, the floor, and the predictions that differ.

    A fresh model with random running statistics and `n_models` vectors around its subset: timing does not
    depend on training."""
    from pdiff.inference import predict_many
    from pdiff.params import ParamSpec
    from pdiff.presets import load_config
    from pdiff.tasks.datasets import Split, TensorLoader, load_dataset
    from pdiff.tasks.models import build_model

    device = torch.device(device)
    config = load_config(task, [f"data.data_dir={data_dir}"] if data_dir else [])
    d = config.data
    data = load_dataset(d.name, d.data_dir, d.val_size, config.seed, d.num_samples, download=False)
    test = data.test if n_test is None else Split(data.test.x[:n_test], data.test.y[:n_test])
    loader = TensorLoader(test, d.eval_batch_size)
    torch.manual_seed(0)
    model = build_model(config.model.name, data.input_shape, data.num_classes, **config.model.kwargs).eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2)
    spec = ParamSpec.select(model, config.collect.subset)
    vectors = spec.flatten(model) + 0.05 * torch.randn(n_models, spec.dim)
    model.to(device)
    chunk = config.evaluate.model_chunk
    reference = one_by_one(model, spec, vectors, loader, device)
    batched = predict_many(model, spec, vectors, loader, chunk, device)
    mismatches = int((reference != batched).sum())
    t_one, _ = median_seconds(lambda: one_by_one(model, spec, vectors, loader, device), max(1, repeats - 1), device)
    t_whole, _ = median_seconds(lambda: whole_model_vmap(model, spec, vectors, loader, chunk, device), repeats,
                                device)
    t_split, times = median_seconds(lambda: predict_many(model, spec, vectors, loader, chunk, device), repeats,
                                    device)
    t_prefix, t_suffix = floor_seconds(model, spec, loader, repeats, device)
    floor = t_prefix + n_models * t_suffix
    print(f"{task}: one-by-one {t_one:.2f}s, whole vmap {t_whole:.2f}s, split {t_split:.2f}s {times}, "
          f"floor {floor:.2f}s (prefix {t_prefix:.3f}s + {n_models} x {t_suffix:.4f}s), mismatches {mismatches}")
    return {"task": task, "test_examples": len(test), "eval_batch_size": d.eval_batch_size, "dim": spec.dim,
            "tensors": len(spec.names), "chunk": chunk, "models": n_models, "one_by_one_s": t_one,
            "whole_vmap_s": t_whole, "split_s": t_split, "split_times_s": times, "prefix_s": t_prefix,
            "suffix_s": t_suffix, "floor_s": floor, "mismatches": mismatches, "predictions": reference.numel()}


def evaluation_row(m: dict) -> list:
    """A `measure_evaluation` result as a row under EVALUATION_HEADER."""
    return [m["task"], f"{m['test_examples']} x {m['eval_batch_size']}", f"{m['dim']} ({m['tensors']} tensors)",
            m["chunk"], f"{m['one_by_one_s']:.2f}", f"{m['whole_vmap_s']:.2f}", f"**{m['split_s']:.2f}**",
            f"{m['floor_s']:.2f}", f"{m['one_by_one_s'] / m['split_s']:.1f}x", f"{m['split_s'] / m['floor_s']:.2f}",
            f"{m['mismatches']} of {m['predictions']}"]
