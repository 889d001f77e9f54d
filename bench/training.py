"""Generator training: CPU seconds against step counts, and whether each setting keeps the accuracy goal.

    python -m bench.training --run-dir runs/mnist1d-convnet [--steps 2000:3000 1000:1500 500:1000] [--compile]

For each `AE_STEPS:DIFFUSION_STEPS`, trains the run's generator afresh on its checkpoints (the run's
other train settings), samples `generate.n` models with the run's sampler and checks the goal on validation
accuracy (it chooses the preset's steps): generated mean >= originals' mean - 0.5 points, and generated best >=
originals' best. The test accuracies (the mean, and the val-chosen model's) are reported. One run per setting;
--compile adds a row for the first setting with both networks under `torch.compile` (compilation
included in the time, as a user pays it). Writes bench/training.json and the "training" section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

from pdiff.collect import load as load_collected  # the stage's loader (pdiff.collect is the function)
from pdiff.generator import ParameterGenerator
from pdiff.inference import accuracy_many

from . import common

NAME = "training"


def best_and_mean(val, test) -> dict[str, dict[str, float]]:
    """Val accuracies [M] and test accuracies [M] -> on each split the best (on test: the val-chosen model's) and
    the mean, in %."""
    return {"val": {"best": 100 * val.max().item(), "mean": 100 * val.mean().item()},
            "test": {"best": 100 * test[val.argmax()].item(), "mean": 100 * test.mean().item()}}


def goal_met(generated: dict, original: dict) -> bool:
    """On validation: generated mean >= originals' mean - 0.5 points and generated best >= originals' best."""
    return generated["mean"] >= original["mean"] - 0.5 and generated["best"] >= original["best"]


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/mnist1d-convnet"))
    parser.add_argument("--steps", nargs="*", default=["2000:3000", "1000:1500", "500:1000", "300:500"])
    parser.add_argument("--compile", action="store_true", help="also time the first setting under torch.compile")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Train, sample and evaluate the run's generator once per setting; CPU seconds and accuracies."""
    common.set_threads(args)
    run = common.open_run(args.run_dir, common.data_overrides(args))
    config, task = run.config, run.task
    collected = load_collected(task, args.run_dir)
    model, ckpts = collected.model, collected.checkpoints
    spec, chunk, g = ckpts.spec, config.evaluate.model_chunk, config.generate
    val, test = task.loader("val"), task.loader("test")
    original = best_and_mean(ckpts.val_accuracy, ckpts.test_accuracy)
    rows = []
    settings = [(steps, False) for steps in args.steps] + ([(args.steps[0], True)] if args.compile else [])
    for setting, compiled in settings:
        ae_steps, dm_steps = (int(s) for s in setting.split(":"))
        train = copy.deepcopy(config.train)
        train.autoencoder.steps, train.diffusion.steps = ae_steps, dm_steps
        gen = ParameterGenerator(spec, train, "cpu", config.seed)
        if compiled:
            gen.autoencoder.compile()
            gen.prior.denoiser.compile()  # the default task's flat prior
        start = time.process_time()
        gen.fit_autoencoder(ckpts, progress=False)
        ae_seconds = time.process_time() - start
        gen.fit_prior(ckpts, progress=False)
        dm_seconds = time.process_time() - start - ae_seconds
        vectors = gen.sample(g.n, g.sampler, g.steps, seed=config.seed)
        accuracies = best_and_mean(accuracy_many(model, spec, vectors, val, chunk),
                                   accuracy_many(model, spec, vectors, test, chunk))
        label = f"{setting}, torch.compile" if compiled else setting
        print(label, ae_seconds, dm_seconds, accuracies, flush=True)
        rows.append({"setting": label, "ae_s": ae_seconds, "diffusion_s": dm_seconds, **accuracies})
    command = f"python -m bench.training --run-dir {args.run_dir} --steps {' '.join(args.steps)}"
    return common.results(
        command + " --compile" * args.compile,
        task=config.task, seed=config.seed, sampler=g.sampler, sample_steps=g.steps, n=g.n,
        original=original, rows=rows)


def render(results: dict) -> str:
    """The goal, on validation: generated mean >= originals' mean - 0.5 points and generated best >= originals'."""
    original = results["original"]
    rows = [[r["setting"], f"{r['ae_s']:.1f}", f"{r['diffusion_s']:.1f}", f"{r['val']['best']:.2f}",
             f"{r['val']['mean']:.2f}", "yes" if goal_met(r["val"], original["val"]) else "no",
             f"{r['test']['best']:.2f}", f"{r['test']['mean']:.2f}"] for r in results["rows"]]
    header = ["AE:diffusion steps", "AE CPU s", "diffusion CPU s", "generated best % (val)", "generated mean % (val)",
              "goal met (val)", "val-chosen test %", "test mean %"]
    p = results["provenance"]
    return f"""## Generator training: steps vs time and the accuracy goal

`{p['command']}` on
{common.machine(p)}.
Task {results['task']}: originals' validation accuracy best {original['val']['best']:.2f}%, mean
{original['val']['mean']:.2f}%; the goal, judged on validation, is generated mean
>= {original['val']['mean'] - 0.5:.2f}% and generated best >= {original['val']['best']:.2f}%. Test accuracy is
reported (originals: val-chosen {original['test']['best']:.2f}%, mean {original['test']['mean']:.2f}%).
One run per setting (seed {results['seed']}), sampler {results['sampler']}
({results['sample_steps'] or 'all'} steps), {results['n']} models; the mini-batch is min(batch_size, K) = the
whole checkpoint set here, so every step is a full-batch step.

{common.table(header, rows)}"""


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
