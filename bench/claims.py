"""Every claim of the paper and of its critique, decided on one task with 95% CIs.

    python -m bench.claims [--task cifar10-convnet3-cpu] [--data-dir DIR] [--runs-dir runs/claims]
                           [--studies noise k location | noise=none,both k=1,10,200 ...] [key=value ...]

Runs (finished runs are read back, not redone):
- the main run, `pdiff run TASK`: Table 1 with generator seed 0, the similarity study, the critique's plane;
- two more generators (train.seed=1, 2) on the same checkpoints: Table 1 averages three runs, as the paper;
- `pdiff ablate TASK --study k / location / noise`;
- a held-out run (train.holdout=K/5, 40 of 200): the generalization test.
Every run but the main one evaluates only 50 generated models (evaluate.baselines=[], generate.n=50): the
claims compare those with the originals or with the main run's; more would cost CPU time, not decide more.

Each claim is a difference with the paper's (or the critique's) number beside ours and a verdict:
- a claimed gain (loss) is `reproduced` when our CI lies above (below) 0, `refuted` when it excludes the
  paper's size of effect without showing the effect, and `not resolvable here` when it holds both 0 and the
  paper's number;
- a claimed match is `reproduced` when the CI lies within +-MATCH points, `refuted` when it lies outside;
- a claim on the accuracy-novelty plane follows `pdiff.stats.dominance`.
Writes bench/claims.json (one entry per task, each with its own provenance) and the "claims" section of
BENCHMARKS.md, one part per task.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pdiff import evaluate, stats
from pdiff.ablation import ablate, reuse, with_overrides
from pdiff.config import Config, load_config
from pdiff.pipeline import Run, run_pipeline, run_stages
from pdiff.report import points_with_ci

from . import common

NAME = "claims"
MATCH = 0.005  # a claimed match holds within +-0.5 points: half a point is a margin a user would not notice
HOLDOUT_EVERY = 5  # train.holdout = K / 5: 40 of 200 checkpoints, enough held out to see coverage
VARIANT = {"evaluate.baselines": [], "generate.n": 50}  # every run but the main one: what its claims need
VERDICTS = ("reproduced", "refuted", "not resolvable here")
log = logging.getLogger("claims")


@dataclass
class Claim:
    source: str  # "paper" or "critique"
    claim: str  # what is claimed, in words
    paper: str  # the claimed number, as written there
    ours: str  # our number with its 95% CI
    verdict: str  # one of VERDICTS
    note: str = ""


def decide_gain(c: dict, paper_difference: float) -> str:
    """A claimed difference `paper_difference` (fraction, either sign) against our comparison record `c`."""
    low, high = (c["ci_low"], c["ci_high"]) if paper_difference > 0 else (-c["ci_high"], -c["ci_low"])
    size = abs(paper_difference)
    if low > 0:
        return VERDICTS[0]
    return VERDICTS[1] if high < size else VERDICTS[2]


def decide_match(c: dict, margin: float = MATCH) -> str:
    if -margin <= c["ci_low"] and c["ci_high"] <= margin:
        return VERDICTS[0]
    return VERDICTS[1] if c["ci_low"] > margin or c["ci_high"] < -margin else VERDICTS[2]


def points(c: dict) -> str:
    return f"{points_with_ci(c)} pts"


# ---- the runs ---------------------------------------------------------------------------------------
def variant(main: Run, overrides: dict, folder: str) -> Run:
    """A run of the main config with `overrides`, reusing what it can of the main run's stages."""
    run = Run(with_overrides(main.config, {**VARIANT, **overrides}), main.root / "claims" / folder,
              progress=False)
    reuse(main, run)
    return run_stages(run)


def comparison(run: Run, group: str, versus_run: Run, versus: str, metric: str, label: str) -> dict:
    """One accuracy comparison between a group of one run and a group of another (same test set)."""
    correct, val = evaluate.load_correct(run.task, run.root, group)
    versus_correct, versus_val = evaluate.load_correct(versus_run.task, versus_run.root, versus)
    found = stats.compare_accuracy(correct, val, versus_correct, versus_val, label, versus, seed=run.config.seed)
    return next(c.as_dict() for c in found if c.metric == metric)


def recorded(run: Run, group: str, versus: str, metric: str) -> dict:
    """A comparison that the run's evaluate stage recorded in results.json."""
    results = evaluate.load(run.task, run.root)
    return next(c for c in results["comparisons"]
                if (c["group"], c["versus"], c["metric"]) == (group, versus, metric))


def iou_values(run: Run, group: str) -> torch.Tensor:
    return torch.tensor(evaluate.load(run.task, run.root)["similarity"]["max_iou_to_original"][group]["values"])


def study_runs(config: Config, study: str, values: list[str] | None, runs_dir: Path) -> dict[str, Run]:
    """label -> the finished run of each variant of `pdiff ablate TASK --study STUDY [VALUES]`."""
    report = ablate(config, study, values, runs_dir=runs_dir, progress=False, shared=VARIANT)
    rows = json.loads((report.parent / "ablation.json").read_text())["variants"]
    return {row["label"]: Run(with_overrides(config, {**VARIANT, **row["overrides"]}), Path(row["run_dir"]),
                              progress=False) for row in rows}


# ---- the claims ---------------------------------------------------------------------------------------
def table_one(main: Run, seeds: list[Run]) -> list[Claim]:
    """Table 1: p-diff's best and mean against the originals', and the ensemble's, for each generator seed."""
    claims = []
    for metric, words, paper, paper_difference in (
            ("best_val_chosen_test_accuracy", "p-diff's best model beats the best original (best: val-chosen)",
             "ConvNet-3 CIFAR-10: 77.5 vs 77.2", 0.003),
            ("mean_test_accuracy", "p-diff's mean beats the originals' mean",
             "ResNet-18 CIFAR-100: 77.24 vs 76.72", 0.0052)):
        for seed, run in enumerate([main, *seeds]):
            c = recorded(run, "generated", "original", metric) if run is main else comparison(
                run, "generated", main, "original", metric, "generated")
            claims.append(Claim("paper", f"{words}, generator seed {seed}", paper, points(c),
                                decide_gain(c, paper_difference)))
    c = recorded(main, "ensemble", "original", "mean_test_accuracy")
    claims.append(Claim("paper", "the weight average (ensemble) matches the originals' mean",
                        "77.3 vs 77.2 (best)", points(c), decide_match(c)))
    return claims


def table_one_rows(main: Run, seeds: list[Run]) -> list[list[str]]:
    """Table 1's numbers (test accuracy %): original, ensemble and each generator seed's best / mean / median."""
    summary = evaluate.load(main.task, main.root)["summary"]
    o = summary["original"]
    rows = [["original", *(f"{100 * o[k]:.2f}" for k in ("max", "best", "mean", "median"))],
            ["ensemble", *[f"{100 * summary['ensemble']['mean']:.2f}"] * 4]]
    for seed, run in enumerate([main, *seeds]):
        g = evaluate.load(run.task, run.root)["summary"]["generated"]
        rows.append([f"p-diff, generator seed {seed}", *(f"{100 * g[k]:.2f}" for k in ("max", "best", "mean",
                                                                                       "median"))])
    return rows


def k_study(runs: dict[str, Run]) -> list[Claim]:
    """Table 2(a): more checkpoints give better generated models (mean), and less similar ones."""
    paper_mean = {1: 70.7, 10: 71.2, 50: 71.3, 200: 72.4}
    main = max(runs.values(), key=lambda r: r.config.collect.k)
    k_main = main.config.collect.k
    claims = []
    for run in runs.values():
        k = run.config.collect.k
        if run is main:
            continue
        c = comparison(main, "generated", run, "generated", "mean_test_accuracy", f"k{k_main}")
        c["versus"] = f"k{k}"
        paper = f"K=200 vs K={k}: {paper_mean[200]} vs {paper_mean[k]}" if k in paper_mean else "-"
        claims.append(Claim("paper", f"K={k_main} checkpoints give a higher generated mean than K={k}", paper,
                            points(c), decide_gain(c, (paper_mean[200] - paper_mean[k]) / 100) if k in paper_mean
                            else VERDICTS[2]))
        iou = stats.compare_values(iou_values(main, "generated"), iou_values(run, "generated"), f"k{k_main}",
                                   f"k{k}", "median_max_iou", seed=main.config.seed).as_dict()
        claims.append(Claim("paper", f"K={k_main} generated models are less similar to their originals than K={k}'s",
                            "Fig. 7: max similarity falls as K grows", f"{points_with_ci(iou, 1)} IoU",
                            VERDICTS[0] if iou["ci_high"] < 0 else VERDICTS[1] if iou["ci_low"] > 0 else VERDICTS[2],
                            "K=1 copies its one checkpoint" if k == 1 else ""))
    return claims


def noise_study(runs: dict[str, Run]) -> list[Claim]:
    """Table 2(d): noise augmentation (input, latent, both) against none; paper means 65.8 / 66.7 / 72.1 / 72.4."""
    paper = {"none": 65.8, "input": 66.7, "latent": 72.1, "both": 72.4}
    claims = []
    for label in [v for v in ("none", "input", "latent") if v in runs]:
        c = comparison(runs["both"], "generated", runs[label], "generated", "mean_test_accuracy", "both")
        c["versus"] = label
        claims.append(Claim("paper", f"noise on input and latents gives a higher generated mean than {label}",
                            f"{paper['both']} vs {paper[label]}", points(c),
                            decide_gain(c, (paper["both"] - paper[label]) / 100)))
    return claims


def location_study(runs: dict[str, Run]) -> list[Claim]:
    """Table 2(c): every location of a BN pair gives generated models as good as their originals."""
    claims = []
    for label, run in runs.items():
        c = recorded(run, "generated", "original", "mean_test_accuracy")
        claims.append(Claim("paper", f"BN pair {label}: generated mean matches the originals'",
                            "Table 2(c): all locations work", points(c), decide_match(c)))
    return claims


def similarity_study(main: Run) -> list[Claim]:
    """Section 4: p-diff is better than noise-added and fine-tuned checkpoints on the accuracy-novelty plane,
    noise of 0.15 costs accuracy; the critique: it is no better than the mean of 16 or a Gaussian."""
    results = evaluate.load(main.task, main.root)
    dominance = {c["group"]: c["verdict"] for c in results["comparisons"] if c["metric"] == "dominance"}
    claims = []
    outcomes = {"generated dominates": VERDICTS[0], "is dominated": VERDICTS[1], "undecided": VERDICTS[2]}
    for group in [g for g in dominance if g.startswith(("noise", "finetune"))]:
        claims.append(Claim("paper", f"p-diff dominates {group} (accuracy not lower, max IoU lower)",
                            "Fig. 4: generated models differ more at equal accuracy", dominance[group],
                            outcomes[dominance[group]]))
    if "noise@0.15" in dominance:
        c = recorded(main, "noise@0.15", "original", "mean_test_accuracy")
        claims.append(Claim("paper", "noise of 0.15 on the originals costs accuracy", "-1.2 points (CIFAR-100)",
                            points(c), decide_gain(c, -0.012)))
    for group in [g for g in dominance if g.startswith(("mean_of", "gaussian"))]:
        verdict = dominance[group]
        mean = comparison(main, "generated", main, group, "mean_test_accuracy", "generated")
        if verdict == "generated dominates":
            outcome = VERDICTS[1]
        elif verdict == "is dominated" or decide_match(mean) == VERDICTS[0]:
            outcome = VERDICTS[0]
        else:
            outcome = VERDICTS[2]
        claims.append(Claim("critique", f"p-diff is no better than {group} on the accuracy-novelty plane",
                            "Zeng et al. 2025", f"{verdict}; mean accuracy generated - {group}: {points(mean)}",
                            outcome))
    return claims


def generalization(run: Run) -> list[Claim]:
    """The held-out test: do generated models sit as near unseen checkpoints as near the seen ones?"""
    figures = evaluate.load(run.task, run.root)["generalization"]
    ratio = {g: torch.tensor(f["distance_to_training"]) / torch.tensor(f["distance_to_heldout"])
             for g, f in figures.items()}
    c = stats.compare_values(ratio["generated"], ratio["heldout"], "generated", "heldout",
                             "median_memorization_ratio", seed=run.config.seed).as_dict()
    generated, heldout = figures["generated"], figures["heldout"]
    coverage = (f"coverage {generated['coverage']:.2f} [{generated['coverage_ci_low']:.2f}, "
                f"{generated['coverage_ci_high']:.2f}] vs held-out's own {heldout['coverage']:.2f}")
    verdict = VERDICTS[0] if c["ci_high"] < 0 else VERDICTS[1] if c["ci_low"] >= 0 else VERDICTS[2]
    return [Claim("critique", "generated models sit nearer the training checkpoints than unseen checkpoints do "
                  f"(memorization; train.holdout={run.config.train.holdout})", "Zeng et al. 2025: p-diff memorizes",
                  f"median ratio generated - held-out: {points_with_ci(c, 1)}", verdict, coverage)]


def command(args: argparse.Namespace) -> str:
    """This call as typed (so the command in BENCHMARKS.md reruns this table)."""
    data = f" --data-dir {args.data_dir}" if args.data_dir else ""
    return (f"python -m bench.claims --task {args.task}{data} --studies {' '.join(args.studies)}"
            + "".join(" " + o for o in args.overrides))


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/claims")
    parser.add_argument("--task", default="cifar10-convnet3-cpu")
    parser.add_argument("--studies", nargs="*", default=["holdout", "seeds", "noise", "k", "location"],
                        help="what to run after the main run, in order: holdout, seeds, and ablation studies as "
                             "STUDY or STUDY=V1,V2 (default: the paper's values)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides of the task (e.g. a tiny trial)")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Run (or read back) every run the claims need, decide them; the other tasks' earlier entries are kept."""
    common.set_threads(args)
    config = load_config(args.task, [*args.overrides, *common.data_overrides(args)])
    main_run = run_pipeline(config, args.runs_dir, progress=False)
    log.info("main run done")
    claims, seeds = similarity_study(main_run), []
    decide = {"k": k_study, "noise": noise_study, "location": location_study}
    for spec in args.studies:
        study, _, values = spec.partition("=")
        if study == "seeds":
            seeds = [variant(main_run, {"train.seed": seed}, f"seed{seed}") for seed in (1, 2)]
        elif study == "holdout":
            holdout = config.collect.k // HOLDOUT_EVERY
            claims += generalization(variant(main_run, {"train.holdout": holdout}, f"holdout{holdout}"))
        else:
            claims += decide[study](study_runs(config, study, values.split(",") if values else None, args.runs_dir))
        log.info("%s done", spec)
    claims = table_one(main_run, seeds) + claims
    entry = {"provenance": common.provenance(command(args), str(main_run.device)),
             "resolution": evaluate.load(main_run.task, main_run.root)["resolution"],
             "table_one": table_one_rows(main_run, seeds), "claims": [asdict(c) for c in claims]}
    tasks = {**common.load_results(NAME).get("tasks", {}), args.task: entry}
    return {"format_version": common.FORMAT_VERSION, "provenance": entry["provenance"], "tasks": tasks}


def render_task(task: str, r: dict) -> str:
    """One task's part of the section: Table 1's numbers, then every claim with its verdict."""
    rows = [[c["source"], c["claim"], c["paper"], c["ours"], c["verdict"], c["note"]] for c in r["claims"]]
    title = f"The paper's and the critique's claims on {task} (`python -m bench.claims`)"
    return f"""## {title}

`{r['provenance']['command']}` ({common.machine(r['provenance'])}).
CIFAR-10 numbers are on the CIFAR-10 (JPEG copy).
The test set resolves differences of about ±{100 * r['resolution']:.2f} points between two groups of originals'
mean accuracy. Differences are ours, in points with their 95% CI (two-level paired bootstrap, `pdiff.stats`).
Verdicts: a claimed gain or loss is *reproduced* when our CI excludes 0 in its direction, *refuted* when our CI
excludes the paper's size of effect without showing the effect, *not resolvable here* when it holds both; a
claimed match is reproduced within ±{100 * MATCH:.1f} points. The paper's numbers are from its own tasks
(ResNet-18 on CIFAR-100 for the ablations): they give the claim's direction and size, not a target for ours.

Table 1 (test accuracy %; *max* is the paper's best, a test-set maximum; *val-chosen* the test accuracy of
the model with the best validation accuracy; paper, ConvNet-3 on CIFAR-10: original 77.2, ensemble 77.3,
p-diff 77.5 best):

{common.table(["group", "max", "val-chosen", "mean", "median"], r["table_one"])}

{common.table(["source", "claim", "paper", "ours [95% CI]", "verdict", "note"], rows)}"""


def render(results: dict) -> str:
    return "\n\n".join(render_task(task, r) for task, r in sorted(results["tasks"].items()))


def glance(results: dict) -> list[list[str]]:
    """The README's rows (question, task, finding): how many of the paper's and the critique's claims were
    reproduced, refuted or not resolvable, per task."""
    rows = []
    for task, entry in results["tasks"].items():
        counts = Counter(c["verdict"] for c in entry["claims"])
        tally = ", ".join(f"{n} {verdict}" for verdict, n in counts.most_common())
        rows.append(["Do the paper's and the critique's claims hold?", task, f"{tally} (of {len(entry['claims'])})"])
    return rows


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
