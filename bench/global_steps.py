"""How long the global denoiser trains, against how close its samples lie to the checkpoints.

python -m bench.global_steps [--task mnist-mlp-full] [--steps 3000 5000 10000 20000] [--data-dir DIR]

Needs the task's run (collect and train done) under --runs-dir, as `python -m bench.whole_networks` leaves it.
For each step count, only the global denoiser (train.diffusion.global_steps) is trained again, from the same
seed; the autoencoder and the transformer stay as the run trained them. 100 models are sampled with the task's
sampler and evaluated: generated - original mean test accuracy with its CI, the share inside the originals'
test-accuracy range, and how far each sample's global coordinates (standardised latents) lie from the nearest
checkpoint's, against how far each checkpoint's lie from the nearest other one (a sample nearer than that is
closer to a checkpoint than the checkpoints are to each other).

Writes the "global-steps" section of BENCHMARKS.md and bench/global_steps.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pdiff import evaluate, memorization, stats
from pdiff.collect import load as load_collected  # the stage's loader (pdiff.collect is the function)
from pdiff.config import load_config
from pdiff.generator import ParameterGenerator
from pdiff.inference import accuracy_many, labels_of, predict_many
from pdiff.pipeline import Run
from pdiff.priors.factorised import FactorisedPrior
from pdiff.report import points_with_ci

from .markdown import clock, machine, table, write_section
from .whole_networks import share_with_interval

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_suffix(".json")
N_MODELS = 100


def measure(run: Run, gen: ParameterGenerator, step_counts: list[int]) -> list[dict]:
    """For each step count, retrain the global denoiser of gen's factorised prior; sample, evaluate and compare
    N_MODELS models."""
    collected = load_collected(run.task, run.root)
    checkpoints, chunk = collected.checkpoints, run.config.evaluate.model_chunk
    training, _ = checkpoints.split(run.config.train.holdout, run.config.train.holdout_split)  # what train saw
    prior = gen.prior
    own = prior.global_latents(gen.standardise_latents(gen.encode(training.params.float()))).cpu()  # [K, G * c]
    own_nearest = memorization.nearest_distances(own, own, True)  # [K]
    original_correct, original_val = evaluate.load_correct(run.task, run.root, "original")
    original_accuracy = original_correct.float().mean(1)  # [K]
    test, val_loader = run.task.loader("test"), run.task.loader("val")
    rows = []
    for steps in step_counts:
        torch.manual_seed(run.config.seed)
        start = clock()
        prior.retrain_global(own, steps, progress=False)
        seconds = clock() - start

        latents = gen.sample_latents(N_MODELS, run.config.generate.sampler, run.config.generate.steps,
                                     seed=run.config.seed)
        drawn = prior.global_latents(gen.standardise_latents(latents)).cpu()  # [N, G * c]
        vectors = gen.decode(latents)
        correct = predict_many(collected.model, checkpoints.spec, vectors, test, chunk) == labels_of(test)
        val = accuracy_many(collected.model, checkpoints.spec, vectors, val_loader, chunk)
        mean = next(c for c in stats.compare_accuracy(correct, val, original_correct, original_val, "generated",
                                                      seed=run.config.seed) if c.metric == "mean_test_accuracy")
        test_accuracy = correct.float().mean(1)  # [N]
        inside = int(((test_accuracy >= original_accuracy.min()) & (test_accuracy <= original_accuracy.max())).sum())
        drawn_nearest = memorization.nearest_distances(drawn, own)  # [N]
        nearest = stats.compare_values(drawn_nearest, own_nearest, "generated", "original",
                                       "global-coordinate distance to the nearest checkpoint", seed=run.config.seed)
        rows.append({"steps": steps, "seconds": seconds, "mean": mean.as_dict(), "inside": inside,
                     "generated_mean": float(test_accuracy.mean()), "lowest": float(test_accuracy.min()),
                     "nearest": nearest.as_dict(), "nearest_median": float(drawn_nearest.median()),
                     "own_median": float(own_nearest.median())})
        print(f"global_steps {steps}: {inside} of {N_MODELS} inside, {points_with_ci(rows[-1]['mean'])} points, "
              f"nearest {rows[-1]['nearest_median']:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist-mlp-full")
    parser.add_argument("--steps", type=int, nargs="+", default=[3000, 5000, 10000, 20000])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "full")
    parser.add_argument("--note", default="", help="a line added under the table")
    args = parser.parse_args()
    overrides = [f"data.data_dir={args.data_dir}"] if args.data_dir else []
    run = Run(load_config(args.task, overrides), args.runs_dir / args.task, progress=False)
    gen = ParameterGenerator.load(run.stage_dir("train"))
    if not isinstance(gen.prior, FactorisedPrior):
        raise SystemExit(f"{args.task}'s generator has no global denoiser: give a task with train.diffusion."
                         "global_steps")
    rows = measure(run, gen, args.steps)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({args.task: rows}, indent=1))
    tmp.replace(RESULTS)
    preset = run.config.train.diffusion.global_steps
    body = table(["global_steps", "train CPU s", "generated mean % (lowest)",
                  "generated - original mean, points [95% CI]", "inside range [95% CI]",
                  "nearest-checkpoint distance, median: generated - originals' own [95% CI]"],
                 [[f"{r['steps']:,}" + (" (preset)" if r["steps"] == preset else ""), f"{r['seconds']:.0f}",
                   f"{100 * r['generated_mean']:.2f} ({100 * r['lowest']:.2f})",
                   f"{points_with_ci(r['mean'])}, {r['mean']['verdict']}", share_with_interval(r["inside"], N_MODELS),
                   f"{r['nearest_median']:.3f} - {r['own_median']:.3f} = {points_with_ci(r['nearest'], 1)}, "
                   f"{r['nearest']['verdict']}"] for r in rows])
    write_section("global-steps", f"""
## How long the global denoiser trains (`python -m bench.global_steps`)

`python -m bench.global_steps --task {args.task} --steps {' '.join(map(str, args.steps))}` on {machine()}.
Only the global denoiser is trained again (same seed); the run's autoencoder and transformer are kept. {N_MODELS}
models each, sampled with the task's sampler; accuracies on the MNIST test set, the mean's CI by the two-level
bootstrap of `pdiff.stats.compare_accuracy`. Distances are between global coordinates (standardised latents):
each generated model's to the nearest checkpoint, against each checkpoint's to the nearest other one (CI by
`pdiff.stats.compare_values`); a negative difference means samples closer to a checkpoint than the checkpoints
are to each other.

{body}

{args.note}
""")


if __name__ == "__main__":
    main()
