import json

import numpy as np
import pytest
import torch

from pdiff import memorization
from pdiff.baselines import interpolation, mean_of_k
from pdiff.memorization import Group, generalization, heldout_test, nearest_distances


def test_nearest_distances_hand_computed() -> None:
    references = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    assert nearest_distances(torch.tensor([[3.0, 5.0], [0.0, 0.4]]), references).tolist() == pytest.approx([1, 0.4])
    spread = nearest_distances(references, references, exclude_self=True)
    assert spread.tolist() == pytest.approx([1.0, 18 ** 0.5, 1.0])
    assert nearest_distances(references, references).tolist() == [0, 0, 0]


def test_nearest_distances_in_blocks_of_rows(monkeypatch) -> None:
    """The direct recomputation taken a few rows at a time gives what it gives on all rows at once."""
    generator = torch.Generator().manual_seed(3)
    vectors, references = torch.randn(11, 4, generator=generator), torch.randn(30, 4, generator=generator)
    whole = nearest_distances(vectors, references)
    monkeypatch.setattr(memorization, "BLOCK_BYTES", 8 * 4 * 3)  # blocks of 3 rows: 3, 3, 3, 2
    torch.testing.assert_close(nearest_distances(vectors, references), whole, rtol=1e-12, atol=0)
    assert nearest_distances(references[:5], references).tolist() == [0] * 5


def test_generalization_copies_and_fresh_samples() -> None:
    generator = torch.Generator().manual_seed(11)
    training, heldout, fresh = (torch.randn(m, 16, generator=generator) for m in (150, 150, 150))
    copies = generalization(training[:60], training, heldout)
    assert copies.coverage == copies.coverage_ci_low == copies.coverage_ci_high == 0
    assert copies.memorization_ratio_median == 0 and copies.distance_to_training.eq(0).all()
    noisy = generalization(training[:60] + 1e-3 * torch.randn(60, 16, generator=generator), training, heldout)
    assert noisy.coverage == 0  # a copy plus a little noise is not closer by the margin
    reference = generalization(heldout, training, heldout, is_heldout=True, margin=0)  # leave-one-out
    new = generalization(fresh, training, heldout, margin=0)
    assert abs(new.coverage - reference.coverage) < 0.15 and 0.3 < reference.coverage < 0.7  # ~ M / (M + T)
    assert new.coverage_ci_low < new.coverage < new.coverage_ci_high
    assert 0.8 < new.memorization_ratio_median < 1.25 and 0.8 < reference.memorization_ratio_median < 1.25
    assert generalization(fresh, training, heldout).coverage < new.coverage  # the margin makes covering harder
    record = new.as_dict()
    assert len(record["distance_to_training"]) == len(record["distance_to_heldout"]) == 150
    assert record["coverage_size"] == 150 and record["coverage_margin"] == 0
    json.dumps(record)


def test_coverage_compares_groups_of_equal_size() -> None:
    """More models cover more: coverage of a subset size is the exact expectation over random subsets."""
    generator = torch.Generator().manual_seed(12)
    training, heldout, fresh = (torch.randn(m, 8, generator=generator) for m in (60, 30, 120))
    full, small = (generalization(fresh, training, heldout, size=s, margin=0) for s in (None, 20))
    assert small.coverage < full.coverage and small.coverage_size == 20
    subsets = [generalization(fresh[torch.randperm(120, generator=generator)[:20]], training, heldout, margin=0)
               for _ in range(400)]
    assert np.mean([g.coverage for g in subsets]) == pytest.approx(small.coverage, abs=0.02)


def group(vectors: torch.Tensor, generator: torch.Generator) -> Group:
    """Models with made-up test correctness [M, 40] and val accuracies [M]: the held-out test needs them."""
    return Group(vectors, torch.rand(len(vectors), 40, generator=generator) < 0.8, torch.rand(len(vectors),
                 generator=generator))


def trajectory(start: torch.Tensor, steps: int, generator: torch.Generator) -> torch.Tensor:
    """A random walk of `steps` checkpoints [steps, D] from `start` [D], with a drift shared by every walk."""
    drift = torch.linspace(0, 1, start.numel())
    return start + (drift + torch.randn(steps, start.numel(), generator=generator)).cumsum(0) * 0.1


def test_heldout_test_tells_averages_and_interpolations_from_copies() -> None:
    """On one trajectory split interleaved, copies of training checkpoints sit at ratio 0 and cover nothing, while
    interpolations between neighbours cover held-out checkpoints and averages sit as near the held-out ones as the
    training ones: the test separates them, on groups of the same size. There the held-out checkpoints cover
    each other not at all (each one's neighbours are training checkpoints); on an independent trajectory (the
    run split) they do, and interpolations of the first trajectory no longer cover."""
    generator = torch.Generator().manual_seed(5)
    walk = trajectory(torch.zeros(16), 60, generator)
    heldout_rows = torch.arange(4, 60, 5)  # interleaved: every 5th
    training = walk[torch.tensor([i for i in range(60) if i not in heldout_rows.tolist()])]
    copies = group(training[torch.randint(len(training), (50,), generator=generator)], generator)
    baselines = {"mean_of_k": group(mean_of_k(training, 4, 80, generator), generator),
                 "interpolation": group(interpolation(training, 30, generator), generator)}
    record = heldout_test(copies, baselines, group(walk[heldout_rows], generator), training)
    assert record["models_per_group"] == 30 and record["coverage_size"] == 11 and record["heldout_checkpoints"] == 12
    assert record["generated"]["models"] == 30 and all(b["models"] == 30 for b in record["baselines"].values())
    assert record["generated"]["memorization_ratio_median"] == 0 and record["generated"]["coverage"] == 0
    interpolated = record["baselines"]["interpolation"]
    assert interpolated["memorization_ratio_median"] > 0.1 and interpolated["coverage_ci_low"] > 0
    assert record["baselines"]["mean_of_k"]["memorization_ratio_median"] > 0.8
    assert record["reference"]["coverage"] == 0 and record["reference"]["models"] == 12
    for name, figures in record["baselines"].items():
        closeness = figures["comparisons"]["median_memorization_ratio"]
        assert (closeness["group"], closeness["versus"], closeness["verdict"]) == ("generated", name, "lower")
        assert figures["comparisons"]["mean_test_accuracy"]["metric"] == "mean_test_accuracy"
    assert set(record["baselines"]) == {"mean_of_k", "interpolation"}
    json.dumps(record)
    second = trajectory(torch.zeros(16), 60, generator)[heldout_rows]  # the run split: another walk's checkpoints
    run = heldout_test(copies, {"interpolation": group(interpolation(walk, 30, generator), generator)},
                       group(second, generator), walk)
    assert run["baselines"]["interpolation"]["coverage"] < interpolated["coverage"]
    assert run["baselines"]["interpolation"]["memorization_ratio_median"] < interpolated["memorization_ratio_median"]
    assert run["reference"]["coverage"] > 0.5
