import pytest
from bench.common import share_with_interval
from bench.whole_networks import target_mean


@pytest.mark.parametrize(("low", "high", "expected"), [
    (-0.004, 0.006, "met"),  # the whole CI within +-1 point
    (-0.010, 0.010, "met"),  # its edges on the bounds
    (0.0139, 0.0204, "not met"),  # above by more than a point (mnist-mlp-full: the generated models are better)
    (-0.030, -0.012, "not met"),
    (0.004, 0.016, "undecided"),  # holds both a small and a too-large difference
])
def test_the_mean_target_is_met_only_when_the_whole_ci_lies_within_one_point(low: float, high: float,
                                                                            expected: str) -> None:
    assert target_mean({"ci_low": low, "ci_high": high}) == expected


def test_the_inside_share_comes_with_its_wilson_interval() -> None:
    assert share_with_interval(99, 100) == "99% [94.6, 99.8]"
    assert share_with_interval(100, 100) == "100% [96.3, 100.0]"  # all inside: the interval still leaves room
