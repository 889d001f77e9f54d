import json

import numpy as np
import pytest
import torch

from pdiff.memorization import generalization, nearest_distances


def test_nearest_distances_hand_computed() -> None:
    references = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    assert nearest_distances(torch.tensor([[3.0, 5.0], [0.0, 0.4]]), references).tolist() == pytest.approx([1, 0.4])
    spread = nearest_distances(references, references, exclude_self=True)
    assert spread.tolist() == pytest.approx([1.0, 18 ** 0.5, 1.0])
    assert nearest_distances(references, references).tolist() == [0, 0, 0]


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
