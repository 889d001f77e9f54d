"""Calibration of `pdiff.stats`: do its 95% CIs cover the truth 95% of the time, and are their SEs right?

Groups of models are simulated with a known truth, on test sets drawn afresh in every repetition, by a threshold
process: model i of generator s is right on example j when  skill_i + shift_s + v_sj + noise_ij > difficulty_j,
with skill ~ N(0, sd_skill), shift ~ N(0, sd_shift), v ~ N(0, sd_v), noise ~ N(0, sd_noise) and difficulty ~
N(-4.5, 2), all independent. Three regimes set where the models' accuracy spread (about 0.2-0.3 points at
about 98-99%) comes from: skill (models differ in skill, little noise), interaction (no skill differences: the
spread comes from which examples each model gets right) and mixed. The originals are one generator with no
shift. Then P(right) = Phi(4.5 / sqrt(sd_skill^2 + sd_shift^2 + sd_v^2 + sd_noise^2 + 2^2)), so the true
difference of mean accuracies is known in closed form (0 when both groups come from one process).

For each cell (regime x group sizes x generators) and repetition, the mean-accuracy CI of `compare_accuracy`
(`pdiff.stats.mean_difference`, which also gives its SE) is computed;
the cell reports the coverage of the true difference, with its Wilson 95% interval, and the SE ratio:
sqrt(mean estimated SE^2) / the standard deviation of the estimate over the repetitions. Targets:
coverage 93-97% and SE ratio 0.9-1.1. Method-scope cells tag the generated models with their generator.

The similarity comparisons (`compare_values`: median max wrong-prediction IoU to the originals, median L2 to
the nearest original) are simulated the same way (IoU on the threshold process, L2 on Gaussian parameter
vectors, 50 numbers each), at generator scope and, with generators shifted at random, at method scope; their
truth, the expected difference of the two medians, is taken as the mean over the repetitions.

Usage: python -m bench.calibration [--repetitions 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import stats as scipy_stats

from bench import common
from pdiff.similarity import max_iou_to
from pdiff.stats import compare_values, mean_difference

NAME = "calibration"
DIFFICULTY = (-4.5, 2.0)  # mean and sd of an example's difficulty
REGIMES = {  # (sd_skill, sd_noise)
    "skill": (0.15, 0.25),
    "mixed": (0.08, 0.6),
    "interaction": (0.0, 1.0),
}
SPREADS = {"small": (0.03, 0.0), "large": (0.15, 0.2)}  # between generators: (sd_shift, sd_v)
EXAMPLES = 2000


def simulate_groups(rng: np.random.Generator, m: int, k: int, n: int, skill: float, noise: float,
                    generators: int = 1, shift: float = 0.0, v: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """correct [m, n] of a group drawn by `generators` generators (models spread evenly) and [k, n] originals.

    One fresh test set of n examples serves both groups, as in a run.
    """
    difficulty = rng.normal(*DIFFICULTY, n)
    labels = np.arange(m) % generators
    offset = rng.normal(0, shift, (generators, 1))[labels] + rng.normal(0, v, (generators, n))[labels]
    group = rng.normal(0, skill, (m, 1)) + offset + rng.normal(0, noise, (m, n)) > difficulty
    originals = rng.normal(0, skill, (k, 1)) + rng.normal(0, noise, (k, n)) > difficulty
    return group, originals


def true_difference(skill: float, noise: float, shift: float = 0.0, v: float = 0.0) -> float:
    """Expected mean accuracy of the shifted process minus the originals' (closed form, see the docstring)."""
    base = skill**2 + noise**2 + DIFFICULTY[1] ** 2
    return float(scipy_stats.norm.cdf(-DIFFICULTY[0] / math.sqrt(base + shift**2 + v**2))
                 - scipy_stats.norm.cdf(-DIFFICULTY[0] / math.sqrt(base)))


def accuracy_cell(rng: np.random.Generator, repetitions: int, regime: str, m: int, k: int, generators: int = 1,
                  spread: str | None = None, n: int = EXAMPLES) -> dict:
    """Coverage and SE ratio of the mean-accuracy CI in one cell."""
    skill, noise = REGIMES[regime]
    shift, v = SPREADS[spread] if spread else (0.0, 0.0)
    truth = true_difference(skill, noise, shift, v)
    labels = torch.arange(m) % generators if generators > 1 else None
    estimates, variances, covered, spreads = [], [], 0, []
    for _ in range(repetitions):
        group, originals = simulate_groups(rng, m, k, n, skill, noise, generators, shift, v)
        mean = mean_difference(torch.from_numpy(group), torch.from_numpy(originals), labels)
        low, high = mean.interval()
        estimates.append(mean.difference)
        variances.append(mean.se**2)
        covered += low <= truth <= high
        spreads.append(float(originals.mean(1).std()))
    return _summary(regime, m, k, generators, spread, truth, estimates, variances, covered, repetitions,
                    model_sd=float(np.mean(spreads)))


def similarity_cell(rng: np.random.Generator, repetitions: int, metric: str, m: int, k: int,
                    n: int = EXAMPLES, dim: int = 50, generators: int = 1, spread: str | None = None) -> dict:
    """Coverage of `compare_values`' CI for median max IoU (threshold process) or median L2 (Gaussian vectors).

    With generators > 1 the generated models come from that many generators, each shifted at random (the
    threshold process's shift and v of `spread`; for L2 an offset of each coordinate with the shift's sd), and
    the CI takes their labels (method scope); the truth is then the expected difference over generators too."""
    skill, noise = REGIMES["mixed"]
    shift, v = SPREADS[spread] if spread else (0.0, 0.0)
    labels = torch.arange(m) % generators
    differences, lows, highs = [], [], []
    for _ in range(repetitions):
        if metric == "median_max_iou":
            group, originals = (torch.from_numpy(~x) for x in simulate_groups(rng, m, k, n, skill, noise,
                                                                               generators, shift, v))
            values, own = max_iou_to(group, originals), max_iou_to(originals, originals, exclude_self=True)
        else:
            offset = rng.normal(0, shift, (generators, dim))[labels.numpy()]
            group, originals = (torch.from_numpy(rng.normal(size=(m, dim)) + offset),
                                torch.from_numpy(rng.normal(size=(k, dim))))
            values = torch.cdist(group, originals).amin(1)
            own = torch.cdist(originals, originals).fill_diagonal_(float("inf")).amin(1)
        c = compare_values(values, own, "generated", "original", metric, n_boot=500, seed=int(rng.integers(2**31)),
                           generators=labels if generators > 1 else None)
        differences.append(c.difference)
        lows.append(c.ci_low)
        highs.append(c.ci_high)
    truth = float(np.mean(differences))  # the expected difference of the medians, by Monte Carlo
    covered = sum(lo <= truth <= hi for lo, hi in zip(lows, highs, strict=True))
    variances = [((hi - lo) / (2 * 1.96)) ** 2 for lo, hi in zip(lows, highs, strict=True)]
    return _summary(metric, m, k, generators, spread, truth, differences, variances, covered, repetitions)


def _summary(regime: str, m: int, k: int, generators: int, spread: str | None, truth: float,
             estimates: list[float], variances: list[float], covered: int, repetitions: int,
             model_sd: float | None = None) -> dict:
    low, high = _wilson(covered, repetitions)
    return {"regime": regime, "m": m, "k": k, "generators": generators, "spread": spread, "truth": truth,
            "coverage": covered / repetitions, "coverage_low": low, "coverage_high": high,
            "se_ratio": math.sqrt(float(np.mean(variances))) / float(np.std(estimates, ddof=1)),
            "repetitions": repetitions, "model_sd": model_sd}


def _wilson(successes: int, n: int) -> tuple[float, float]:
    interval = scipy_stats.binomtest(successes, n).proportion_ci(0.95, method="wilson")
    return float(interval.low), float(interval.high)


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__)
    parser.add_argument("--repetitions", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Every cell at full size: 2000 examples, 200 vs 100 and 50 vs 50 models, method scope with 100 vs 100."""
    torch.set_num_threads(args.threads or 1)
    return common.results(f"python -m bench.{NAME} --repetitions {args.repetitions} --seed {args.seed}",
                          **measure_cells(args, sizes=((200, 100), (50, 50)), examples=EXAMPLES))


def measure_cells(args: argparse.Namespace, sizes: tuple[tuple[int, int], ...], examples: int) -> dict:
    """Generator scope (3 regimes x `sizes`), method scope (G = 3 and 5 x 2 spreads, on the first size pair
    capped at 100 vs 100) and the two similarity comparisons (x `sizes`, then at method scope: G = 3 and 5 with the
    large spread, 100 vs 100)."""
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    cells = [accuracy_cell(rng, args.repetitions, regime, m, k, n=examples) for regime in REGIMES for m, k in sizes]
    m, k = sizes[0]
    cells += [accuracy_cell(rng, args.repetitions, "mixed", min(m, 100), min(k, 100), g, spread, n=examples)
              for g in (3, 5) for spread in SPREADS]
    cells += [similarity_cell(rng, args.repetitions, metric, mm, kk, n=examples)
              for metric in ("median_max_iou", "median_l2_to_original") for mm, kk in sizes]
    cells += [similarity_cell(rng, args.repetitions, metric, min(m, 100), min(k, 100), n=examples, generators=g,
                              spread="large") for metric in ("median_max_iou", "median_l2_to_original") for g in (3, 5)]
    return {"seed": args.seed, "repetitions": args.repetitions, "examples": examples, "cells": cells,
            "seconds": time.perf_counter() - start}


def render(results: dict) -> str:
    """The BENCHMARKS.md section, from the JSON alone."""
    rows = [[c["regime"], f"{c['m']} vs {c['k']}", c["generators"], c["spread"] or "",
             f"{100 * c['coverage']:.1f} [{100 * c['coverage_low']:.1f}, {100 * c['coverage_high']:.1f}]",
             f"{c['se_ratio']:.3f}", _met(c)] for c in results["cells"]]
    return "\n".join([
        f"## Calibration of the CIs (`python -m bench.{NAME}`)", "",
        f"{results['repetitions']} repetitions a cell, {results['examples']} test examples drawn afresh each "
        f"time, seed {results['seed']}; {common.hardware(results['provenance'])}; {results['seconds']:.0f} s. "
        "The simulation and the truth are described in bench/calibration.py. Coverage: share of repetitions "
        "whose 95% CI holds the true difference (Wilson 95% interval); SE ratio: the CIs' SE as a root mean "
        "square (for the similarity rows: half-width / 1.96), over the estimate's standard deviation across "
        "repetitions. Targets: coverage 93-97%, SE ratio 0.9-1.1. Rows with generators > 1 tag the generated "
        "models with their generator (method scope); the rows named by a metric are the similarity comparisons "
        "(their truth is the mean difference over the repetitions, generators drawn afresh in each); at method "
        "scope theirs is a t interval with few degrees of freedom, so its half-width / 1.96 exceeds the SE by "
        "design and the row is judged on coverage alone.", "",
        common.table(["regime / metric", "models", "generators", "between-generator spread", "coverage % [95% CI]",
               "SE ratio", "targets"], rows)])


def _met(cell: dict) -> str:
    """Coverage 93-97% and SE ratio 0.9-1.1; a method-scope similarity row on coverage alone: its interval is a t
    interval with few degrees of freedom, so its half-width / 1.96 exceeds the SE by design."""
    t_interval = cell["regime"] not in REGIMES and cell["generators"] > 1
    se_ok = t_interval or 0.9 <= cell["se_ratio"] <= 1.1
    return "met" if 0.93 <= cell["coverage"] <= 0.97 and se_ok else "NOT met"


def glance(results: dict) -> list[list[str]]:
    """The README's row (question, task, finding): how many cells meet the coverage and SE targets."""
    cells = results["cells"]
    coverage = [100 * c["coverage"] for c in cells]
    return [["Do the 95% CIs cover 95% of the time?", "simulated accuracies",
             f"{sum(_met(c) == 'met' for c in cells)} of {len(cells)} settings on target; coverage "
             f"{min(coverage):.1f}-{max(coverage):.1f}%"]]


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
