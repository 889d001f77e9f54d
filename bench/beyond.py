"""Beyond one trajectory: does any generator beat averaging the checkpoints?

    python -m bench.beyond [--tasks mnist1d-mlp-full] [--runs 4] [--n 100] [--threads 1] [--data-dir DIR]
                           [--runs-dir runs/beyond] [--configs 'aligned runs/flow' ...] [key=value ...]

For each task, screens every combination of a collection ({one run, R runs aligned by weight matching, R runs
unaligned}: collect.runs, collect.align) and a generator family ({latent diffusion, flow}: train.family) at one
generator, each a run of its own (`python -m pdiff STAGE` per stage, so each stage's wall and CPU seconds and peak
memory are its own). Every run holds out the last K / R checkpoints (train.holdout_split=last): with R runs that
is the whole last run, a run the generator never saw; with one run the end of its trajectory. The flow works on
all the principal axes of its K - K / R training checkpoints (nothing of them lost). Each run is evaluated against
noise@0.05, mean_of_k and the Gaussian fit, on generate.n models per group.

For each run and each baseline, with 95% CIs (one generator: they speak for this generator's models):
- accuracy: generated minus baseline mean test accuracy (`stats.compare_accuracy`);
- similarity: generated minus baseline median max IoU of wrong predictions to the training checkpoints;
- held-out closeness: generated minus baseline median L2 distance (standardised units) to the nearest held-out
  checkpoint; and the generated models' against the training checkpoints' own (how near the held-out ones lie
  to them);
- the place on the accuracy-novelty plane, `stats.dominance_verdict` of the recorded accuracy and similarity
  CIs; and "beats" when, in addition, the generated models lie nearer to the held-out checkpoints than the
  baseline's models by their CI.
The configuration reported as the closest is chosen on validation data only: the one whose generated models
have the highest mean validation accuracy. Writes bench/beyond.json after each run and the "beyond" section.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pdiff import evaluate, stats
from pdiff.presets import load_config
from pdiff.report import points_with_ci
from pdiff.store import load_json

from . import common
from .common import table

NAME = "beyond"
BASELINES = ("noise@0.05", "mean_of_k", "gaussian")
COLLECTIONS = ("one run", "aligned runs", "unaligned runs")
FAMILIES = ("latent diffusion", "flow")
SCREEN_TASKS = ("mnist1d-mlp-full", "mnist1d-convnet-full")  # the whole-network tasks the screen is for


def overrides_of(task: str, collection: str, family: str, runs: int, n: int) -> list[str]:
    """The config overrides of one screened configuration (its own run folder: task=<task>-<collection>-<family>)."""
    k = load_config(task).collect.k
    heldout = k // runs
    folder = f"{task}-{collection.replace(' ', '-')}-{family.replace(' ', '-')}"
    chosen = [f"task={folder}", f"train.holdout={heldout}", "train.holdout_split=last", f"generate.n={n}",
              "evaluate.baselines=[noise,mean_of_k,gaussian]", "evaluate.noise_strengths=[0.05]"]
    if collection != "one run":
        chosen += ["collect.subset=[all]", f"collect.runs={runs}",
                   f"collect.align={'weights' if collection == 'aligned runs' else 'none'}"]
    if family == "flow":
        chosen += ["train.family=flow", f"train.autoencoder.latent_dim={k - heldout - 1}", "generate.sampler=euler"]
    return chosen


def run_name(overrides: list[str]) -> str:
    return next(o.removeprefix("task=") for o in overrides if o.startswith("task="))


def figures_of(task: str, runs_dir: Path, overrides: list[str]) -> dict:
    """What one finished run says of its generated models against each baseline (see the module docstring)."""
    run = common.open_run(runs_dir / run_name(overrides), overrides)
    results = evaluate.load(run.task, run.root)
    seed = run.config.seed
    summary = results["summary"]
    iou = {g: torch.tensor(v["values"]) for g, v in results["similarity"]["max_iou_to_original"].items()}
    held = results["generalization"]
    to_heldout = {g: torch.tensor(f["distance_to_heldout"]) for g, f in held.items()}
    correct, val = evaluate.load_correct(run.task, run.root, "generated")
    versus = {}
    for baseline in BASELINES:
        baseline_correct, baseline_val = evaluate.load_correct(run.task, run.root, baseline)
        accuracy = stats.compare_accuracy(correct, val, baseline_correct, baseline_val, "generated", baseline,
                                          seed=seed)[0]
        similarity = stats.compare_values(iou["generated"], iou[baseline], "generated", baseline, "median_max_iou",
                                          seed=seed)
        closeness = stats.compare_values(to_heldout["generated"], to_heldout[baseline], "generated", baseline,
                                         "median_l2_to_heldout", seed=seed)
        word = stats.dominance(accuracy, similarity, baseline)["verdict"]
        versus[baseline] = {"accuracy": accuracy.as_dict(), "similarity": similarity.as_dict(),
                            "closeness": closeness.as_dict(), "dominance": word,
                            "beats": word == stats.DOMINANCE_VERDICTS[0] and closeness.verdict == "lower"}
    training_to_heldout = torch.tensor(held["heldout"]["distance_to_training"])
    nearer = stats.compare_values(to_heldout["generated"], training_to_heldout, "generated", "original",
                                  "median_l2_to_heldout", seed=seed)
    versus_original = next(c for c in results["comparisons"] if (c["group"], c["versus"], c["metric"])
                           == ("generated", "original", "mean_test_accuracy"))
    collect_summary = load_json(run.stage_dir("collect") / "stage.json")
    return {"k": run.config.collect.k, "generated_val_mean": summary["generated"]["val_mean"],
            "generated_test_mean": summary["generated"]["mean"], "original_test_mean": summary["original"]["mean"],
            "versus_original": versus_original, "generated_max_iou_median": iou["generated"].median().item(),
            "original_max_iou_median": iou["original"].median().item(), "nearer_than_training": nearer.as_dict(),
            "distance_across_runs": collect_summary.get("distance_across_runs"), "versus": versus,
            "collapse": results["collapse"]}


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/beyond")
    parser.add_argument("--tasks", nargs="+", default=["mnist1d-mlp-full"])
    parser.add_argument("--runs", type=int, default=4, help="R, the independent runs of a multi-run collection")
    parser.add_argument("--n", type=int, default=100, help="generated models (and models per baseline) of a run")
    parser.add_argument("--configs", nargs="+", default=None,
                        help="only these 'collection/family' pairs, e.g. 'aligned runs/flow' (default: all six)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of every configuration run by this call "
                        "(e.g. smaller train steps); the section names them beside the configuration")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Every configuration of every task, bench/beyond.json written after each run (finished runs are read back)."""
    common.set_threads(args)
    recorded = common.load_results(NAME).get("tasks", {})
    command = (f"python -m bench.beyond --tasks {' '.join(args.tasks)} --runs {args.runs} --n {args.n}"
               + (f" --threads {args.threads}" if args.threads else ""))
    figures = common.results(command, tasks=recorded, runs=args.runs, n=args.n)
    wanted = args.configs or [f"{c}/{f}" for c in COLLECTIONS for f in FAMILIES]
    for task in args.tasks:
        entries = recorded.setdefault(task, {})
        for config in wanted:
            collection, family = config.split("/")
            overrides = [*overrides_of(task, collection, family, args.runs, args.n), *args.overrides,
                         *common.data_overrides(args)]
            stages = common.measure_stages(task, args.runs_dir / run_name(overrides), args.runs_dir, overrides,
                                           entries.get(config, {}).get("stages", {}))
            entry = {"collection": collection, "family": family, "overrides": overrides[:-1] if args.data_dir
                     else overrides, "changed": args.overrides, "stages": stages,
                     **figures_of(task, args.runs_dir, overrides)}
            recorded = common.load_results(NAME).get("tasks", {})  # as saved now: other configurations may run
            recorded.setdefault(task, {})[config] = entry  # in parallel, each in a process of its own
            figures = common.results(command, tasks=recorded, runs=args.runs, n=args.n)
            common.save_results(NAME, figures)
    return figures


# ---- the section ------------------------------------------------------------------------------------------
def points(c: dict, scale: float = 100) -> str:
    return points_with_ci(c, scale)


def label(config: str, entry: dict) -> str:
    """The configuration's name, with the overrides its call changed from the preset's generator."""
    changed = entry.get("changed") or []
    return f"{config} ({', '.join(changed)})" if changed else config


def plane_word(versus: dict) -> str:
    """Generated's place against one baseline on the accuracy-novelty plane, decided from the recorded CIs by
    `pdiff.stats.dominance_verdict` (so results kept before its words changed read in today's words)."""
    accuracy, similarity = versus["accuracy"], versus["similarity"]
    return stats.dominance_verdict((accuracy["ci_low"], accuracy["ci_high"]),
                                   (similarity["ci_low"], similarity["ci_high"]))


def beats(versus: dict) -> bool:
    """Generated dominates the baseline and lies nearer the held-out checkpoints than it does."""
    return plane_word(versus) == stats.DOMINANCE_VERDICTS[0] and versus["closeness"]["verdict"] == "lower"


def closest(entries: dict) -> str:
    """The configuration chosen on validation data: the highest mean validation accuracy of its generated models."""
    return max(entries, key=lambda config: entries[config]["generated_val_mean"])


def render_task(task: str, entries: dict, runs: int, n: int) -> str:
    rows, plane = [], []
    k = next(iter(entries.values()))["k"]
    for config, e in entries.items():
        stages = e["stages"]
        seconds = sum(s["wall"] for s in stages.values())
        rss = [s["rss"] for s in stages.values() if s.get("rss") is not None]
        moved = e["distance_across_runs"]
        rows.append([label(config, e), f"{100 * e['generated_val_mean']:.2f}", f"{100 * e['generated_test_mean']:.2f}",
                     f"{100 * e['original_test_mean']:.2f}", points(e["versus_original"]),
                     f"{e['generated_max_iou_median']:.3f} / {e['original_max_iou_median']:.3f}",
                     points(e["nearer_than_training"], 1),
                     "-" if moved is None else f"{moved['before']:.1f} -> {moved['after']:.1f}",
                     f"{seconds / 60:.1f}", f"{max(rss):.0f}" if rss else "not measured"])
        for baseline, v in e["versus"].items():
            plane.append([label(config, e), baseline, points(v["accuracy"]), points(v["similarity"], 1),
                          points(v["closeness"], 1),
                          plane_word(v), "yes" if beats(v) else "no"])
    missing = [f"{c}/{f}" for c in COLLECTIONS for f in FAMILIES if f"{c}/{f}" not in entries]
    best = closest(entries)
    winners = [config for config, e in entries.items() if all(beats(v) for v in e["versus"].values())]
    if winners:
        answer = (f"Yes, here: the generated models of {', '.join(winners)} dominate every baseline by their CIs "
                  "and lie nearer to the held-out checkpoints than the baselines' models.")
    else:
        lost = {b: v for b, v in entries[best]["versus"].items() if not beats(v)}
        answer = (f"No configuration's generated models beat every baseline here. The closest (chosen on "
                  f"validation accuracy) is {best}: generated against "
                  + "; ".join(f"{b}: {plane_word(v)}, accuracy {points(v['accuracy'])}"
                              for b, v in lost.items())
                  + ".")
    return "\n\n".join([
        f"### {task}",
        f"Collections of K = {k} checkpoints (R = {runs} runs of {k // runs} for the multi-run ones); the last "
        f"K / R held out; {n} models per group; one generator per configuration (the CIs speak for its models, "
        "not for the method).",
        table(["configuration", "generated val %", "generated test %", "originals test %",
               "generated - originals (points)", "median max IoU generated / originals",
               "generated - training: L2 to held-out", "L2 across runs before -> after alignment", "wall minutes",
               "peak MiB"], rows),
        table(["configuration", "baseline", "accuracy: generated - baseline (points)",
               "max IoU: generated - baseline", "L2 to held-out: generated - baseline", "plane", "beats it"], plane),
        f"**Does any generator beat averaging here?** {answer}",
        f"Not run on this task: {', '.join(missing)}." if missing else "Every configuration of the screen ran.",
    ])


def render(results: dict) -> str:
    p = results["provenance"]
    parts = [f"`{p['command']}` ({common.machine(p)})",
             "Sized for 2 shared CPU cores: one generator per configuration at the preset's generator sizes, one "
             "thread per process, the configurations run as separate processes. The script does not run the "
             "method-scope confirmation (3 or more generators), a tokens + transformer family or the interpolation "
             "baseline."]
    for task, entries in results["tasks"].items():
        parts.append(render_task(task, entries, results["runs"], results["n"]))
    left = [task for task in SCREEN_TASKS if task not in results["tasks"]]
    if left:
        parts.append(f"Not screened: {', '.join(left)}.")
    return "\n\n".join(parts)


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
