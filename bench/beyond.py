"""Beyond one trajectory: does any generator beat averaging the checkpoints?

    python -m bench.beyond [--tasks mnist1d-mlp-full] [--runs 4] [--n 100] [--generators 1] [--threads 1]
                           [--data-dir DIR] [--runs-dir runs/beyond] [--configs 'aligned runs/flow' ...]
                           [--variant NAME key=value ...]

For each task, screens every combination of a collection ({one run, R runs aligned by weight matching, R runs
unaligned}: collect.runs, collect.align) and a generator family ({latent diffusion, flow}: train.family) at one
generator (the screen), each a run of its own (`python -m pdiff STAGE` per stage, so each stage's wall and CPU
seconds and peak memory are its own). Every run holds out the last K / R checkpoints (train.holdout_split=last):
with R runs that is the whole last run, a run the generator never saw; with one run the end of its trajectory. The
flow works on all the principal axes of its K - K / R training checkpoints (nothing of them lost), with a flat
velocity network where the task's own denoiser takes tokens (FLAT_NETWORKS). `--variant NAME key=value ...` runs
each configuration with those overrides as a variant of its own (run folder suffix -NAME, rows "config [NAME]"),
so that a change to the generator (other layers, say) is screened beside the configuration it changes. Each run is
evaluated against noise@0.05, mean_of_k, the Gaussian fit and interpolations between neighbouring checkpoints of
one run, on generate.n models per group. `--generators G` (G >= 3) confirms chosen configurations at method scope:
a run of its own (folder suffix -gG) whose G generators each draw generate.n / G of the models, every CI below then
holding the spread between trained generators (`pdiff.stats`, docs/statistics.md).

For each run and each baseline, with 95% CIs (one generator: they speak for this generator's models; several:
for the configuration as a method):
- accuracy: generated minus baseline mean test accuracy (`stats.compare_accuracy`);
- similarity: generated minus baseline median max IoU of wrong predictions to the training checkpoints;
- held-out closeness: generated minus baseline median L2 distance (standardised units) to the nearest held-out
  checkpoint; and the generated models' against the training checkpoints' own (how near the held-out ones lie
  to them);
- the place on the accuracy-novelty plane, `verdicts.dominance_verdict` of the recorded accuracy and similarity
  CIs; and "beats" when, in addition, the generated models lie nearer to the held-out checkpoints than the
  baseline's models by their CI.
The configuration reported as the closest is chosen on validation data only: the one whose generated models
have the highest mean validation accuracy among the screen's (one-generator) runs. Writes bench/beyond.json after
each run and the "beyond" section.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from pdiff import evaluate, stats, verdicts
from pdiff.denoisers import DENOISERS
from pdiff.presets import load_config
from pdiff.store import load_json
from pdiff.words import points_with_ci

from . import common
from .common import table

NAME = "beyond"
BASELINES = ("noise@0.05", "mean_of_k", "gaussian", "interpolation")
COLLECTIONS = ("one run", "aligned runs", "unaligned runs")
FAMILIES = ("latent diffusion", "flow")
VARIANT_NAME = re.compile(r"[A-Za-z0-9_-]+")
SCREEN_TASKS = ("mnist1d-mlp-full", "mnist1d-convnet-full")  # the whole-network tasks the screen is for
# The flow's velocity network where a task's generator has token networks (the flow moves flat vectors): the screen
# tasks' own flat denoiser. The flow trains no autoencoder and reads none of the autoencoder keys set here; they
# are those the recorded runs were made with (a run is read back under the config it was made with).
FLAT_NETWORKS = ["train.diffusion.arch=mlp", "train.diffusion.kwargs={width: 256, depth: 3}",
                 "train.diffusion.global_steps=0", "train.autoencoder.arch=mlp",
                 "train.autoencoder.kwargs={hidden: 256}"]


def overrides_of(task: str, collection: str, family: str, runs: int, n: int, generators: int = 1) -> list[str]:
    """The config overrides of one configuration (its own run folder: task=<task>-<collection>-<family>[-gG])."""
    config = load_config(task)
    k = config.collect.k
    heldout = k // runs
    folder = f"{task}-{collection.replace(' ', '-')}-{family.replace(' ', '-')}"
    chosen = [f"task={folder}" + (f"-g{generators}" if generators > 1 else ""), f"train.holdout={heldout}",
              "train.holdout_split=last", f"generate.n={n}",
              "evaluate.baselines=[noise,mean_of_k,gaussian,interpolation]", "evaluate.noise_strengths=[0.05]"]
    if generators > 1:
        chosen.append(f"train.generators={generators}")
    if collection != "one run":
        chosen += ["collect.subset=[all]", f"collect.runs={runs}",
                   f"collect.align={'weights' if collection == 'aligned runs' else 'none'}"]
    if family == "flow":
        chosen += ["train.family=flow", f"train.autoencoder.latent_dim={k - heldout - 1}", "generate.sampler=euler"]
        if DENOISERS[config.train.diffusion.arch].latent != "flat":
            chosen += FLAT_NETWORKS
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
    labels = torch.tensor([m.get("generator", 0) for m in results["models"] if m["group"] == "generated"])
    versus = {}
    for baseline in [b for b in BASELINES if b in summary]:
        baseline_correct, baseline_val = evaluate.load_correct(run.task, run.root, baseline)
        accuracy = stats.compare_accuracy(correct, val, baseline_correct, baseline_val, "generated", baseline,
                                          seed=seed, generators=labels)[0]
        similarity = stats.compare_values(iou["generated"], iou[baseline], "generated", baseline, "median_max_iou",
                                          seed=seed, generators=labels)
        closeness = stats.compare_values(to_heldout["generated"], to_heldout[baseline], "generated", baseline,
                                         "median_l2_to_heldout", seed=seed, generators=labels)
        record = {"accuracy": accuracy.as_dict(), "similarity": similarity.as_dict(), "closeness": closeness.as_dict()}
        versus[baseline] = {**record, "dominance": plane_word(record), "beats": beats(record)}
    training_to_heldout = torch.tensor(held["heldout"]["distance_to_training"])
    nearer = stats.compare_values(to_heldout["generated"], training_to_heldout, "generated", "original",
                                  "median_l2_to_heldout", seed=seed, generators=labels)
    versus_original = next(c for c in results["comparisons"] if (c["group"], c["versus"], c["metric"])
                           == ("generated", "original", "mean_test_accuracy"))
    collect_summary = load_json(run.stage_dir("collect") / "stage.json")
    return {"k": run.config.collect.k, "generators": len(labels.unique()),
            "generated_val_mean": summary["generated"]["val_mean"],
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
    parser.add_argument("--generators", type=int, default=1,
                        help="trained generators per configuration (1: the screen; 3 or more: method scope)")
    parser.add_argument("--configs", nargs="+", default=None,
                        help="only these 'collection/family' pairs, e.g. 'aligned runs/flow' (default: all six)")
    parser.add_argument("--variant", default=None, help="a short name for this call's overrides: each configuration "
                        "is then a variant of its own (folder suffix -NAME; the section lists what NAME changes)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of every configuration run by this call "
                        "(e.g. other layers); they need a --variant name")
    return parser


def key_of(config: str, generators: int, variant: str | None) -> str:
    """An entry's name in bench/beyond.json: 'collection/family', its variant in brackets, its generators if > 1."""
    return config + (f" [{variant}]" if variant else "") + (f", {generators} generators" if generators > 1 else "")


def as_variant(overrides: list[str], variant: str | None) -> list[str]:
    """The configuration's overrides with its run folder named for the variant (task=<folder>-<variant>)."""
    if variant is None:
        return overrides
    return [f"{o}-{variant}" if o.startswith("task=") else o for o in overrides]


def measure(args: argparse.Namespace) -> dict:
    """Every configuration of every task, bench/beyond.json written after each run (finished runs are read back)."""
    common.set_threads(args)
    if args.overrides and not args.variant or args.variant and not VARIANT_NAME.fullmatch(args.variant):
        raise SystemExit("name the overrides with --variant NAME (letters, digits, '-', '_'): the variant keeps its "
                         "own run folders and rows, apart from the configuration's own")
    recorded = common.load_results(NAME).get("tasks", {})
    command = " ".join([f"python -m bench.beyond --tasks {' '.join(args.tasks)} --runs {args.runs} --n {args.n}",
                        *([f"--generators {args.generators}"] if args.generators > 1 else []),
                        *([f"--configs {' '.join(repr(c) for c in args.configs)}"] if args.configs else []),
                        *([f"--threads {args.threads}"] if args.threads else []),
                        *([f"--variant {args.variant}"] if args.variant else []), *args.overrides])

    def figures_now(tasks: dict) -> dict:  # the file's command: the screen of every task it holds
        screen = f"python -m bench.beyond --tasks {' '.join(tasks)} --runs {args.runs} --n {args.n}"
        return common.results(screen + (f" --threads {args.threads}" if args.threads else ""), tasks=tasks,
                              runs=args.runs, n=args.n)

    figures = figures_now(recorded)
    wanted = args.configs or [f"{c}/{f}" for c in COLLECTIONS for f in FAMILIES]
    for task in args.tasks:
        entries = recorded.setdefault(task, {})
        for config in wanted:
            collection, family = config.split("/")
            overrides = [*as_variant(overrides_of(task, collection, family, args.runs, args.n, args.generators),
                                     args.variant), *args.overrides, *common.data_overrides(args)]
            key = key_of(config, args.generators, args.variant)
            stages = common.measure_stages(task, args.runs_dir / run_name(overrides), args.runs_dir, overrides,
                                           entries.get(key, {}).get("stages", {}))
            entry = {"collection": collection, "family": family, "overrides": overrides[:-1] if args.data_dir
                     else overrides, "variant": args.variant, "changed": args.overrides, "command": command,
                     "stages": stages, **figures_of(task, args.runs_dir, overrides)}
            recorded = common.load_results(NAME).get("tasks", {})  # as saved now: other configurations may run
            recorded.setdefault(task, {})[key] = entry  # in parallel, each in a process of its own
            figures = figures_now(recorded)
            common.save_results(NAME, figures)
    return figures


# ---- the section ------------------------------------------------------------------------------------------
def points(c: dict, scale: float = 100) -> str:
    return points_with_ci(c, scale)


def plane_word(versus: dict) -> str:
    """Generated's place against one baseline on the accuracy-novelty plane, decided from the recorded CIs by
    `pdiff.verdicts.dominance_verdict` (so results kept before its words changed read in today's words)."""
    accuracy, similarity = versus["accuracy"], versus["similarity"]
    return verdicts.dominance_verdict((accuracy["ci_low"], accuracy["ci_high"]),
                                   (similarity["ci_low"], similarity["ci_high"]))


def beats(versus: dict) -> bool:
    """Generated dominates the baseline and lies nearer the held-out checkpoints than it does."""
    return plane_word(versus) == verdicts.DOMINANCE_VERDICTS[0] and versus["closeness"]["verdict"] == "lower"


def screened(entries: dict) -> list[str]:
    """The task's one-generator runs: its screen (a method-scope run confirms a choice, it does not make one)."""
    return [config for config, e in entries.items() if e.get("generators", 1) == 1]


def confirmed(entries: dict) -> list[dict]:
    """The task's method-scope runs (several trained generators): what the README speaks for."""
    return [e for e in entries.values() if e.get("generators", 1) > 1]


def closest(entries: dict) -> str:
    """The configuration chosen on validation data: the highest mean validation accuracy of its generated models,
    among the task's screen; on a task with none (its configurations chosen on the screen tasks and confirmed
    there), among its method-scope runs."""
    return max(screened(entries) or entries, key=lambda config: entries[config]["generated_val_mean"])


def configuration(key: str) -> str:
    """An entry's configuration, without the generators its key may name (the scope says them)."""
    return key.rsplit(", ", 1)[0] if key.endswith(" generators") else key


def chosen_among(entries: dict) -> str:
    return ("among the screen's" if screened(entries) else
            f"among those confirmed here, chosen on the screens of {' and '.join(SCREEN_TASKS)}")


def reaches_target(entry: dict) -> bool:
    """The target: generated dominates every baseline on the accuracy-novelty plane by their CIs and lies nearer
    to the held-out checkpoints (of an unseen run, with several runs) than the training checkpoints do."""
    return (all(plane_word(v) == verdicts.DOMINANCE_VERDICTS[0] for v in entry["versus"].values())
            and entry["nearer_than_training"]["verdict"] == "lower")


def place(baseline: str, versus: dict) -> str:
    """Generated's place against one baseline, in the words of `pdiff.words.dominance_words`."""
    word = plane_word(versus)
    return f"generated vs {baseline}: {word}" if word == verdicts.DOMINANCE_VERDICTS[-1] else f"{word} {baseline}"


def widest(entries: dict, config: str) -> dict:
    """The entry of `config` with the most generators: its method-scope confirmation where one ran."""
    runs = [e for name, e in entries.items() if name == config or name.startswith(f"{config}, ")]
    return max(runs, key=lambda e: e.get("generators", 1))


def scope(entry: dict) -> str:
    generators = entry.get("generators", 1)
    return "this generator" if generators == 1 else f"method, {generators} generators"


def networks(task: str) -> str:
    """Which networks each family trains on `task`: the preset's for latent diffusion, a velocity network for flow."""
    preset = load_config(task).train
    flow = load_config(task, overrides_of(task, "one run", "flow", runs=4, n=1)).train.diffusion
    sizes = ", ".join(f"{key} {value}" for key, value in flow.kwargs.items())
    return (f"latent diffusion: the preset's {preset.autoencoder.arch} autoencoder and {preset.diffusion.arch} "
            f"denoiser; flow: the velocity network {flow.arch} ({sizes}) on the principal-axis coordinates")


def render_task(task: str, entries: dict, runs: int, n: int) -> str:
    rows, plane = [], []
    k = next(iter(entries.values()))["k"]
    for config, e in entries.items():
        stages = e["stages"]
        seconds = sum(s["wall"] for s in stages.values())
        rss = [s["rss"] for s in stages.values() if s.get("rss") is not None]
        moved = e["distance_across_runs"]
        rows.append([config, scope(e), f"{100 * e['generated_val_mean']:.2f}",
                     f"{100 * e['generated_test_mean']:.2f}", f"{100 * e['original_test_mean']:.2f}",
                     points(e["versus_original"]),
                     f"{e['generated_max_iou_median']:.3f} / {e['original_max_iou_median']:.3f}",
                     points(e["nearer_than_training"], 1),
                     "-" if moved is None else f"{moved['before']:.1f} -> {moved['after']:.1f}",
                     f"{seconds / 60:.1f}", f"{max(rss):.0f}" if rss else "not measured"])
        for baseline, v in e["versus"].items():
            plane.append([config, scope(e), baseline, points(v["accuracy"]), points(v["similarity"], 1),
                          points(v["closeness"], 1),
                          plane_word(v), "yes" if beats(v) else "no"])
    missing = [f"{c}/{f}" for c in COLLECTIONS for f in FAMILIES if f"{c}/{f}" not in entries]
    best = closest(entries)
    winners = [f"{config} ({scope(e)})" for config, e in entries.items() if reaches_target(e)]
    if winners:
        answer = (f"Yes, here: the generated models of {', '.join(winners)} dominate every baseline by their CIs "
                  "and lie nearer to the held-out checkpoints than the training checkpoints do.")
    else:
        shown = widest(entries, best)
        answer = (f"No configuration's generated models dominate every baseline and lie nearer to the held-out "
                  f"checkpoints than the training ones. The closest (chosen on validation accuracy "
                  f"{chosen_among(entries)}) is {configuration(best)}; {scope(shown)}: "
                  f"held-out L2, generated - training {points(shown['nearer_than_training'], 1)}; "
                  + "; ".join(f"{place(b, v)} (accuracy {points(v['accuracy'])} points)"
                              for b, v in shown["versus"].items())
                  + ".")
    variants = {e["variant"]: e["changed"] for e in entries.values() if e.get("variant")}
    commands = dict.fromkeys(e["command"] for e in confirmed(entries) if e.get("command"))
    if not screened(entries):
        done = "Method-scope runs only here: the configurations the screens chose, confirmed on another task."
    elif task not in SCREEN_TASKS:
        done = "One run only here: R runs need the whole network as the collected subset."
    else:
        done = f"Not run on this task: {', '.join(missing)}." if missing else "Every configuration of the screen ran."
    return "\n\n".join([
        f"#### {task}",
        f"Collections of K = {k} checkpoints (R = {runs} runs of {k // runs} for the multi-run ones); the last "
        f"K / R held out; {n} models per group; {networks(task)}. The scope column says what the CIs speak for: "
        "one trained generator's models (the screen), or the configuration as a method (several generators).",
        table(["configuration", "scope", "generated val %", "generated test %", "originals test %",
               "generated - originals (points)", "median max IoU generated / originals",
               "generated - training: L2 to held-out", "L2 across runs before -> after alignment", "wall minutes",
               "peak MiB"], rows),
        table(["configuration", "scope", "baseline", "accuracy: generated - baseline (points)",
               "max IoU: generated - baseline", "L2 to held-out: generated - baseline", "plane", "beats it"], plane),
        *[f"Variant [{name}]: the configuration with `{' '.join(changed)}`." for name, changed in variants.items()],
        *[f"Method-scope rows: `{command}`." for command in commands],
        f"**Does any generator beat averaging here?** {answer}",
        done,
    ])


def glance(results: dict) -> list[list[str]]:
    """The README's rows (question, task, finding): per task with a method-scope run (the README speaks for methods;
    a task screened at one generator only keeps its answer, so labelled, in BENCHMARKS), whether a configuration
    reached the target, else the closest one (chosen on validation) and its places against the baselines, with the
    widest scope run."""
    rows = []
    for task, entries in results["tasks"].items():
        if not confirmed(entries):
            continue
        winners = [f"{config} ({scope(e)})" for config, e in entries.items() if reaches_target(e)]
        best = closest(entries)
        shown = widest(entries, best)
        places = "; ".join(place(b, v) for b, v in shown["versus"].items())
        finding = (f"yes: {', '.join(winners)}" if winners else
                   f"no; closest (chosen on validation): {configuration(best)}, {scope(shown)}: {places}")
        screen = screened(entries)
        count = len(screen) or len(entries)
        runs = f"{count} configuration{'s' * (count != 1)} " + ("screened" if screen else "confirmed at method scope")
        rows.append(["Does any generator beat averaging the checkpoints?", f"{task}, {runs}", finding])
    return rows


def headline(results: dict) -> str:
    """The README's sentence on the study, from its method-scope runs alone (the README speaks for methods)."""
    by_task = [confirmed(entries) for entries in results["tasks"].values()]
    runs = [e for entries in by_task for e in entries]
    dominating = sum(plane_word(e["versus"]["mean_of_k"]) == verdicts.DOMINANCE_VERDICTS[0] for e in runs)
    nearer = sum(e["nearer_than_training"]["verdict"] == "lower" for e in runs)
    tasks = sum(bool(entries) for entries in by_task)
    return (f"Beyond the critique, pdiff's study of generators (latent diffusion and flow matching; one run, or "
            f"independent runs aligned or not) ran {len(runs)} configurations at method scope "
            f"({min(e['generators'] for e in runs)} or more trained generators each) on {tasks} tasks: "
            f"{of_them(dominating)} dominate the checkpoints' mean on the accuracy-novelty plane, and "
            f"{of_them(nearer)} lie nearer to held-out checkpoints than the training checkpoints do.")


def of_them(count: int) -> str:
    return "none of them" if count == 0 else f"{count} of them"


def render(results: dict) -> str:
    p = results["provenance"]
    parts = ["## Beyond one trajectory: independent runs, alignment and flow matching (`python -m bench.beyond`)",
             f"`{p['command']}` ({common.hardware(p)}, 1-minute load average {p['load_at_start']:.1f} at the start; "
             "each stage is a process of its own, timed by the wall clock)",
             "Sized for 2 shared CPU cores: the preset's generator sizes, the configurations run as separate "
             "processes of one thread each (a method-scope row's command gives its own thread count); the screen at "
             "one generator each, its choice confirmed with `--generators 3`; wall minutes include the collection "
             "(its stage.json's seconds where another command made it, which leaves its memory unmeasured). "
             "*beats it*: generated dominates the baseline and lies nearer to the held-out checkpoints than the "
             "baseline's models. Latent diffusion is each task's preset generator (tokens + "
             "transformer where the preset has them, as D calls for it); each task says which networks ran."]
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
