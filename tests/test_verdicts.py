import json

import pytest

from pdiff.stats import Comparison, verdict
from pdiff.verdicts import ACCURACY_MARGIN, DOMINANCE_VERDICTS, decide_claim, dominance, dominance_verdict


def comparison(group: str, versus: str, low: float, high: float) -> Comparison:
    return Comparison(group, versus, "m", (low + high) / 2, low, high, None, verdict(low, high))


@pytest.mark.parametrize("low, high, claimed, expected", [
    (0.001, 0.004, 0.005, "reproduced"),  # excludes 0, upper end 0.004 reaches d/2 = 0.0025
    (0.001, 0.0025, 0.005, "reproduced"),  # reaching d/2 exactly is enough
    (0.0001, 0.002, 0.005, "refuted"),  # shows an effect, but under half the claimed one
    (-0.002, 0.002, 0.005, "refuted"),  # holds 0, and excludes half the claimed size
    (-0.004, -0.001, 0.005, "refuted"),  # the opposite direction
    (-0.001, 0.004, 0.005, "not resolvable"),  # holds both 0 and d/2
    (0.0, 0.004, 0.005, "not resolvable"),  # a lower end at 0 does not exclude 0
    (-0.004, -0.001, -0.005, "reproduced"),  # a claimed loss: the CI is oriented, so its upper end is 0.004
    (0.001, 0.004, -0.005, "refuted"),
    (-0.004, 0.001, -0.005, "not resolvable"),
    (None, None, 0.005, "not resolvable"),  # a descriptive difference decides nothing
])
def test_effect_claims(low, high, claimed, expected) -> None:
    assert decide_claim(low, high, claimed=claimed) == expected


@pytest.mark.parametrize("low, high, expected", [
    (-0.002, 0.002, "reproduced"),
    (-0.0025, 0.0025, "reproduced"),  # inside [-m, m], ends included
    (0.003, 0.005, "refuted"),  # wholly above m
    (-0.006, -0.0026, "refuted"),  # wholly below -m
    (0.0025, 0.005, "not resolvable"),  # touches m: not wholly outside
    (-0.001, 0.004, "not resolvable"),
    (-0.004, 0.004, "not resolvable"),
])
def test_equivalence_claims(low, high, expected) -> None:
    assert decide_claim(low, high, margin=ACCURACY_MARGIN) == expected


def test_a_claim_is_an_effect_or_an_equivalence() -> None:
    for wrong in ({}, {"claimed": 0.01, "margin": 0.01}, {"claimed": 0.0}, {"margin": 0.0}):
        with pytest.raises(ValueError):
            decide_claim(-0.01, 0.01, **wrong)


def test_the_accuracy_margin_stays_below_half_the_paper_s_mean_gain() -> None:
    # a CI inside the margin must refute the paper's mean gain (0.52 points): "matches" and "beats" never both hold
    assert decide_claim(-ACCURACY_MARGIN, ACCURACY_MARGIN, claimed=0.0052) == "refuted"
    assert ACCURACY_MARGIN <= 0.0025


DOMINATES, DOMINATED, MORE_ACCURATE, LESS_ACCURATE, NOT_RESOLVED = DOMINANCE_VERDICTS


@pytest.mark.parametrize("accuracy, similarity, expected", [
    ((-0.002, 0.001), (-0.02, -0.01), DOMINATES),  # non-inferior (lower end above -m) and less similar
    ((0.001, 0.004), (-0.02, -0.01), DOMINATES),
    ((-0.0025, 0.001), (-0.02, -0.01), NOT_RESOLVED),  # lower end at -m is not above it; no trade-off either
    ((-0.002, 0.001), (-0.02, 0.0), NOT_RESOLVED),  # similarity not resolved
    ((-0.001, 0.002), (0.01, 0.02), DOMINATED),  # the baseline non-inferior (upper end below m) and less similar
    ((-0.006, -0.003), (0.01, 0.02), DOMINATED),
    ((0.001, 0.002), (0.01, 0.02), DOMINATED),  # more accurate, but by less than the margin: still dominated
    ((0.001, 0.004), (0.01, 0.02), MORE_ACCURATE),  # resolved higher, possibly by more than m, and more similar
    ((-0.006, -0.003), (-0.02, -0.01), LESS_ACCURATE),  # resolved lower beyond -m, and less similar
    ((-0.004, -0.0001), (-0.02, -0.01), LESS_ACCURATE),
    ((-0.004, 0.0), (-0.02, -0.01), NOT_RESOLVED),  # accuracy holds 0: neither non-inferior nor resolved lower
    ((0.0, 0.004), (0.01, 0.02), NOT_RESOLVED),
    ((-0.001, 0.001), (-0.01, 0.01), NOT_RESOLVED),
])
def test_dominance_verdict(accuracy, similarity, expected) -> None:
    assert dominance_verdict(accuracy, similarity) == expected


def test_dominance_record_carries_both_components() -> None:
    accuracy, similarity = comparison("generated", "noise@0.05", -0.001, 0.002), comparison(
        "generated", "noise@0.05", -0.02, -0.01)
    record = dominance(accuracy, similarity, "noise@0.05")
    assert record == {"group": "noise@0.05", "versus": "generated", "metric": "dominance", "difference": None,
                      "ci_low": None, "ci_high": None, "p_value": None, "verdict": DOMINATES, "scope": "generator",
                      "margin": ACCURACY_MARGIN, "accuracy": accuracy.as_dict(), "similarity": similarity.as_dict()}
    assert json.loads(json.dumps(record)) == record


def test_dominance_needs_generated_minus_baseline() -> None:
    with pytest.raises(ValueError, match="generated minus mean_of_k"):
        dominance(comparison("mean_of_k", "generated", 0.001, 0.002), comparison("generated", "mean_of_k", -0.2, -0.1),
                  "mean_of_k")
