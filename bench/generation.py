"""Sampling speed and quality of each sampler, and the paper's efficiency comparison (generation vs SGD).

    python -m bench.generation --run-dir runs/mnist1d-convnet [--n 200] [--repeats 3] [--good 100]

Needs a finished `pdiff run` folder. Writes the "sampling" and "efficiency"
sections of BENCHMARKS.md.
- sampling: CPU seconds to draw `n` parameter vectors (latent sampling + decoding) with DDPM-1000 and
  DDIM / DPM-Solver++ at 10, 20, 50 steps, and the test accuracy distribution of the models they make.
- efficiency: seconds to obtain `good` models whose validation accuracy reaches the originals' median,
  by generation (sampling + evaluation on the validation split, generator already trained) and by SGD
  (collecting more checkpoints from the trained model with the task's recipe, then evaluating them).
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from pathlib import Path

import torch

from pdiff import train
from pdiff.collect import collect
from pdiff.collect import load as load_collected
from pdiff.config import load_config
from pdiff.inference import accuracy_many
from pdiff.task import Task
from pdiff.tasks.datasets import TensorLoader

from .markdown import machine, table, write_section

SAMPLERS = [("ddpm", 1000)] + [(s, k) for s in ("ddim", "dpm") for k in (10, 20, 50)]


def cpu_seconds(fn):
    """(result, CPU seconds) of one call."""
    start = time.process_time()
    result = fn()
    return result, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/mnist1d-convnet"))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--good", type=int, default=100, help="how many good models to obtain (efficiency)")
    parser.add_argument("--sgd-sampler", default="dpm:20", help="the sampler used for the efficiency comparison")
    args = parser.parse_args()
    config = load_config(args.run_dir / "config.yaml")
    task = Task(config, progress=False)
    collected = load_collected(task, args.run_dir)
    model, ckpts = collected.model, collected.checkpoints
    spec, chunk = ckpts.spec, config.evaluate.model_chunk
    gen = train.load(task, args.run_dir, spec)
    test, val = task.loader("test"), task.loader("val")
    original = 100 * ckpts.test_accuracy

    rows, reference = [], None
    for sampler, steps in SAMPLERS:
        gen.sample(2, sampler, steps)  # warm-up: imports the scheduler
        draws = [cpu_seconds(lambda s=sampler, k=steps, seed=seed: gen.sample(args.n, s, k, seed=seed))
                 for seed in range(args.repeats)]  # a different seed per draw: outliers vary between draws
        seconds = statistics.median(t for _, t in draws)
        acc = 100 * torch.cat([accuracy_many(model, spec, v, test, chunk) for v, _ in draws])
        reference = reference or (seconds, acc.mean().item())
        print(sampler, steps, seconds, acc.mean().item(), flush=True)
        rows.append([f"{sampler}-{steps}", f"{seconds:.2f}", f"{reference[0] / seconds:.0f}x",
                     f"{acc.mean():.2f}", f"{acc.mean().item() - reference[1]:+.2f}", f"{acc.median():.2f}",
                     f"{acc.min():.2f}", f"{acc.max():.2f}", int((acc < original.min()).sum())])
    rows.append(["originals (K checkpoints)", "", "", f"{original.mean():.2f}", "", f"{original.median():.2f}",
                 f"{original.min():.2f}", f"{original.max():.2f}", ""])
    header = ["sampler-steps", f"CPU s for {args.n}", "speedup", "mean acc %", "mean - DDPM-1000", "median",
              "min", "max", "below the worst original"]
    write_section("sampling", f"""## Sampling: DDPM-1000 vs DDIM / DPM-Solver++

`python -m bench.generation --run-dir {args.run_dir} --n {args.n} --repeats {args.repeats}` on {machine()}.
Task {config.task}; time = median of {args.repeats} draws of {args.n} vectors (latent sampling + decoding),
draw i with seed i for every sampler; accuracies are test accuracies of all {args.repeats * args.n} models drawn
(min, max and the count below the worst original show the deterministic samplers' rare outliers).

{table(header, rows)}
""")

    # ---- efficiency: N good models by generation vs by SGD ------------------------------------------
    threshold = ckpts.val_accuracy.median()
    sampler, steps = args.sgd_sampler.split(":")

    def by_generation():
        vectors = gen.sample(args.n, sampler, int(steps), seed=1)
        return accuracy_many(model, spec, vectors, val, chunk)

    def by_sgd(recipe: str, k: int):
        trained = copy.deepcopy(model)
        spec.load_into(trained, ckpts.params[-1])  # go on from the last collected checkpoint
        generator = torch.Generator().manual_seed(1)
        train = TensorLoader(task.data.train, config.data.batch_size, shuffle=True, generator=generator)
        more = collect(trained, train, spec, k, recipe, config.collect.subset_lr, config.collect.subset_weight_decay,
                       progress=False)
        return accuracy_many(model, spec, more.params, val, chunk)

    ways = [(f"generation ({sampler}-{steps}, {args.n} sampled)", by_generation),
            (f"SGD, recipe {config.collect.recipe} ({args.n} checkpoints)", lambda: by_sgd(config.collect.recipe,
                                                                                        args.n)),
            ("SGD, recipe epoch (20 checkpoints)", lambda: by_sgd("epoch", 20))]
    rows, seconds_per_good = [], {}
    for name, fn in ways:
        acc, seconds = cpu_seconds(fn)
        good = int((acc >= threshold).sum())
        per_good = seconds / good if good else math.inf
        seconds_per_good[name] = per_good
        print(name, seconds, good, flush=True)
        rows.append([name, f"{seconds:.1f}", f"{good} of {len(acc)}", f"{100 * acc.mean():.2f}",
                     f"{args.good * per_good:.1f}"])
    generation = seconds_per_good[ways[0][0]]
    for row, (name, _) in zip(rows, ways, strict=True):
        row.append(f"{seconds_per_good[name] / generation:.1f}x")
    header = ["way", "CPU s", "good (val acc >= originals' median)", "mean val acc %", f"CPU s for {args.good} good",
              "time relative to generation"]
    write_section("efficiency", f"""## Efficiency: {args.good} good models by generation vs by SGD

Same command and machine as the sampling section (one run each). A model is good when its validation
accuracy reaches the originals' median ({100 * threshold:.2f}%). Generation: sample and evaluate (the
generator is already trained). SGD: keep training the subset from the last checkpoint and evaluate the
new checkpoints; both count the evaluation needed to know which models are good. The paper reports
p-diff 15x to 44x faster than SGD.

{table(header, rows)}
""")


if __name__ == "__main__":
    main()
