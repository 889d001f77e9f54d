"""Every script follows the convention (NAME, parser, measure, render, main), and the scripts without committed
results render a section from small hand-made results: the render reads only what measure records."""

import importlib

import pytest

from bench import common

COMPARISON = {"difference": 0.001, "ci_low": -0.0005, "ci_high": 0.0025, "verdict": "no detectable difference"}
SCRIPTS = sorted(p.stem for p in (common.ROOT / "bench").glob("*.py") if p.stem not in {"__init__", "__main__",
                                                                                           "common"})


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_the_conventions_parts(name):
    module = importlib.import_module(f"bench.{name}")
    assert module.NAME == name
    assert all(callable(getattr(module, part)) for part in ("parser", "measure", "render", "main"))
    assert module.parser().parse_known_args([])[0] is not None


def render(name: str, **figures) -> str:
    section = importlib.import_module(f"bench.{name}").render(common.results(f"python -m bench.{name}", **figures))
    assert f"`python -m bench.{name}" in section
    return section


def test_stages_renders_medians_and_the_total():
    runs = [{"wall": w, "cpu": c, "rss": 400.0} for w, c in ((2.0, 1.0), (4.0, 3.0), (3.0, 2.0))]
    section = render("stages", task="mnist1d-convnet", repeats=3, stages={"collect": runs, "train": runs})
    assert "| collect | 2.0 | 3.0 | 400 |" in section and "| **total** | **4.0** | 6.0 |  |" in section


def test_seeds_renders_each_verdict_with_its_scope():
    def run(generators: int, scope: str, train_s: float) -> dict:
        mean = {**COMPARISON, "group": "generated", "versus": "original", "metric": "mean_test_accuracy",
                "scope": scope}
        dominated = {"group": "mean_of_k", "versus": "generated", "metric": "dominance",
                     "verdict": "generated is dominated by", "scope": scope, "margin": 0.0025}
        return {"generators": generators, "comparisons": [mean, dominated], "resolution": 0.0005, "trained": 4,
                "means": {"original": 0.9768, "generated": 0.9771}, "seconds": {"train": train_s}}

    section = render("seeds", task="mnist1d-convnet", runs=[run(1, "generator", 30.0), run(5, "method", 150.0)])
    assert "| 1 | original: mean test accuracy, points | +0.10 [-0.05, +0.25] | no detectable difference | " \
           "this generator |" in section
    assert "| 5 | mean_of_k (accuracy-novelty plane) |  | generated is dominated by mean_of_k | p-diff on this " \
           "task, 5 generators |" in section
    assert "| 5 | 4 | 150 | 38 | 97.68 | 97.71 | ±0.05 |" in section


def test_seeds_glance_states_the_method_verdict_and_groups_the_plane():
    mean = {**COMPARISON, "group": "generated", "versus": "original", "metric": "mean_test_accuracy"}
    verdicts = (("ensemble", "generated dominates"), ("mean_of_k", "generated is dominated by"),
                ("noise@0.001", "generated dominates"))
    plane = [{"group": g, "versus": "generated", "metric": "dominance", "verdict": v, "margin": 0.0025}
             for g, v in verdicts]
    runs = [{"generators": g, "comparisons": [mean, *plane]} for g in (1, 3)]
    rows = importlib.import_module("bench.seeds").glance({"task": "mnist1d-convnet", "runs": runs})
    assert rows[0][1:] == ["mnist1d-convnet, 3 generators", "+0.10 [-0.05, +0.25] points, no detectable difference"]
    assert rows[1][2] == "generated dominates ensemble and noise@0.001; generated is dominated by mean_of_k"
    assert rows[1][1] == "mnist1d-convnet, the models of 3 generators, pooled"  # records without a method scope
    for record in plane:
        record["scope"] = "method"
    rows = importlib.import_module("bench.seeds").glance({"task": "mnist1d-convnet", "runs": runs})
    assert rows[1][1] == "mnist1d-convnet, 3 generators"


def test_training_renders_the_goal_on_validation_and_reports_test():
    def accuracies(val_best: float, val_mean: float) -> dict:
        return {"val": {"best": val_best, "mean": val_mean}, "test": {"best": 97.6, "mean": 97.4}}

    rows = [{"setting": "2000:3000", "ae_s": 10.0, "diffusion_s": 20.0, **accuracies(98.0, 97.6)},
            {"setting": "300:500", "ae_s": 1.0, "diffusion_s": 2.0, **accuracies(98.0, 96.0)}]
    section = render("training", task="mnist1d-convnet", seed=0, sampler="ddpm", sample_steps=None, n=200,
                     original=accuracies(97.9, 97.7), rows=rows)
    assert "| 2000:3000 | 10.0 | 20.0 | 98.00 | 97.60 | yes | 97.60 | 97.40 |" in section and "| 300:500 |" in section
    assert section.count("| no |") == 1 and "ddpm\n(all steps)" in section and "judged on validation" in section


def test_evaluation_renders_the_speedups():
    row = {"task": "mnist1d-convnet", "test_examples": 2000, "eval_batch_size": 1000, "dim": 128, "tensors": 4,
           "chunk": 50, "one_by_one_s": 2.4, "split_s": 1.2, "whole_vmap_s": 5.9, "floor_s": 1.0, "mismatches": 0,
           "predictions": 400000}
    section = render("evaluation", models=200, repeats=3, rows=[row])
    assert "| **1.20** | 1.00 | 2.0x | 1.20 | 0 of 400000 |" in section


def test_generation_renders_both_parts():
    samplers = [{"sampler": "ddpm-1000", "seconds": 3.0, "mean": 97.7, "median": 97.75, "min": 96.0, "max": 98.0,
                 "below_worst_original": 1},
                {"sampler": "ddim-10", "seconds": 0.03, "mean": 97.6, "median": 97.7, "min": 95.0, "max": 98.0,
                 "below_worst_original": 10}]
    efficiency = [{"way": "generation", "seconds": 1.0, "good": 100, "models": 200, "mean_val": 0.975},
                  {"way": "SGD", "seconds": 3.0, "good": 50, "models": 200, "mean_val": 0.975}]
    section = render("generation", task="mnist1d-convnet", n=200, repeats=3, good=100, samplers=samplers,
                     originals={"mean": 97.6, "median": 97.7, "min": 97.2, "max": 97.9}, threshold=0.9765,
                     efficiency=efficiency)
    assert "| ddim-10 | 0.03 | 100x | 97.60 | -0.10 |" in section
    assert "| SGD | 3.0 | 50 of 200 | 97.50 | 6.0 | 6.0x |" in section and "(97.65%)" in section


def test_ablations_render_each_study():
    row = {"label": "k10", "summary": {"generated": {"max": 0.98, "mean": 0.97, "median": 0.975, "best": 0.978},
                                       "original": {"mean": 0.976}},
           "max_iou": {"generated": {"mean": 0.9}}, "versus_main": [{"metric": "mean_test_accuracy", **COMPARISON}]}
    section = render("ablations", task="mnist1d-convnet", studies={"k": [row]}, resolution=0.0005)
    assert "**k** (`pdiff ablate mnist1d-convnet --study k`)" in section
    assert "| k10 | 98.00 | 97.00 | 97.50 | 97.80 | 97.60 | 0.900 | - |" in section


def test_scaling_renders_measured_and_skipped_points_and_the_slopes():
    points = [{"arch": "mlp", "target": t, "dim": t, "ae_step": 0.1 * t / 1000, "dm_step": 0.1 * t / 1000,
               "sample100": 1.0, "rss": 1000.0 + t / 10, "latent": [32], "load": 1.0, "wall": 5.0}
              for t in (1000, 10000)]
    points.append({"arch": "mlp", "target": 100000, "skipped": "not run: estimated 30 GB, 757 s"})
    entry = {"provenance": common.provenance("python -m bench.scaling --archs mlp"), "archs": ["mlp"], "steps": 3,
             "k": 100, "sample_steps": 3, "baseline_rss": 900.0, "points": points, "note": "a note"}
    section = importlib.import_module("bench.scaling").render({"parts": {"archs": entry}})
    assert "| mlp | 10000 | 32 | 1.000 | 1.000 |" in section and "| mlp | ~1e+05 | - | not run" in section
    assert "| mlp | 1.00 |" in section  # time per step grows as D between the two points


def test_conditioning_renders_each_task():
    group = {"label": "conditioned", "target": "max (98.10)", "w": "1", "val_mean": 0.979, "test_mean": 0.977,
             "best": 0.9775, "comparisons": {v: {m: COMPARISON for m in ("mean_test_accuracy",
                                                                          "best_val_chosen_test_accuracy")}
                                             for v in ("original", "ensemble")}, "median_max_iou": 0.95}
    originals = {**group, "label": "originals (K checkpoints)", "target": "", "w": "", "comparisons": None}
    achieved = [{"w": 1.0, "target": name, "asked": asked, "reached": asked - 0.001,
                 "comparisons": group["comparisons"]} for name, asked in (("min", 0.97), ("max", 0.98))]
    entry = {"provenance": common.provenance("python -m bench.conditioning --task mnist1d-convnet"), "k": 200,
             "seed": 0, "p_uncond": 0.1, "n": 100, "sampler": "ddim", "reference": False, "val_step": 0.001,
             "n_test": 2000, "guidance": [1.0], "targets": ["min", "max"], "rows": [originals, group],
             "achieved": achieved}
    section = importlib.import_module("bench.conditioning").render({"tasks": {"mnist1d-convnet": entry}})
    assert "| originals (K checkpoints) |  |  | 97.90 | 97.70 |  |  | 97.75 |  |  | 0.950 |" in section
    assert "| conditioned | max (98.10) | 1 | 97.90 | 97.70 | +0.10 [-0.05, +0.25] no detectable" in section
    assert "- w = 1: the mean validation accuracy reached is monotone" in section


def test_lora_renders_the_groups_the_adapterless_model_and_each_comparison():
    summary = {"original": {"mean": 0.9512, "max": 0.9601, "min": 0.9403}, "generated": {"mean": 0.9498, "max": 0.96,
                                                                                       "min": 0.9}}
    comparison = {**COMPARISON, "group": "generated", "versus": "original", "metric": "mean_test_accuracy"}
    section = render("lora", task="mnist-vit-lora", dim=4096, description="A ViT.", k=50, n=50, without_adapters=0.31,
                     summary=summary, comparisons=[comparison], resolution=0.002,
                     seconds={"collect": 300.0, "train": 100.0})
    assert "| original | 95.12 | 96.01 | 94.03 |" in section and "reaches 31.00%" in section
    assert "| original | +0.10 [-0.05, +0.25] | no detectable difference |" in section
    assert "collect 300 s, train 100 s" in section
