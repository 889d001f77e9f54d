"""bench.calibration at reduced repetitions: the mean's CI covers the truth at about its level, and render works."""

import json
from argparse import Namespace

import numpy as np
import pytest

from bench import calibration, common


@pytest.mark.parametrize("regime", ["skill", "interaction"])
def test_mean_ci_covers_the_truth(regime: str) -> None:
    """300 repetitions of 40 vs 30 models on 500 examples: coverage in 90-99% (the benchmark: 1000 a cell,
    targets 93-97%), SE ratio in 0.85-1.15."""
    cell = calibration.accuracy_cell(np.random.default_rng(0), 300, regime, 40, 30, n=500)
    assert cell["truth"] == 0 and 0.90 <= cell["coverage"] <= 0.99 and 0.85 <= cell["se_ratio"] <= 1.15


def test_method_scope_ci_covers_the_truth() -> None:
    """Three generators whose models differ in skill and per example: the truth is not 0, and is covered."""
    cell = calibration.accuracy_cell(np.random.default_rng(1), 300, "mixed", 30, 30, 3, "large", n=500)
    assert cell["truth"] < 0 and 0.90 <= cell["coverage"] <= 0.99


def test_true_difference_of_one_process_is_zero() -> None:
    assert calibration.true_difference(0.1, 0.5) == 0
    assert calibration.true_difference(0.1, 0.5, shift=0.3) < 0  # more spread, further from the easy side


def test_render_from_json(tmp_path) -> None:
    args = Namespace(repetitions=20, seed=0)
    figures = calibration.measure_cells(args, sizes=((12, 10),), examples=200)
    results = json.loads(json.dumps(common.results("python -m bench.calibration", **figures)))
    text = calibration.render(results)
    assert text.startswith("## Calibration of the CIs") and text.count("\n| ") == len(results["cells"]) + 1
    assert all(cell["repetitions"] == 20 for cell in results["cells"])
