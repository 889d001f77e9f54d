"""How long the global denoiser trains, against how close its samples lie to the checkpoints.

    python -m bench.global_steps [--task mnist-mlp-full] [--steps 3000 5000 10000 20000] [--data-dir DIR]

Needs the task's run (collect and train done) under --runs-dir, as `python -m bench.whole_networks` leaves it.
For each step count, only the global denoiser (train.diffusion.global_steps) is trained again, from the same
seed; the autoencoder and the transformer stay as the run trained them. 100 models are sampled with the task's
sampler and evaluated: generated - original mean test accuracy with its CI, the share inside the originals'
test-accuracy range, and how far each sample's global coordinates (standardised latents) lie from the nearest
checkpoint's, against how far each checkpoint's lie from the nearest other one (a sample nearer than that is
closer to a checkpoint than the checkpoints are to each other).

Writes bench/global_steps.json and the "global_steps" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

import torch

from pdiff import evaluate, memorization, stats
from pdiff.collect import load as load_collected  # the stage's loader (pdiff.collect is the function)
from pdiff.generator import ParameterGenerator
from pdiff.inference import accuracy_many, labels_of, predict_many
from pdiff.pipeline import Run
from pdiff.priors.factorised import FactorisedPrior
from pdiff.words import points_with_ci

from . import common
from .common import clock, share_with_interval, table

NAME = "global_steps"
N_MODELS = 100


def measure_steps(run: Run, gen: ParameterGenerator, step_counts: list[int]) -> list[dict]:
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


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/full")
    parser.add_argument("--task", default="mnist-mlp-full")
    parser.add_argument("--steps", type=int, nargs="+", default=[3000, 5000, 10000, 20000])
    parser.add_argument("--note", default="", help="a line added under the table")
    return parser


def measure(args: argparse.Namespace) -> dict:
    common.set_threads(args)
    run = common.open_run(args.runs_dir / args.task, common.data_overrides(args))
    gen = ParameterGenerator.load(run.stage_dir("train"))
    if not isinstance(gen.prior, FactorisedPrior):
        raise SystemExit(f"{args.task}'s generator has no global denoiser: give a task with train.diffusion."
                         "global_steps")
    rows = measure_steps(run, gen, args.steps)
    return common.results(f"python -m bench.global_steps --task {args.task} --steps {' '.join(map(str, args.steps))}",
                          task=args.task, preset_steps=run.config.train.diffusion.global_steps, n_models=N_MODELS,
                          rows=rows, note=args.note)


def render(results: dict) -> str:
    preset, n = results["preset_steps"], results["n_models"]
    body = table(["global_steps", "train CPU s", "generated mean % (lowest)",
                  "generated - original mean, points [95% CI]", "inside range [95% CI]",
                  "nearest-checkpoint distance, median: generated - originals' own [95% CI]"],
                 [[f"{r['steps']:,}" + (" (preset)" if r["steps"] == preset else ""), f"{r['seconds']:.0f}",
                   f"{100 * r['generated_mean']:.2f} ({100 * r['lowest']:.2f})",
                   f"{points_with_ci(r['mean'])}, {r['mean']['verdict']}", share_with_interval(r["inside"], n),
                   f"{r['nearest_median']:.3f} - {r['own_median']:.3f} = {points_with_ci(r['nearest'], 1)}, "
                   f"{r['nearest']['verdict']}"] for r in results["rows"]])
    p = results["provenance"]
    return f"""## How long the global denoiser trains (`python -m bench.global_steps`)

`{p['command']}` on {common.machine(p)}.
Only the global denoiser is trained again (same seed); the run's autoencoder and transformer are kept. {n}
models each, sampled with the task's sampler; accuracies on the MNIST test set, the mean's CI by the two-level
bootstrap of `pdiff.stats.compare_accuracy`. Distances are between global coordinates (standardised latents):
each generated model's to the nearest checkpoint, against each checkpoint's to the nearest other one (CI by
`pdiff.stats.compare_values`); a negative difference means samples closer to a checkpoint than the checkpoints
are to each other.

{body}

{results['note']}"""


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
