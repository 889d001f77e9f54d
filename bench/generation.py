"""Sampling speed and quality of each sampler, and the paper's efficiency comparison (generation vs SGD).

    python -m bench.generation --run-dir runs/mnist1d-convnet [--n 200] [--repeats 3] [--good 100]

Needs a finished `pdiff run` folder. Writes bench/generation.json and the "generation" section of
BENCHMARKS.md, in two parts:
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
from pdiff.inference import accuracy_many
from pdiff.tasks.datasets import TensorLoader

from . import common

NAME = "generation"
SAMPLERS = [("ddpm", 1000)] + [(s, k) for s in ("ddim", "dpm") for k in (10, 20, 50)]


def cpu_seconds(fn):
    """(result, CPU seconds) of one call."""
    start = time.process_time()
    result = fn()
    return result, time.process_time() - start


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/mnist1d-convnet"))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--good", type=int, default=100, help="how many good models to obtain (efficiency)")
    parser.add_argument("--sgd-sampler", default="dpm:20", help="the sampler used for the efficiency comparison")
    return parser


def accuracy_figures(acc: torch.Tensor) -> dict:
    """Mean, median, min and max of accuracies in %."""
    return {"mean": acc.mean().item(), "median": acc.median().item(), "min": acc.min().item(), "max": acc.max().item()}


def measure(args: argparse.Namespace) -> dict:
    common.set_threads(args)
    run = common.open_run(args.run_dir, common.data_overrides(args))
    config, task = run.config, run.task
    collected = load_collected(task, args.run_dir)
    model, ckpts = collected.model, collected.checkpoints
    spec, chunk = ckpts.spec, config.evaluate.model_chunk
    gen = train.load(task, args.run_dir, spec)
    test, val = task.loader("test"), task.loader("val")
    original = 100 * ckpts.test_accuracy

    samplers = []
    for sampler, steps in SAMPLERS:
        gen.sample(2, sampler, steps)  # warm-up: imports the scheduler
        draws = [cpu_seconds(lambda s=sampler, k=steps, seed=seed: gen.sample(args.n, s, k, seed=seed))
                 for seed in range(args.repeats)]  # a different seed per draw: outliers vary between draws
        seconds = statistics.median(t for _, t in draws)
        acc = 100 * torch.cat([accuracy_many(model, spec, v, test, chunk) for v, _ in draws])
        print(sampler, steps, seconds, acc.mean().item(), flush=True)
        samplers.append({"sampler": f"{sampler}-{steps}", "seconds": seconds, **accuracy_figures(acc),
                         "below_worst_original": int((acc < original.min()).sum())})

    # ---- efficiency: N good models by generation vs by SGD ------------------------------------------
    threshold = ckpts.val_accuracy.median().item()
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
    efficiency = []
    for name, fn in ways:
        acc, seconds = cpu_seconds(fn)
        efficiency.append({"way": name, "seconds": seconds, "good": int((acc >= threshold).sum()), "models": len(acc),
                           "mean_val": acc.mean().item()})
        print(name, seconds, efficiency[-1]["good"], flush=True)
    return common.results(f"python -m bench.generation --run-dir {args.run_dir} --n {args.n} --repeats {args.repeats}",
                          task=config.task, n=args.n, repeats=args.repeats, good=args.good, samplers=samplers,
                          originals=accuracy_figures(original), threshold=threshold, efficiency=efficiency)


def render(results: dict) -> str:
    """Both parts: the samplers' speed and accuracy, then the efficiency comparison."""
    n, repeats, good = results["n"], results["repeats"], results["good"]
    reference = results["samplers"][0]
    rows = [[r["sampler"], f"{r['seconds']:.2f}", f"{reference['seconds'] / r['seconds']:.0f}x", f"{r['mean']:.2f}",
             f"{r['mean'] - reference['mean']:+.2f}", f"{r['median']:.2f}", f"{r['min']:.2f}", f"{r['max']:.2f}",
             r["below_worst_original"]] for r in results["samplers"]]
    o = results["originals"]
    rows.append(["originals (K checkpoints)", "", "", f"{o['mean']:.2f}", "", f"{o['median']:.2f}", f"{o['min']:.2f}",
                 f"{o['max']:.2f}", ""])
    header = ["sampler-steps", f"CPU s for {n}", "speedup", "mean acc %", "mean - DDPM-1000", "median",
              "min", "max", "below the worst original"]
    per_good = {w["way"]: w["seconds"] / w["good"] if w["good"] else math.inf for w in results["efficiency"]}
    generation = per_good[results["efficiency"][0]["way"]]
    ways = [[w["way"], f"{w['seconds']:.1f}", f"{w['good']} of {w['models']}", f"{100 * w['mean_val']:.2f}",
             f"{good * per_good[w['way']]:.1f}", f"{per_good[w['way']] / generation:.1f}x"]
            for w in results["efficiency"]]
    ways_header = ["way", "CPU s", "good (val acc >= originals' median)", "mean val acc %", f"CPU s for {good} good",
                   "time relative to generation"]
    p = results["provenance"]
    return f"""## Sampling: DDPM-1000 vs DDIM / DPM-Solver++

`{p['command']}` on {common.machine(p)}.
Task {results['task']}; time = median of {repeats} draws of {n} vectors (latent sampling + decoding),
draw i with seed i for every sampler; accuracies are test accuracies of all {repeats * n} models drawn
(min, max and the count below the worst original show the deterministic samplers' rare outliers).

{common.table(header, rows)}

## Efficiency: {good} good models by generation vs by SGD

Same command and machine as the sampling table (one run each). A model is good when its validation
accuracy reaches the originals' median ({100 * results['threshold']:.2f}%). Generation: sample and evaluate (the
generator is already trained). SGD: keep training the subset from the last checkpoint and evaluate the
new checkpoints; both count the evaluation needed to know which models are good. The paper reports
p-diff 15x to 44x faster than SGD.

{common.table(ways_header, ways)}"""


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
