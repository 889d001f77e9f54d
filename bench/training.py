"""Generator training: CPU seconds against step counts, and whether each setting keeps the accuracy goal.

    python -m bench.training --run-dir runs/mnist1d-convnet [--steps 2000:3000 1000:1500 500:1000] [--compile]

For each `AE_STEPS:DIFFUSION_STEPS`, trains the run's generator afresh on its checkpoints (the run's
other train settings), samples `generate.n` models with the run's sampler and checks the goal:
generated mean test accuracy >= originals' mean - 0.5 points, and generated best >= originals' best
(best = the test accuracy of the model with the best validation accuracy). One run per setting;
--compile adds a row for the first setting with both networks under `torch.compile` (compilation
included in the time, as a user pays it). Writes the "training" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

from pdiff.collect import load as load_collected  # the stage's loader (pdiff.collect is the function)
from pdiff.config import load_config
from pdiff.generator import ParameterGenerator
from pdiff.inference import accuracy_many
from pdiff.task import Task

from .markdown import machine, table, write_section


def best_and_mean(val, test) -> tuple[float, float]:
    return 100 * test[val.argmax()].item(), 100 * test.mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/mnist1d-convnet"))
    parser.add_argument("--steps", nargs="*", default=["2000:3000", "1000:1500", "500:1000", "300:500"])
    parser.add_argument("--compile", action="store_true", help="also time the first setting under torch.compile")
    args = parser.parse_args()
    config = load_config(args.run_dir / "config.yaml")
    task = Task(config, progress=False)
    collected = load_collected(task, args.run_dir)
    model, ckpts = collected.model, collected.checkpoints
    spec, chunk, g = ckpts.spec, config.evaluate.model_chunk, config.generate
    val, test = task.loader("val"), task.loader("test")
    orig_best, orig_mean = best_and_mean(ckpts.val_accuracy, ckpts.test_accuracy)
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
        val_acc = accuracy_many(model, spec, vectors, val, chunk)
        test_acc = accuracy_many(model, spec, vectors, test, chunk)
        best, mean = best_and_mean(val_acc, test_acc)
        goal = mean >= orig_mean - 0.5 and best >= orig_best
        label = f"{setting}, torch.compile" if compiled else setting
        print(label, ae_seconds, dm_seconds, best, mean, goal, flush=True)
        rows.append([label, f"{ae_seconds:.1f}", f"{dm_seconds:.1f}", f"{best:.2f}", f"{mean:.2f}",
                     "yes" if goal else "no"])
    header = ["AE:diffusion steps", "AE CPU s", "diffusion CPU s", "generated best %", "generated mean %",
              "goal met"]
    write_section("training", f"""## Generator training: steps vs time and the accuracy goal

`python -m bench.training --run-dir {args.run_dir} --steps {' '.join(args.steps)}{' --compile' * args.compile}` on
{machine()}.
Task {config.task}: originals best {orig_best:.2f}%, mean {orig_mean:.2f}%; the goal is generated mean
>= {orig_mean - 0.5:.2f}% and generated best >= {orig_best:.2f}%. One run per setting (seed {config.seed}),
sampler {g.sampler} ({g.steps or 'all'} steps), {g.n} models; the mini-batch is min(batch_size, K) = the
whole checkpoint set here, so every step is a full-batch step.

{table(header, rows)}
""")


if __name__ == "__main__":
    main()
