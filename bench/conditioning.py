"""Accuracy-conditioned generation: does the accuracy of the generated models follow the one asked for?

    python -m bench.conditioning [--task mnist1d-convnet] [--guidance 0 1 3] [--runs-dir runs/bench-conditioning]
                                 [--no-reference] [key=value ...]

Collects once and trains one generator conditioned on validation accuracy (train.diffusion.condition=accuracy,
RUNS_DIR/accuracy) and, on the same collection, the paper's unconditioned one (RUNS_DIR/none, for reference);
finished stages are read back, not redone. The conditioned generator then samples generate.n models for each
target (min, median and max of the training checkpoints' validation accuracies, and one validation step,
1 / n_val, beyond the max) and each guidance weight. Every group is compared with the originals and with the
ensemble (their weight average) by `pdiff.stats.compare_accuracy` (95% CIs over test examples and models), and
its median max IoU to the originals is given. Writes bench/conditioning.json (one entry per task, each with its
own provenance) and the "conditioning" section of BENCHMARKS.md, one part per task.
"""

from __future__ import annotations

import argparse

import torch

from pdiff.baselines import weight_average
from pdiff.collect import load as load_collected
from pdiff.inference import accuracy_many, predict_many
from pdiff.pipeline import Run, adopt, run_stages
from pdiff.presets import load_config
from pdiff.similarity import max_iou_to
from pdiff.stats import compare_accuracy
from pdiff.train import load as load_generator
from pdiff.words import points_with_ci

from . import common

NAME = "conditioning"
METRICS = ("mean_test_accuracy", "best_val_chosen_test_accuracy")


class Evaluator:
    """Val accuracies and test correctness of parameter vectors, and their comparisons with the originals and
    the ensemble."""

    def __init__(self, run: Run):
        collected = load_collected(run.task, run.root)
        self.run, self.model, self.ckpts = run, collected.model, collected.checkpoints
        self.test_labels = run.task.labels("test")
        self.original = (self.ckpts.test_predictions.long() == self.test_labels, self.ckpts.val_accuracy)
        self.ensemble = self.evaluate(weight_average(self.ckpts.params))

    def evaluate(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(test correctness [M, n_test] bool, val accuracies [M]) of vectors [M, D]."""
        task, chunk = self.run.task, self.run.config.evaluate.model_chunk
        val = accuracy_many(self.model, self.ckpts.spec, vectors, task.loader("val"), chunk, task.device)
        predictions = predict_many(self.model, self.ckpts.spec, vectors, task.loader("test"), chunk, task.device)
        return predictions == self.test_labels, val

    def compare(self, correct: torch.Tensor, val: torch.Tensor) -> dict[str, dict]:
        """Mean and val-chosen best test accuracy minus the originals' and the ensemble's: {"original": {metric:
        comparison dict}, "ensemble": {...}}."""
        seed = self.run.config.seed
        out = {}
        for versus, (versus_correct, versus_val) in (("original", self.original), ("ensemble", self.ensemble)):
            comparisons = compare_accuracy(correct, val, versus_correct, versus_val, "generated", versus, seed=seed)
            out[versus] = {c.metric: c.as_dict() for c in comparisons if c.metric in METRICS}
        return out


def group_figures(label: str, target: str, w: str, correct: torch.Tensor, val: torch.Tensor, ev: Evaluator) -> dict:
    """One generated group: its accuracies, its comparisons with the originals and the ensemble, its max IoU."""
    test = correct.float().mean(1)
    return {"label": label, "target": target, "w": w, "val_mean": val.mean().item(), "test_mean": test.mean().item(),
            "best": test[val.argmax()].item(), "comparisons": ev.compare(correct, val),
            "median_max_iou": max_iou_to(~correct, ~ev.original[0]).median().item()}


def reference_figures(label: str, correct: torch.Tensor, val: torch.Tensor, ev: Evaluator,
                      exclude_self: bool = False) -> dict:
    """The originals or the ensemble: their accuracies and median max IoU to the originals (no comparisons)."""
    test = correct.float().mean(1)
    return {"label": label, "target": "", "w": "", "val_mean": val.mean().item(), "test_mean": test.mean().item(),
            "best": test[val.argmax()].item(), "comparisons": None,
            "median_max_iou": max_iou_to(~correct, ~ev.original[0], exclude_self=exclude_self).median().item()}


def table_row(r: dict) -> list:
    c = r["comparisons"]

    def cell(versus: str, metric: str) -> str:
        return "" if c is None else f"{points_with_ci(c[versus][metric])} {c[versus][metric]['verdict']}"

    return [r["label"], r["target"], r["w"], f"{100 * r['val_mean']:.2f}", f"{100 * r['test_mean']:.2f}",
            cell("original", METRICS[0]), cell("ensemble", METRICS[0]), f"{100 * r['best']:.2f}",
            cell("original", METRICS[1]), cell("ensemble", METRICS[1]), f"{r['median_max_iou']:.3f}"]


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/bench-conditioning")
    parser.add_argument("--task", default="mnist1d-convnet")
    parser.add_argument("--guidance", nargs="*", type=float, default=[0.0, 1.0, 3.0])
    parser.add_argument("--no-reference", action="store_true", help="skip the unconditioned generator's row")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. generate.sampler=ddim generate.n=100")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Train (or read back) the generators, sample every target and guidance weight; the other tasks' earlier
    entries are kept."""
    common.set_threads(args)
    overrides = [*args.overrides, *common.data_overrides(args)]
    conditioned = Run(load_config(args.task, ["train.diffusion.condition=accuracy", *overrides]),
                      args.runs_dir / "accuracy", progress=False)
    run_stages(conditioned, ("collect", "train"))
    generators = {"conditioned, no target": None}
    if not args.no_reference:
        plain = Run(load_config(args.task, overrides), args.runs_dir / "none", progress=False)
        if not plain.is_done("collect"):
            adopt(plain, "collect", conditioned)  # the same checkpoints for both generators
        run_stages(plain, ("collect", "train"))
        generators = {"p-diff, condition=none": plain, **generators}

    ev = Evaluator(conditioned)
    spec, cfg = ev.ckpts.spec, conditioned.config.generate
    gen = load_generator(conditioned.task, conditioned.root, spec)
    step = 1 / len(conditioned.task.labels("val"))
    targets = {"min": "min", "median": "median", "max": "max", "max + 1 step": gen.target_accuracy("max") + step}

    def sample(generator, target=None, guidance=0.0) -> tuple[torch.Tensor, torch.Tensor]:
        vectors = generator.sample(cfg.n, cfg.sampler, cfg.steps, seed=conditioned.config.seed, target=target,
                                   guidance=guidance)
        return ev.evaluate(vectors)

    rows = [reference_figures("originals (K checkpoints)", *ev.original, ev, exclude_self=True),
            reference_figures("ensemble (weight average)", *ev.ensemble, ev)]
    for label, run in generators.items():
        rows.append(group_figures(label, "", "", *sample(gen if run is None else load_generator(run.task, run.root,
                                                                                                spec)), ev))
        print(*table_row(rows[-1]), sep=" | ", flush=True)
    achieved = []  # per guidance weight and target: what was asked, the val mean reached, the comparisons
    for w in args.guidance:
        for name, target in targets.items():
            correct, val = sample(gen, target, w)
            accuracy = gen.target_accuracy(target)
            rows.append(group_figures("conditioned", f"{name} ({100 * accuracy:.2f})", f"{w:g}", correct, val, ev))
            achieved.append({"w": w, "target": name, "asked": accuracy, "reached": val.mean().item(),
                             "comparisons": rows[-1]["comparisons"]})
            print(*table_row(rows[-1]), sep=" | ", flush=True)
    command = (f"python -m bench.conditioning --task {args.task} --guidance {' '.join(f'{w:g}' for w in args.guidance)}"
               + " --no-reference" * args.no_reference + "".join(" " + o for o in args.overrides))
    entry = {"provenance": common.provenance(command, str(conditioned.device)), "k": len(ev.ckpts),
             "seed": conditioned.config.seed, "p_uncond": conditioned.config.train.diffusion.p_uncond, "n": cfg.n,
             "sampler": cfg.sampler, "reference": not args.no_reference, "val_step": step,
             "n_test": len(ev.test_labels), "guidance": args.guidance, "targets": list(targets), "rows": rows,
             "achieved": achieved}
    tasks = {**common.load_results(NAME).get("tasks", {}), args.task: entry}
    return {"format_version": common.FORMAT_VERSION, "provenance": entry["provenance"], "tasks": tasks}


def render_task(task: str, r: dict) -> str:
    header = ["generator", "target (val %)", "w", "val mean %", "test mean %", "mean - original [95% CI]",
              "mean - ensemble [95% CI]", "best (val-chosen) %", "best - original [95% CI]",
              "best - ensemble [95% CI]", "median max IoU"]
    reference = (", and for reference the paper's unconditioned generator on the same checkpoints"
                 if r["reference"] else "")
    achieved = {(a["w"], a["target"]): (a["asked"], a["reached"], a["comparisons"]) for a in r["achieved"]}
    p = r["provenance"]
    return f"""## Accuracy-conditioned generation on {task} (`python -m bench.conditioning`)

`{p['command']}` on
{common.machine(p)}.

One collection of {r['k']} checkpoints (seed {r['seed']}); one generator conditioned on
validation accuracy (`train.diffusion.condition=accuracy`, p_uncond {r['p_uncond']:g}),
trained once and sampled {r['n']} models per row ({r['sampler']} sampler, the same noise seed for every row){reference}.
Targets: the min, median and max of
the training checkpoints' validation accuracies and one validation step ({100 * r['val_step']:.2f} points, 1 / n_val)
beyond the max; *w* is the classifier-free guidance weight. Differences are in points with their 95% CI
(two-level bootstrap over the {r['n_test']} test examples and the models; `pdiff.stats`) and the verdict.
The CIs do not cover the chance of training the generator: every row comes from one generator seed.
*median max IoU*: of each model's max wrong-prediction IoU to the originals (originals: to the other ones).

{common.table(header, [table_row(row) for row in r["rows"]])}

{findings(achieved, r["guidance"], r["targets"])}"""


def render(results: dict) -> str:
    return "\n\n".join(render_task(task, r) for task, r in sorted(results["tasks"].items()))


def findings(achieved: dict, guidances: list[float], names: list[str]) -> str:
    """Plain sentences: does the achieved val accuracy follow the target, and does the highest target lift the
    generated mean above the originals and the ensemble beyond the CI?"""
    lines = []
    for w in guidances:
        asked = [achieved[w, name][0] for name in names]
        got = [achieved[w, name][1] for name in names]
        monotone = all(b >= a for a, b in zip(got, got[1:], strict=False))
        ratio = (got[-2] - got[0]) / (asked[-2] - asked[0]) if asked[-2] > asked[0] else float("nan")
        top = achieved[w, names[-1]][2]
        best = max(names, key=lambda name: achieved[w, name][1])
        lines.append(
            f"- w = {w:g}: the mean validation accuracy reached is {'monotone' if monotone else 'not monotone'} in "
            f"the target ({', '.join(f'{100 * g:.2f}' for g in got)} % for {', '.join(names)}); from min to max "
            f"it moves {100 * (got[-2] - got[0]):+.2f} points for {100 * (asked[-2] - asked[0]):+.2f} asked "
            f"({ratio:.2f} of the way); highest reached at {best}. At {names[-1]}, the generated mean test accuracy "
            f"vs the originals is {top['original'][METRICS[0]]['verdict']}, vs the ensemble "
            f"{top['ensemble'][METRICS[0]]['verdict']}.")
    return "\n".join(lines)


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
