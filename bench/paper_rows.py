"""The paper's table rows (original / ensemble / p-diff) for every CPU preset whose data is here.

For each task: collect once (seed 0, cached in the run folder), then fit the generator with three seeds
and sample `generate.n` models from each, as the paper averages three runs. Results accumulate in
bench/paper_rows.json (rerun a subset with --tasks: the other tasks' rows are kept, and the provenance is the
latest invocation's); the BENCHMARKS.md section is rendered from all of them.

    python -m bench.paper_rows [--tasks mnist1d-mlp mnist-s1] [--data-dir DIR] [--runs-dir runs/bench] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import torch

from pdiff.baselines import weight_average
from pdiff.collect import load as load_collected  # the stage's loader (pdiff.collect is the function)
from pdiff.errors import DatasetError
from pdiff.generator import ParameterGenerator
from pdiff.inference import accuracy_many
from pdiff.pipeline import run_pipeline
from pdiff.presets import load_config, task_names
from pdiff.tasks.datasets import load_dataset

from . import common

NAME = "paper_rows"
SEEDS = (0, 1, 2)
# The paper's Table 1 / small-MLP rows (original best, ensemble, p-diff best), where it has this row.
PAPER = {"mnist-s1": (87.4, 87.4, 88.4), "mnist-s3": (96.7, 96.7, 96.7), "mnist-convnet3": (99.2, 99.2, 99.2),
         "cifar10-convnet3": (77.2, 77.3, 77.5), "cifar10-resnet18": (92.5, 92.5, 92.7),
         "cifar100-resnet18": (76.7, 76.7, 76.9)}
log = logging.getLogger("paper_rows")


def stats(val: torch.Tensor, test: torch.Tensor) -> dict[str, float]:
    """best = the paper's (test max); val_best = test accuracy of the best-on-validation model; in %."""
    return {"best": 100 * test.max().item(), "val_best": 100 * test[val.argmax()].item(),
            "mean": 100 * test.mean().item(), "median": 100 * test.median().item()}


def measure_task(task: str, runs_dir: Path, data_dir: str | None) -> dict:
    """Collect once, then fit and sample the generator with each seed; accuracies and seconds."""
    config = load_config(task, [f"data.data_dir={data_dir}"] if data_dir else [])
    start = time.perf_counter()
    run = run_pipeline(config, runs_dir, stages=("collect",), progress=False)  # cached after the first time
    collect_s = time.perf_counter() - start
    collected = load_collected(run.task, run.root)
    model, ckpts = collected.model, collected.checkpoints
    val_loader, test_loader = run.task.loader("val"), run.task.loader("test")
    chunk, device = config.evaluate.model_chunk, run.device

    def evaluate(vectors: torch.Tensor) -> dict[str, float]:
        val = accuracy_many(model, ckpts.spec, vectors, val_loader, chunk, device)
        test = accuracy_many(model, ckpts.spec, vectors, test_loader, chunk, device)
        return stats(val, test)

    row = {"task": task, "hardware": config.hardware, "dim": ckpts.spec.dim, "k": len(ckpts),
           "n": config.generate.n, "collect_s": round(collect_s, 1),
           "original": stats(ckpts.val_accuracy, ckpts.test_accuracy),
           "ensemble": evaluate(weight_average(ckpts.params))["best"], "seeds": []}
    for seed in SEEDS:
        start = time.perf_counter()
        gen = ParameterGenerator(ckpts.spec, config.train, device, seed).fit(ckpts, progress=False)
        vectors = gen.sample(config.generate.n, config.generate.sampler, config.generate.steps, seed=seed)
        row["seeds"].append({"seed": seed, **evaluate(vectors), "seconds": round(time.perf_counter() - start, 1)})
        log.info("%s seed %d: %s", task, seed, row["seeds"][-1])
    return row


def data_present(task: str, data_dir: str | None) -> bool:
    config = load_config(task)
    if config.data.name == "mnist1d":
        return True
    try:
        load_dataset(config.data.name, data_dir, config.data.val_size, download=False)
    except DatasetError:
        return False
    return True


def spread(values: list[float]) -> str:
    """mean ± sample std over the seeds, the paper's way of averaging three runs."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def render(results: dict) -> str:
    """The BENCHMARKS.md section: a row per measured task, then the presets still unmeasured (CPU presets with
    whether their data was here, GPU presets)."""
    rows = results["rows"]
    lines = [
        "## The paper's rows (`python -m bench.paper_rows`)", "",
        "Test accuracy in %. *original*: the K collected checkpoints; *ensemble*: their weight average; "
        "*p-diff*: the generator fitted with seeds 0, 1, 2, each sampling n models, given as mean ± std over "
        "the three seeds (the paper reports the average of three runs). *best* is the test-set maximum, as "
        "in the paper; *val-chosen* is the test accuracy of the model with the best validation accuracy, "
        "which selects nothing on the test set. The checkpoints are collected once per task (seed 0). "
        "*paper* gives the paper's original / ensemble / p-diff best where it has the row.", "",
        "| task | D | original best / mean / median | ensemble | p-diff best | p-diff val-chosen | p-diff mean "
        "| p-diff median | paper | collect s | generator s per seed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in sorted(rows):
        r = rows[task]
        o, seeds = r["original"], r["seeds"]
        paper = " / ".join(f"{v:.1f}" for v in PAPER[task]) if task in PAPER else ""
        lines.append(
            f"| {task} | {r['dim']} | {o['best']:.1f} / {o['mean']:.1f} / {o['median']:.1f} | {r['ensemble']:.1f} "
            + "".join(f"| {spread([s[key] for s in seeds])} " for key in ("best", "val_best", "mean", "median"))
            + f"| {paper} | {r['collect_s']:.0f} | {spread([s['seconds'] for s in seeds])} |")
    lines += ["", "Timings: a shared 2-core CPU (other jobs ran beside it; one torch thread), so they "
              "are noisy upper bounds. *collect s*: base training + K checkpoints + their evaluation (near 0 where "
              "an earlier run's collection was reused); *generator s*: fit + sample n + evaluate, per seed.",
              "", "No GPU was available for this table. Still unmeasured:"]
    lines += [f"- `{t}`: CPU preset, {'not run yet' if present else 'its dataset is not in the data folder here'}"
              for t, present in results["unmeasured_cpu"].items() if t not in rows]
    lines += [f"- `{t}`: GPU preset" for t in results["gpu_tasks"]]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/bench")
    parser.set_defaults(threads=1)  # one torch thread: the timings were taken so on a shared machine
    parser.add_argument("--tasks", nargs="*", help="CPU presets to (re)measure; default: all with data here")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Measure --tasks (default: every CPU preset with its data here), keeping the earlier rows of other tasks;
    bench/paper_rows.json is saved after each task, so an interrupted call keeps what it measured."""
    common.set_threads(args)
    cpu = [t for t in task_names() if load_config(t).hardware.startswith("cpu")]
    gpu = [t for t in task_names() if t not in cpu]
    present = [t for t in cpu if data_present(t, args.data_dir)]
    tasks = args.tasks if args.tasks is not None else present
    for task in tasks:
        if task not in present:
            raise SystemExit(f"{task} is not a CPU preset with its data here: choose from {', '.join(present)}")
    tail = f" --tasks {' '.join(tasks)}" if args.tasks is not None else ""
    command = f"python -m bench.paper_rows{tail}{' --data-dir ' + args.data_dir if args.data_dir else ''}"
    rows = {}
    for task in tasks:
        rows[task] = measure_task(task, args.runs_dir, args.data_dir)
        earlier = common.load_results(NAME).get("rows", {})  # reread: another invocation may have added rows
        figures = common.results(command, rows={**earlier, **rows}, unmeasured_cpu={t: t in present for t in cpu},
                                 gpu_tasks=gpu)
        common.save_results(NAME, figures)
    earlier = common.load_results(NAME).get("rows", {})
    return common.results(command, rows={**earlier, **rows}, unmeasured_cpu={t: t in present for t in cpu},
                          gpu_tasks=gpu)


def expected(results: dict) -> dict:
    """task -> where it was measured and its collect stage's seconds (the table times only collect on its own),
    which `pdiff run` prints before running that task's preset; a collection reused from an earlier run (under a
    second) is left out."""
    return {task: {"on": "a shared 2-core CPU", "stages": {"collect": {"seconds": round(row["collect_s"])}}}
            for task, row in results["rows"].items() if row["collect_s"] >= 1}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
