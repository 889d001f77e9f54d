"""A run's results in plain words (pdiff.words): generated first on the plane, and the summary says what
the verdicts say."""

from pdiff.words import dominance_words, summary_in_words


def comparison(metric: str, verdict: str, difference: float, low: float | None, high: float | None,
               group: str = "generated", versus: str = "original", scope: str = "generator") -> dict:
    return {"group": group, "versus": versus, "metric": metric, "difference": difference, "ci_low": low,
            "ci_high": high, "p_value": None, "verdict": verdict, "scope": scope}


def placed(verdict: str, group: str, scope: str = "generator") -> dict:
    """A dominance record of `group` against the generated models (its component comparisons left out)."""
    return {**comparison("dominance", verdict, None, None, None, group=group, versus="generated", scope=scope),
            "margin": 0.0025}


def test_dominance_words_put_generated_first_and_mark_an_earlier_rule_s_words() -> None:
    assert dominance_words(placed("generated is dominated by", "mean_of_k")) == (
        "generated is dominated by mean_of_k")
    assert dominance_words(placed("not resolved", "gaussian")) == "generated vs gaussian: not resolved"
    earlier = comparison("dominance", "undecided", None, None, None, group="gaussian", versus="generated")
    assert dominance_words(earlier) == "generated vs gaussian: undecided (earlier rule)"


def test_the_summary_in_words_says_what_the_verdicts_say_and_no_more() -> None:
    results = {"models": [{"group": "generated"}], "comparisons": [
        comparison("mean_test_accuracy", "higher", 0.003, 0.001, 0.005),
        comparison("median_test_accuracy", "descriptive (no verdict)", 0.004, None, None),
        comparison("best_val_chosen_test_accuracy", "descriptive (no verdict)", -0.01, None, None),
        comparison("median_max_iou", "no detectable difference", -0.005, -0.02, 0.01),
        placed("generated is dominated by", "mean_of_k"), placed("generated dominates", "noise@0.001"),
        placed("trade-off: generated more accurate, less novel than", "finetune"),
        placed("generated dominates", "ensemble"),
        comparison("mean_test_accuracy", "lower", -0.01, -0.02, -0.005, group="ensemble")]}
    assert summary_in_words(results) == (
        "The generated models' mean test accuracy is higher than the checkpoints' (+0.30 points [+0.10, +0.50], "
        "this generator), and their similarity to the checkpoints is not detectably different from the "
        "checkpoints' similarity to each other (median max IoU -0.005 [-0.020, +0.010]). On the accuracy-novelty "
        "plane: generated is dominated by mean_of_k; generated dominates noise@0.001 and ensemble; trade-off: "
        "generated more accurate, less novel than finetune.")


def test_the_summary_in_words_names_the_method_scope_and_a_lower_accuracy() -> None:
    results = {"models": [{"group": "generated", "generator": g} for g in (0, 0, 1, 1)], "comparisons": [
        comparison("mean_test_accuracy", "lower", -0.01, -0.02, -0.004, scope="method"),
        comparison("median_max_iou", "higher", 0.1, 0.05, 0.15),
        placed("not resolved", "gaussian", scope="method")]}
    assert summary_in_words(results) == (
        "The generated models' mean test accuracy is lower than the checkpoints' (-1.00 points [-2.00, -0.40], "
        "p-diff on this task, 2 generators), and their similarity to the checkpoints is higher than the "
        "checkpoints' similarity to each other (median max IoU +0.100 [+0.050, +0.150], the models of 2 "
        "generators, pooled). On the accuracy-novelty plane: generated vs gaussian: not resolved.")
    assert summary_in_words({"models": [], "comparisons": []}) == ""
