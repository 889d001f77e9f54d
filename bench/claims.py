"""Every claim of the paper and of its critique, decided on one task by one rule (`pdiff.verdicts.decide_claim`).

    python -m bench.claims [--task cifar10-convnet3-cpu] [--data-dir DIR] [--runs-dir runs/claims] [--threads N]
                           [key=value ...] [--studies holdout k location noise | k=1,10,200 ...]

Runs (finished runs are read back, not redone, so an interrupted call resumes):
- the main run, `pdiff run TASK train.generators=3`: Table 1 at method scope (the generated models of three
  trained generators, their spread in every mean-accuracy CI), the accuracy-novelty plane against every baseline;
- `holdout`: two held-out runs (train.holdout=K/5 with train.holdout_split=last, the end of the trajectory, and
  =run, checkpoints of an independent collection), each evaluating the generated models beside mean_of_k, a
  Gaussian fit and interpolations of neighbouring checkpoints in groups of equal size: the memorization test;
- `pdiff ablate TASK --study k / location / noise`, one trained generator per variant (labelled `generators: 1`).
Every run but the main one draws 50 generated models: the claims compare those; more costs CPU time.

Each claim is one record of numbers: `claim`, `source`, `kind` (effect | equivalence | dominance | memorization),
`metric`, `claimed` (the signed size claimed, effect) or `margin` (equivalence), our `difference` with `ci_low` and
`ci_high`, the `verdict` (reproduced | refuted | not resolvable), `generators` (the trained generators whose models
the CI covers; null where no generated model is compared), and `claimed_from` where the size comes from another
task. A dominance record holds both component comparisons; a memorization record each baseline's figures.
Writes bench/claims.json (one entry per task) and the "claims" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path

import torch

from pdiff import evaluate, stats, verdicts
from pdiff.ablation import ablate, reuse, with_overrides
from pdiff.config import Config
from pdiff.pipeline import Run, run_pipeline, run_stages
from pdiff.presets import load_config
from pdiff.words import dominance_words, points_with_ci

from . import common

NAME = "claims"
GENERATORS = 3  # trained generators of the main run: Table 1's claims speak for the method
HOLDOUT_EVERY = 5  # train.holdout = K / 5: 40 of 200 checkpoints, enough held out to see coverage
HOLDOUT_SPLITS = ("last", "run")
MEMORIZATION_BASELINES = ("mean_of_k", "gaussian", "interpolation")
VARIANT = {"evaluate.baselines": [], "generate.n": 50, "train.generators": 1}  # every run but the main one
# A qualitative "less similar" claim is decided as an effect of this size: a hundredth of the IoU scale, the
# smallest shift of a median max IoU that the accuracy-novelty plots of the paper and the critique could show.
SIMILARITY_EFFECT = 0.01
PAPER_TASK = "ResNet-18 on CIFAR-100"  # where the paper's Table 1 means and Table 2 ablations come from
log = logging.getLogger("claims")


# ---- records ------------------------------------------------------------------------------------------
def numbers(c: dict) -> dict:
    """The figures of a comparison record that a claim keeps: metric, difference, CI and scope."""
    return {"metric": c["metric"], "difference": c["difference"], "ci_low": c["ci_low"], "ci_high": c["ci_high"],
            "scope": c.get("scope", stats.SCOPES[0])}


def effect(source: str, claim: str, c: dict, claimed: float, generators: int | None,
           claimed_from: str | None = None) -> dict:
    """An effect claim of signed size `claimed` (in the comparison's units) decided on comparison `c`."""
    return {"claim": claim, "source": source, "kind": "effect", **numbers(c), "claimed": claimed,
            "verdict": verdicts.decide_claim(c["ci_low"], c["ci_high"], claimed=claimed), "generators": generators,
            **({"claimed_from": claimed_from} if claimed_from else {})}


def equivalence(source: str, claim: str, c: dict, generators: int | None,
                margin: float = verdicts.ACCURACY_MARGIN) -> dict:
    return {"claim": claim, "source": source, "kind": "equivalence", **numbers(c), "margin": margin,
            "verdict": verdicts.decide_claim(c["ci_low"], c["ci_high"], margin=margin), "generators": generators}


def placed(source: str, claim: str, d: dict, claimed: str, generators: int) -> dict:
    """A claim that generated stands `claimed` (one of verdicts.DOMINANCE_VERDICTS) against the baseline of the
    dominance record `d`: reproduced when it does, not resolvable when the plane leaves it "not resolved", refuted
    when another place is resolved (the mirror, or a trade-off, answers the claim no)."""
    if "margin" not in d:
        raise SystemExit(f"the dominance record of {d['group']} was decided by an earlier rule: rerun "
                         "`pdiff evaluate --force` on the main run")
    reproduced, refuted, unresolvable = verdicts.CLAIM_VERDICTS
    outcome = (reproduced if d["verdict"] == claimed else
               unresolvable if d["verdict"] == verdicts.DOMINANCE_VERDICTS[-1] else refuted)
    return {"claim": claim, "source": source, "kind": "dominance", "metric": "dominance", "difference": None,
            "ci_low": None, "ci_high": None, "scope": d["scope"], "baseline": d["group"], "claimed": claimed,
            "placed": d["verdict"], "margin": d["margin"], "accuracy": numbers(d["accuracy"]),
            "similarity": numbers(d["similarity"]), "verdict": outcome, "generators": generators}


# ---- the runs ---------------------------------------------------------------------------------------
def variant(main: Run, overrides: dict, folder: str) -> Run:
    """A run of the main config with VARIANT and `overrides`, reusing what it can of the main run's stages."""
    run = Run(with_overrides(main.config, {**VARIANT, **overrides}), main.root / "claims" / folder, progress=False)
    reuse(main, run)
    return run_stages(run)


def comparison(run: Run, group: str, versus_run: Run, versus: str, metric: str) -> dict:
    """One accuracy comparison between a group of one run and a group of another (same test set, one generator)."""
    correct, val = evaluate.load_correct(run.task, run.root, group)
    versus_correct, versus_val = evaluate.load_correct(versus_run.task, versus_run.root, versus)
    found = stats.compare_accuracy(correct, val, versus_correct, versus_val, group, versus, seed=run.config.seed)
    return next(c.as_dict() for c in found if c.metric == metric)


def recorded(run: Run, group: str, versus: str, metric: str) -> dict:
    """A comparison that the run's evaluate stage recorded in results.json."""
    return next(c for c in evaluate.load(run.task, run.root)["comparisons"]
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
def table_one(main: Run) -> list[dict]:
    """Table 1 at method scope: p-diff's val-chosen best and mean against the originals', the ensemble's match."""
    best = recorded(main, "generated", "original", "best_val_chosen_test_accuracy")
    mean = recorded(main, "generated", "original", "mean_test_accuracy")
    return [effect("paper", "p-diff's best model beats the best original (best: val-chosen; no calibrated CI "
                   "exists for a maximum, so the claim cannot be resolved)", best, 0.003, GENERATORS),
            effect("paper", "p-diff's mean beats the originals' mean", mean, 0.0052, GENERATORS,
                   f"{PAPER_TASK}, Table 1: 77.24 vs 76.72"),
            equivalence("paper", "the weight average (ensemble) matches the originals' mean",
                        recorded(main, "ensemble", "original", "mean_test_accuracy"), None)]


def table_one_rows(main: Run) -> list[list[str]]:
    """Table 1's numbers (test accuracy %): original, ensemble, p-diff (every generator) and each generator."""
    results = evaluate.load(main.task, main.root)
    groups = {"original": [m for m in results["models"] if m["group"] == "original"],
              "ensemble": [m for m in results["models"] if m["group"] == "ensemble"],
              f"p-diff, {GENERATORS} generators": [m for m in results["models"] if m["group"] == "generated"]}
    for seed in range(GENERATORS):
        groups[f"p-diff, generator {seed}"] = [m for m in results["models"] if m["group"] == "generated"
                                               and m.get("generator", 0) == seed]
    rows = []
    for name, models in groups.items():
        test = torch.tensor([m["test_accuracy"] for m in models])
        best = models[int(torch.tensor([m["val_accuracy"] for m in models]).argmax())]["test_accuracy"]
        rows.append([name, *(f"{100 * v:.2f}" for v in (test.max().item(), best, test.mean().item(),
                                                        test.median().item()))])
    return rows


def similarity_study(main: Run) -> list[dict]:
    """Section 4: p-diff dominates noise-added and fine-tuned checkpoints on the accuracy-novelty plane, and noise
    of 0.15 costs accuracy; the critique: the mean of 16 checkpoints and a Gaussian dominate p-diff."""
    dominance = {c["group"]: c for c in evaluate.load(main.task, main.root)["comparisons"]
                 if c["metric"] == "dominance"}
    dominates, dominated = verdicts.DOMINANCE_VERDICTS[:2]
    claims = [placed("paper", f"p-diff's models are more novel than {group} at equal accuracy (Fig. 4)", d,
                     dominates, GENERATORS)
              for group, d in dominance.items() if group.startswith(("noise", "finetune"))]
    if "noise@0.15" in dominance:
        claims.append(effect("paper", "noise of 0.15 on the originals costs accuracy",
                             recorded(main, "noise@0.15", "original", "mean_test_accuracy"), -0.012, None,
                             f"{PAPER_TASK}, Section 4: -1.2 points"))
    claims += [placed("critique", f"p-diff is no better than {group} on the accuracy-novelty plane", d, dominated,
                      GENERATORS) for group, d in dominance.items() if group.startswith(("mean_of", "gaussian"))]
    return claims


def memorization(test: dict, split: str, holdout: int, generators: int) -> dict:
    """The critique's "replicas or, at best, simple interpolations": the generated models against each baseline
    on the held-out test, at equal accuracy. Generated beats a baseline when its mean test accuracy is non-inferior
    (margin ACCURACY_MARGIN) and its memorization ratio higher (nearer the unseen checkpoints, relative to the
    seen ones), by `verdicts.dominance_verdict` with the ratio's CI turned so that higher is better. The claim is
    refuted when generated beats every baseline, reproduced when a baseline beats generated, else not resolvable.
    `test`: results.json["memorization"] of a run with `holdout` checkpoints held out by `split`."""
    baselines, beaten, beats = {}, [], []
    for name in MEMORIZATION_BASELINES:
        figures = test["baselines"][name]
        accuracy, ratio = (figures["comparisons"][m] for m in ("mean_test_accuracy", "median_memorization_ratio"))
        place = verdicts.dominance_verdict((accuracy["ci_low"], accuracy["ci_high"]), (-ratio["ci_high"],
                                                                                     -ratio["ci_low"]))
        beaten.append(place == verdicts.DOMINANCE_VERDICTS[0])
        beats.append(place == verdicts.DOMINANCE_VERDICTS[1])
        baselines[name] = {"accuracy": numbers(accuracy), "closeness": numbers(ratio),
                           "generated_beats_it": beaten[-1], "it_beats_generated": beats[-1],
                           **{k: v for k, v in figures.items() if k != "comparisons"}}
    verdict = (verdicts.CLAIM_VERDICTS[1] if all(beaten) else verdicts.CLAIM_VERDICTS[0] if any(beats)
               else verdicts.CLAIM_VERDICTS[2])
    return {"claim": f"generated models are replicas or, at best, interpolations of the checkpoints (held out: "
                     f"train.holdout={holdout}, holdout_split={split})", "source": "critique",
            "kind": "memorization", "metric": "median_memorization_ratio", "difference": None, "ci_low": None,
            "ci_high": None, "margin": verdicts.ACCURACY_MARGIN, "split": split, "generated": test["generated"],
            "reference": test["reference"], "baselines": baselines, "verdict": verdict,
            "generators": generators}


def k_study(runs: dict[str, Run]) -> list[dict]:
    """Table 2(a): more checkpoints give better generated models (mean), and less similar ones (Fig. 7)."""
    paper_mean = {1: 70.7, 10: 71.2, 50: 71.3, 200: 72.4}
    largest = max(runs.values(), key=lambda r: r.config.collect.k)
    k_max = largest.config.collect.k
    claims = []
    for run in runs.values():
        k = run.config.collect.k
        if run is largest:
            continue
        if k in paper_mean and k_max in paper_mean:
            c = comparison(largest, "generated", run, "generated", "mean_test_accuracy")
            claims.append(effect("paper", f"K={k_max} checkpoints give a higher generated mean than K={k}", c,
                                 (paper_mean[k_max] - paper_mean[k]) / 100, 1,
                                 f"{PAPER_TASK}, Table 2(a): {paper_mean[k_max]} vs {paper_mean[k]}"))
        iou = stats.compare_values(iou_values(largest, "generated"), iou_values(run, "generated"), f"k{k_max}",
                                   f"k{k}", "median_max_iou", seed=largest.config.seed).as_dict()
        claims.append(effect("paper", f"K={k_max} generated models are less similar to their originals than K={k}'s "
                             f"(Fig. 7; smallest effect that matters: {SIMILARITY_EFFECT} IoU)", iou,
                             -SIMILARITY_EFFECT, 1))
    return claims


def noise_study(runs: dict[str, Run]) -> list[dict]:
    """Table 2(d): noise augmentation on input and latents against none, input only, latents only."""
    paper = {"none": 65.8, "input": 66.7, "latent": 72.1, "both": 72.4}
    return [effect("paper", f"noise on input and latents gives a higher generated mean than {label}",
                   comparison(runs["both"], "generated", runs[label], "generated", "mean_test_accuracy"),
                   (paper["both"] - paper[label]) / 100, 1,
                   f"{PAPER_TASK}, Table 2(d): {paper['both']} vs {paper[label]}")
            for label in ("none", "input", "latent") if label in runs and "both" in runs]


def location_study(runs: dict[str, Run]) -> list[dict]:
    """Table 2(c): every location of a BN pair gives generated models as good as their originals."""
    return [equivalence("paper", f"BN pair {label}: the generated mean matches the originals'",
                        recorded(run, "generated", "original", "mean_test_accuracy"), 1)
            for label, run in runs.items()]


def command(args: argparse.Namespace) -> str:
    """This call as typed (so the command in BENCHMARKS.md reruns this table)."""
    data = f" --data-dir {args.data_dir}" if args.data_dir else ""
    overrides = "".join(" " + o for o in args.overrides)  # before --studies, which takes every word after it
    return f"python -m bench.claims --task {args.task}{data}{overrides} --studies {' '.join(args.studies)}"


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/claims")
    parser.add_argument("--task", default="cifar10-convnet3-cpu")
    parser.add_argument("--studies", nargs="*", default=["holdout", "k", "noise", "location"],
                        help="what to run after the main run, in order: holdout, and ablation studies as STUDY or "
                             "STUDY=V1,V2 (default: the paper's values)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides of the task (e.g. a tiny trial)")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Run (or read back) every run the claims need, decide them; the other tasks' earlier entries are kept."""
    common.set_threads(args)
    config = load_config(args.task, [f"train.generators={GENERATORS}", *args.overrides,
                                     *common.data_overrides(args)])
    main_run = run_pipeline(config, args.runs_dir, progress=False)
    log.info("main run done")
    claims = table_one(main_run) + similarity_study(main_run)
    decide = {"k": k_study, "noise": noise_study, "location": location_study}
    for spec in args.studies:
        study, _, values = spec.partition("=")
        if study == "holdout":
            holdout = config.collect.k // HOLDOUT_EVERY
            for split in HOLDOUT_SPLITS:
                run = variant(main_run, {"train.holdout": holdout, "train.holdout_split": split,
                                         "evaluate.baselines": list(MEMORIZATION_BASELINES)}, f"holdout-{split}")
                claims.append(memorization(evaluate.load(run.task, run.root)["memorization"], split, holdout,
                                           run.config.train.generators))
        else:
            claims += decide[study](study_runs(config, study, values.split(",") if values else None, args.runs_dir))
        log.info("%s done", spec)
    entry = {"provenance": common.provenance(command(args), str(main_run.device)),
             "resolution": evaluate.load(main_run.task, main_run.root)["resolution"],
             "table_one": table_one_rows(main_run), "claims": claims}
    tasks = {**common.load_results(NAME).get("tasks", {}), args.task: entry}
    return {"format_version": common.FORMAT_VERSION, "provenance": entry["provenance"], "tasks": tasks}


# ---- the section ----------------------------------------------------------------------------------------
def figure(c: dict) -> str:
    """A comparison's difference with its CI, in accuracy points or raw units (IoU, ratios)."""
    if c["metric"].endswith("accuracy"):
        return f"{points_with_ci(c)} pts"
    return points_with_ci(c, 1) + (" IoU" if "iou" in c["metric"] else "")


def claimed_cell(c: dict) -> str:
    """What is claimed, in numbers: a signed size, a margin, or a place on the plane."""
    if c["kind"] == "effect":
        size = f"{100 * c['claimed']:+.2f} pts" if c["metric"].endswith("accuracy") else f"{c['claimed']:+.3f} IoU"
        return size + (f" (from {c['claimed_from']})" if "claimed_from" in c else "")
    if c["kind"] == "equivalence":
        return f"within ±{100 * c['margin']:.2f} pts"
    if c["kind"] == "dominance":
        return dominance_words({"verdict": c["claimed"], "group": c["baseline"], "margin": c["margin"]})
    return f"no better than {', '.join(c['baselines'])} on held-out closeness at equal accuracy"


def ours_cell(c: dict) -> str:
    if c["kind"] == "dominance":
        words = dominance_words({"verdict": c["placed"], "group": c["baseline"], "margin": c["margin"]})
        return f"{words} (accuracy {figure(c['accuracy'])}, max IoU {figure(c['similarity'])})"
    if c["kind"] == "memorization":
        beaten = [name for name, b in c["baselines"].items() if b["generated_beats_it"]]
        beating = [name for name, b in c["baselines"].items() if b["it_beats_generated"]]
        return (f"generated beats {', '.join(beaten) or 'none'}; beaten by {', '.join(beating) or 'none'} "
                "(table below)")
    return figure(c)


def generators_cell(c: dict) -> str:
    return "-" if c["generators"] is None else str(c["generators"])


def memorization_rows(claims: list[dict]) -> list[list[str]]:
    """One row per held-out split and baseline: generated minus the baseline on accuracy and memorization ratio."""
    rows = []
    for c in (c for c in claims if c["kind"] == "memorization"):
        rows.append([c["split"], "generated", f"{c['generated']['memorization_ratio_median']:.2f}",
                     f"{c['generated']['coverage']:.2f}", "", "", ""])
        for name, b in c["baselines"].items():
            reading = ("generated beats it" if b["generated_beats_it"] else "it beats generated"
                       if b["it_beats_generated"] else "neither")
            rows.append([c["split"], name, f"{b['memorization_ratio_median']:.2f}", f"{b['coverage']:.2f}",
                         figure(b["accuracy"]), figure(b["closeness"]), reading])
    return rows


def render_task(task: str, r: dict) -> str:
    """One task's part of the section: Table 1's numbers, every claim with its verdict, the memorization test."""
    rows = [[c["source"], c["claim"], c["kind"], claimed_cell(c), ours_cell(c), f"**{c['verdict']}**",
             generators_cell(c)] for c in r["claims"]]
    memorized = memorization_rows(r["claims"])
    held_out = "" if not memorized else f"""

The held-out test (docs/memorization.md): each group's median memorization ratio (distance to the nearest
training checkpoint over distance to the nearest held-out one; higher is nearer the unseen checkpoints) and
coverage of the held-out checkpoints, in groups of equal size; then generated minus the baseline, mean test
accuracy and memorization ratio with their 95% CIs, and whether one beats the other at equal accuracy.

{common.table(["held-out split", "group", "memorization ratio", "coverage", "accuracy: generated - it",
               "ratio: generated - it", "at equal accuracy"], memorized)}"""
    return f"""## The paper's and the critique's claims on {task} (`python -m bench.claims`)

`{r['provenance']['command']}` ({common.machine(r['provenance'])}).
CIFAR-10 numbers are on the CIFAR-10 (JPEG copy).
The test set resolves differences of about ±{100 * r['resolution']:.2f} points between two groups of originals'
mean accuracy. Every claim is decided by one rule (`pdiff.verdicts.decide_claim`, docs/statistics.md "Claims and
the accuracy-novelty plane"): a claimed effect of size d is *reproduced* when our 95% CI, oriented in the claimed
direction, excludes 0 and reaches d/2, *refuted* when its upper end is below d/2, else *not resolvable*; a claimed
match is reproduced when the CI lies inside ±{100 * verdicts.ACCURACY_MARGIN:.2f} points, refuted when wholly
outside; a place on the accuracy-novelty plane is reproduced when generated stands there, refuted when it stands
at another resolved place. Sizes taken from another of the paper's tasks say so ("from"); *generators* is how many
trained generators the CI covers (3: p-diff as a method, 1: one generator).

Table 1 (test accuracy %; *max* is the paper's best, a test-set maximum; *val-chosen* the test accuracy of
the model with the best validation accuracy; paper, ConvNet-3 on CIFAR-10: original 77.2, ensemble 77.3,
p-diff 77.5 best):

{common.table(["group", "max", "val-chosen", "mean", "median"], r["table_one"])}

{common.table(["source", "claim", "kind", "claimed", "ours [95% CI]", "verdict", "generators"], rows)}{held_out}"""


def headline(task: str, entry: dict) -> str:
    """The README's sentence on one task's claims, from its entry alone: Table 1's mean, and the critique's."""
    mean = next(c for c in entry["claims"] if (c["kind"], c["metric"]) == ("effect", "mean_test_accuracy"))  # Table 1
    plane = [c for c in entry["claims"] if c["kind"] == "dominance" and c["source"] == "critique"]
    held = {c["split"]: c["verdict"] for c in entry["claims"] if c["kind"] == "memorization"}
    where = {"last": "checkpoints held out at the trajectory's end", "run": "checkpoints of an independent collection"}
    sentence = (f"On {task}, each claim decided by one rule, the paper's claim that p-diff's mean beats the "
                f"checkpoints' is {mean['verdict']} ({mean['generators']} trained generators); the critique's claims "
                "that p-diff is no better than " + " and ".join(c["baseline"] for c in plane)
                + " on the accuracy-novelty plane are " + _each([c["verdict"] for c in plane]))
    if held:
        sentence += (", and that its models are replicas or, at best, interpolations of the checkpoints is "
                     + " and ".join(f"{verdict} with {where[split]}" for split, verdict in held.items()))
    return sentence + "."


def _each(verdicts: list[str]) -> str:
    """"both reproduced" when the verdicts agree, else each in turn ("reproduced and refuted")."""
    if len(set(verdicts)) == 1 and len(verdicts) > 1:
        return f"{'both' if len(verdicts) == 2 else 'all'} {verdicts[0]}"
    return " and ".join(verdicts)


def render(results: dict) -> str:
    return "\n\n".join(render_task(task, r) for task, r in sorted(results["tasks"].items()))


def glance(results: dict) -> list[list[str]]:
    """The README's rows (question, task, finding): how many of the paper's and the critique's claims were
    reproduced, refuted or not resolvable, per task; the claims decided for one trained generator (the ablations,
    the held-out tests) counted apart, as they speak for that generator only."""
    rows = []
    for task, entry in results["tasks"].items():
        parts = []
        for scope, claims in (("", [c for c in entry["claims"] if c["generators"] != 1]),
                              ("one trained generator each: ", [c for c in entry["claims"] if c["generators"] == 1])):
            counts = Counter(c["verdict"] for c in claims)
            if claims:
                tally = ", ".join(f"{n} {verdict}" for verdict, n in counts.most_common())
                parts.append(f"{scope}{tally} (of {len(claims)})")
        rows.append(["Do the paper's and the critique's claims hold?", task, "; ".join(parts)])
    return rows


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
