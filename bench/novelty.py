"""How novel are pdiff's generated models next to the official p-diff v2 code's, and what makes the difference.

    python -m bench.novelty [--task mnist1d-convnet] [--runs-dir /tmp/nov-runs] [--only LABEL ...]

The official code is not run here: its output (its means over 200 generated models on this task's
checkpoints, seed 0, evaluated with pdiff's evaluator) was measured once and is kept in OFFICIAL, without CIs.
Ours are 95% bootstrap CIs over the generated models: a mean of ours "reaches" the official one when the
official mean lies inside our CI (or beyond it on the novel side: lower max IoU, larger L2).

Runs (finished runs are read back, not redone): the preset (`pdiff run TASK`, all baselines), then each variant
of VARIANTS on the same checkpoints in RUNS_DIR/<task>/novelty/<label>/ (only their generated models are
evaluated), and the held-out runs of HOLDOUT_OF (train.holdout=40) for the coverage of unseen checkpoints.
Variants either move one factor of the preset to the official value, or one factor of the official configuration
(`mnist1d-convnet-official`) back to the preset's. Seconds are CPU seconds of this process with one torch thread
(OMP_NUM_THREADS=1), taken when a stage runs and kept in the run folder's novelty_seconds.json.
Writes bench/novelty.json (after every run, so an interrupted benchmark keeps its rows) and the "novelty" section
of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from pdiff import evaluate
from pdiff.ablation import reuse, with_overrides
from pdiff.config import STAGES
from pdiff.pipeline import Run, run_stage
from pdiff.presets import load_config
from pdiff.runlock import run_lock
from pdiff.store import load_json, save_json
from pdiff.words import points_with_ci

from . import common

NAME = "novelty"
HOLDOUT = 40
ONLY_GENERATED = {"evaluate.baselines": []}
log = logging.getLogger("novelty")

# The official v2 code (fp32; bf16 within 0.001 IoU / 0.01 L2 of it) on the default task's checkpoints as pdiff
# collected them when it was measured; originals_mean: those checkpoints' mean test accuracy (bench/novelty.json
# of that measurement). pdiff's collection has changed since, so its distance to its own originals is what compares.
OFFICIAL = {"mean": 0.9758, "best": 0.9755, "max_iou": 0.921, "l2": 1.02, "train_s": 620.0, "sample_s": 561.0,
            "originals_mean": 0.9768}

# The official v2 generator in pdiff's terms (preset mnist1d-convnet-official): conv1d autoencoder (5 stride-2
# blocks down to a 128-number latent) and conv1d denoiser, 500 autoencoder steps at lr 2e-5, 1000 diffusion
# steps at lr 1e-4, batch 50, no weight decay, no EMA, raw latents. pdiff's blocks have kernel 4 and GroupNorm
# where the official ones have kernel 7 and BatchNorm: the recipe is the official one, the layers are pdiff's
# (the official+k7, official+bn and official-layers variants put the official layers in).
OFFICIAL_AE = {"train.autoencoder.arch": "conv1d", "train.autoencoder.latent_dim": 128,
               "train.autoencoder.kwargs": {"channels": [64, 128, 256, 256, 32]}}
OFFICIAL_AE_RECIPE = {"train.autoencoder.steps": 500, "train.autoencoder.lr": 2e-5,
                      "train.autoencoder.batch_size": 50, "train.autoencoder.weight_decay": 0.0}
OFFICIAL_DM = {"train.diffusion.arch": "conv1d", "train.diffusion.kwargs": {"channels": [64, 128, 256, 512]}}
OFFICIAL_DM_RECIPE = {"train.diffusion.steps": 1000, "train.diffusion.lr": 1e-4,
                      "train.diffusion.batch_size": 50, "train.diffusion.weight_decay": 0.0}
# The official blocks' layers in pdiff's conv1d networks: kernel 7, and BatchNorm in the autoencoder on batch
# statistics, which the official code also uses at decode (its autoencoder is never put in eval mode). The
# denoiser keeps GroupNorm: on batch statistics it would sample batches of one timestep after training on batches
# of mixed ones, and pdiff's blocks keep no running statistics.
KERNEL7 = {"kernel_size": 7}
BATCH_NORM = {"norm": "batch"}
NO_EMA = {"train.diffusion.ema_decay": 0.0}
RAW_LATENTS = {"train.diffusion.standardise_latents": False}
OFFICIAL_ALL = {**OFFICIAL_AE, **OFFICIAL_AE_RECIPE, **OFFICIAL_DM, **OFFICIAL_DM_RECIPE, **NO_EMA, **RAW_LATENTS}


def official_layers(autoencoder: dict, denoiser: dict) -> dict:
    """The official configuration with these layer kwargs (KERNEL7, BATCH_NORM) in its two conv1d networks."""
    return {**OFFICIAL_ALL, "train.autoencoder.kwargs": {**OFFICIAL_AE["train.autoencoder.kwargs"], **autoencoder},
            "train.diffusion.kwargs": {**OFFICIAL_DM["train.diffusion.kwargs"], **denoiser}}


# label -> (what it changes, overrides on the preset). Order: the official configuration, its layers, one factor back,
# then one factor of the preset toward the official.
VARIANTS: dict[str, tuple[str, dict]] = {  # run in this order: the most telling first
    "official": ("pdiff conv1d + conv1d, official hyperparameters (preset mnist1d-convnet-official)", OFFICIAL_ALL),
    "official+k7": ("official, kernel 7 in both networks", official_layers(KERNEL7, KERNEL7)),
    "official+bn": ("official, BatchNorm on batch statistics (also at decode) in the autoencoder",
                    official_layers(BATCH_NORM, {})),
    "official-layers": ("official, the official layers: kernel 7, and BatchNorm on batch statistics in the "
                        "autoencoder", official_layers({**KERNEL7, **BATCH_NORM}, KERNEL7)),
    "ae-official": ("preset, official autoencoder recipe (500 steps, lr 2e-5, batch 50)", OFFICIAL_AE_RECIPE),
    "dm-official": ("preset, official diffusion recipe (1000 steps, lr 1e-4, batch 50)", OFFICIAL_DM_RECIPE),
    "ema0": ("preset, no EMA", NO_EMA),
    "raw": ("preset, raw latents", RAW_LATENTS),
    "noise0.5": ("preset, latent noise 0.5", {"train.autoencoder.latent_noise": 0.5}),
    "latent128": ("preset, latent 128", {"train.autoencoder.latent_dim": 128}),
    "official+ema": ("official, but EMA 0.999", {**OFFICIAL_ALL, "train.diffusion.ema_decay": 0.999}),
    "official+std": ("official, but standardised latents",
                     {**OFFICIAL_ALL, "train.diffusion.standardise_latents": True}),
    "official+mlp": ("official recipe, MLP networks (latent 128)",
                     {**OFFICIAL_AE_RECIPE, **OFFICIAL_DM_RECIPE, **NO_EMA, **RAW_LATENTS,
                      "train.autoencoder.latent_dim": 128}),
    "ddim50": ("preset, DDIM 50 steps", {"generate.sampler": "ddim", "generate.steps": 50}),
    "conv": ("preset recipe, conv1d + conv1d networks (official channels, latent 128)",
             {**OFFICIAL_AE, **OFFICIAL_DM}),
    # The official autoencoder recipe is the factor that moves novelty (ae-official); between its 500 steps at
    # lr 2e-5 and the preset's 2000 at 1e-3, shorter training at the preset's lr:
    "ae500": ("preset, autoencoder 500 steps", {"train.autoencoder.steps": 500}),
    "ae250": ("preset, autoencoder 250 steps", {"train.autoencoder.steps": 250}),
}
# Variants left out of the table by --only, and why (named in the section so the table says what it lacks).
NOT_RUN = {"conv": "the conv1d networks at the preset's 2000 + 3000 steps cost about 50 CPU minutes (1.4 s an "
                   "autoencoder step); official+mlp separates the architecture from the other side"}
HOLDOUT_OF = ("preset",)  # labels whose held-out twin (train.holdout=40) gives the coverage


def mean_ci(values: torch.Tensor, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-model values [M] and its 95% percentile bootstrap CI (models resampled with replacement)."""
    x = values.double().flatten()
    generator = torch.Generator().manual_seed(seed)
    means = x[torch.randint(len(x), (n_boot, len(x)), generator=generator)].mean(1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return x.mean().item(), low, high


def staged(run: Run) -> Run:
    """Take `run` through every stage, keeping each stage's CPU seconds (one thread) when it runs here."""
    file = run.root / "novelty_seconds.json"
    with run_lock(run.root):
        seconds = load_json(file) if file.is_file() else {}
        for stage in STAGES:
            start = time.process_time()
            if run_stage(run, stage):
                seconds[stage] = round(time.process_time() - start, 1)
                save_json(file, seconds)
    return run


def variant(main: Run, overrides: dict, folder: str) -> Run:
    """A run of the main config with `overrides` (generated models evaluated only), reusing the main run's stages."""
    run = Run(with_overrides(main.config, {**ONLY_GENERATED, **overrides}), main.root / "novelty" / folder,
              progress=False)
    with run_lock(run.root):
        reuse(main, run)
        return staged(run)


def interval(value: tuple[float, float, float], digits: int = 3) -> str:
    mean, low, high = value
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def reaches(value: tuple[float, float, float], official: float, novel_is_low: bool) -> str:
    """Whether the official mean lies in our CI ("within"), on its novel side ("beyond") or short of it ("no")."""
    _, low, high = value
    if low <= official <= high:
        return "within"
    return "beyond" if (official > high) == novel_is_low else "no"


def record(label: str, words: str, run: Run, held: Run | None) -> dict:
    """The figures of one run: accuracy with CIs against the originals, novelty with CIs, coverage, seconds."""
    results = evaluate.load(run.task, run.root)
    summary = results["summary"]["generated"]
    versus = {c["metric"]: c for c in results["comparisons"] if (c["group"], c["versus"]) == ("generated", "original")}
    similarity = results["similarity"]
    seed = run.config.seed
    iou = mean_ci(torch.tensor(similarity["max_iou_to_original"]["generated"]["values"]), seed=seed)
    l2 = mean_ci(torch.tensor(similarity["distance_to_original"]["generated"]["values"]), seed=seed)
    seconds_file = run.root / "novelty_seconds.json"
    seconds = load_json(seconds_file) if seconds_file.is_file() else {}
    row = {"label": label, "what": words, "n": summary["count"], "mean": summary["mean"], "best": summary["best"],
           "max": summary["max"], "mean_vs_original": versus["mean_test_accuracy"],
           "best_vs_original": versus["best_val_chosen_test_accuracy"], "max_iou": iou, "l2": l2,
           "train_s": seconds.get("train"), "sample_s": seconds.get("generate"), "coverage": None}
    if held is not None:
        g = evaluate.load(held.task, held.root)["generalization"]
        row["coverage"] = [g["generated"][k] for k in ("coverage", "coverage_ci_low", "coverage_ci_high")]
        row["heldout_coverage"] = [g["heldout"][k] for k in ("coverage", "coverage_ci_low", "coverage_ci_high")]
    return row


def originals(main: Run) -> dict:
    """The originals' own figures: count, mean and val-chosen best test accuracy, max IoU and L2 to another one."""
    results = evaluate.load(main.task, main.root)
    o, similarity = results["summary"]["original"], results["similarity"]
    return {"n": o["count"], "mean": o["mean"], "best": o["best"],
            "max_iou": mean_ci(torch.tensor(similarity["max_iou_to_original"]["original"]["values"])),
            "l2": mean_ci(torch.tensor(similarity["distance_to_original"]["original"]["values"]))}


def originals_row(o: dict) -> list:
    return ["originals (to another)", o["n"], f"{100 * o['mean']:.2f}", "", f"{100 * o['best']:.2f}", "",
            interval(tuple(o["max_iou"])), "", interval(tuple(o["l2"]), 2), "", "", "", ""]


def table_row(r: dict) -> list:
    coverage = "" if r["coverage"] is None else interval(tuple(r["coverage"]), 2)
    if r.get("heldout_coverage"):
        coverage += f" (held-out's own {r['heldout_coverage'][0]:.2f})"
    seconds = ["" if s is None else f"{s:.0f}" for s in (r["train_s"], r["sample_s"])]
    return [f"**{r['label']}**: {r['what']}", r["n"], f"{100 * r['mean']:.2f}",
            points_with_ci(r["mean_vs_original"]),
            f"{100 * r['best']:.2f}", points_with_ci(r["best_vs_original"]), interval(tuple(r["max_iou"])),
            reaches(r["max_iou"], OFFICIAL["max_iou"], True), interval(tuple(r["l2"]), 2),
            reaches(r["l2"], OFFICIAL["l2"], False), coverage, *seconds]


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/novelty")
    parser.add_argument("--task", default="mnist1d-convnet")
    parser.add_argument("--only", nargs="*", default=None, help="run only these variant labels (and the preset)")
    parser.add_argument("--holdout", nargs="*", default=list(HOLDOUT_OF), help="labels with a held-out twin run")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """The preset's run, then each chosen variant (and held-out twin); bench/novelty.json after every run."""
    common.set_threads(args)
    config = load_config(args.task, common.data_overrides(args))
    main_run = staged(Run(config, args.runs_dir / config.task, progress=False))
    chosen = [label for label in VARIANTS if args.only is None or label in args.only]
    holdout = "" if args.holdout == list(HOLDOUT_OF) else " --holdout " + " ".join(args.holdout)
    only = " --only " + " ".join(args.only) if args.only else ""
    rows: list[dict] = []
    figures = {}
    for label in ["preset", *chosen]:
        words, overrides = ("the preset: MLP autoencoder + MLP denoiser", {}) if label == "preset" else VARIANTS[label]
        log.info("variant %s", label)
        run = main_run if label == "preset" else variant(main_run, overrides, label)
        held = None
        if label in args.holdout:
            log.info("held-out twin of %s", label)
            held = variant(main_run, {**overrides, "train.holdout": HOLDOUT}, f"{label}-holdout{HOLDOUT}")
        rows.append(record(label, words, run, held))
        figures = common.results(
            f"python -m bench.novelty --task {args.task}{holdout}{only}", str(main_run.device), task=args.task,
            official=OFFICIAL, resolution=evaluate.load(main_run.task, main_run.root)["resolution"],
            originals=originals(main_run), rows=rows,
            left_out={label: NOT_RUN.get(label, "not chosen") for label in VARIANTS if label not in chosen})
        common.save_results(NAME, figures)  # a partial table survives an interrupted benchmark
    return figures


def not_run(left_out: dict[str, str]) -> str:
    """A sentence naming the variants --only left out, with their reasons."""
    if not left_out:
        return ""
    return " Not run: " + "; ".join(f"*{label}* ({reason})" for label, reason in left_out.items()) + "."


def render(results: dict) -> str:
    header = ["generator", "models", "mean test %", "mean - originals' [95% CI]", "val-chosen best %",
              "best - originals' [95% CI]", "mean max IoU to an original [95% CI]", "official 0.921",
              "mean L2 to nearest original [95% CI]", "official 1.02", f"coverage of {HOLDOUT} held-out [95% CI]",
              "train s", "sample s"]
    o = results["official"]
    official = ["**official v2 code**, fp32 (measured once; no CIs)", 200, f"{100 * o['mean']:.2f}", "",
                f"{100 * o['best']:.2f}", "", f"{o['max_iou']:.3f}", "", f"{o['l2']:.2f}", "", "",
                f"{o['train_s']:.0f} (wall)", f"{o['sample_s']:.0f} (wall)"]
    p, resolution = results["provenance"], 100 * results["resolution"]
    rows = [originals_row(results["originals"]), official, *(table_row(r) for r in results["rows"])]
    return f"""## Novelty next to the official code's output (`python -m bench.novelty`)

`{p['command']}` with OMP_NUM_THREADS=1
({common.machine(p)}).{not_run(results['left_out'])} All rows use the same 200
checkpoints (seed 0) and generate 200 models; test accuracy on the 2000 MNIST-1D test sequences (one example is
0.05 points; this test set resolves mean differences of about ±{resolution:.2f} points). Differences to the
originals in points with the run's 95% CI (two-level paired bootstrap, `pdiff.stats`). Max IoU: each generated
model's max wrong-prediction IoU to an original; L2: its distance to the nearest original in standardised units;
both as the mean over models with a 95% bootstrap CI over models. The official row is the official p-diff code run
on this machine and evaluated by pdiff: means only, measured once on the checkpoints pdiff collected then, whose
mean was {100 * OFFICIAL['originals_mean']:.2f}% (its models: {100 * (o['mean'] - OFFICIAL['originals_mean']):+.2f} \
points from their originals); compare its distance to its originals, not its accuracy, with the rows.
*official* columns: whether the official mean lies in our CI
(*within*), beyond it on the novel side (*beyond*: our models are more novel) or not (*no*). Coverage: with
train.holdout={HOLDOUT}, the fraction of held-out checkpoints nearer some generated model than any training
checkpoint (`pdiff.stats.generalization`). Seconds: CPU seconds of the train and generate stages with one
thread (the official ones: wall seconds on the idle 2-core machine).

{common.table(header, rows)}"""


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
