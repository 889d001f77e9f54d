"""A run's results in plain words: differences with their CIs, what a CI speaks for, places on the
accuracy-novelty plane and one sentence per verdict, as the terminal, the report, the model card and the bench
scripts say them (from a results.json dict; nothing is computed again).
"""

from __future__ import annotations

from . import verdicts

ACCURACY_METRICS = {"mean_test_accuracy": "mean test accuracy", "median_test_accuracy": "median test accuracy",
                    "best_val_chosen_test_accuracy": "test accuracy of the val-chosen best"}
NOVELTY_METRICS = {"median_max_iou": "median max IoU to the originals",
                   "median_l2_to_original": "median L2 to the nearest original"}
ACCURACY_WORDS = {"higher": "higher than", "lower": "lower than", "no detectable difference": "not detectably "
                  "different from"}


def points_with_ci(c: dict, scale: float = 100) -> str:
    """'+0.02 [-0.04, +0.08]': a comparison's difference and CI, in points (scale 100) or raw units (scale 1);
    a descriptive difference (no CI) is the difference alone."""
    digits = 2 if scale == 100 else 3
    difference = f"{scale * c['difference']:+.{digits}f}"
    if c["ci_low"] is None:
        return difference
    return f"{difference} [{scale * c['ci_low']:+.{digits}f}, {scale * c['ci_high']:+.{digits}f}]"


def in_points(c: dict) -> str:
    """'+0.02 points [-0.04, +0.08]' ('+0.02 points' for a descriptive difference): an accuracy comparison."""
    figure = points_with_ci(c)
    return figure.replace(" [", " points [") if " [" in figure else f"{figure} points"


def scope_words(c: dict, generators: int) -> str:
    """What a comparison's CI speaks for, in words: "this generator", "p-diff on this task, 3 generators", ..."""
    if c.get("scope") == "method":
        return f"p-diff on this task, {generators} generators"
    if "generated" not in (c["group"], c["versus"]):
        return "these models"
    return "this generator" if generators == 1 else f"the models of {generators} generators, pooled"


def dominance_words(c: dict | list[dict]) -> str:
    """Dominance records of one verdict (baselines' records, against the generated models) with generated as the
    subject: "generated dominates noise@0.001 and ensemble", "trade-off: generated more accurate, less novel than
    finetune", "generated vs gaussian: not resolved" (the words of `pdiff.verdicts.DOMINANCE_VERDICTS`)."""
    records = c if isinstance(c, list) else [c]
    verdict, groups = records[0]["verdict"], _and([r["group"] for r in records])
    if "margin" not in records[0]:  # decided by an earlier pdiff (three words, no margin): said as then, and marked
        said = {"is dominated": f"generated is dominated by {groups}", "undecided": f"generated vs {groups}: undecided"}
        return said.get(verdict, f"{verdict} {groups}") + " (earlier rule)"
    if verdict == verdicts.DOMINANCE_VERDICTS[-1]:
        return f"generated vs {groups}: {verdict}"
    return f"{verdict} {groups}"


def generator_count(results: dict) -> int:
    """How many trained generators made the generated models of results.json (1 unless train.generators > 1)."""
    return len({r.get("generator", 0) for r in results.get("models", []) if r["group"] == "generated"})


def verdict_parts(results: dict) -> list[tuple[str, str, str]]:
    """(pair, finding, scope) for each comparison of results.json, e.g. ("generated vs original", "mean test
    accuracy: +0.02 points [-0.04, +0.08], no detectable difference", "this generator"); a dominance record is
    ("accuracy-novelty plane", "generated is dominated by mean_of_k", scope). Median and val-chosen best
    differences are descriptive (no CI, no verdict)."""
    generators = generator_count(results)
    parts = []
    for c in results.get("comparisons", []):
        if c["metric"] == "dominance":
            parts.append(("accuracy-novelty plane", dominance_words(c), scope_words(c, generators)))
            continue
        if c["metric"] in ACCURACY_METRICS:
            figure, name = in_points(c), ACCURACY_METRICS[c["metric"]]
        else:
            figure, name = points_with_ci(c, 1), NOVELTY_METRICS[c["metric"]]
        parts.append((f"{c['group']} vs {c['versus']}", f"{name}: {figure}, {c['verdict']}",
                      scope_words(c, generators)))
    return parts


def verdict_lines(results: dict) -> list[str]:
    """One line per comparison of results.json, e.g. 'generated vs original, mean test accuracy: +0.02 points
    [-0.04, +0.08], no detectable difference (this generator)'; dominance records read 'generated is dominated
    by mean_of_k on the accuracy-novelty plane (this generator)'."""
    return [f"{finding} on the {pair} ({scope})" if pair == "accuracy-novelty plane" else f"{pair}, {finding} ({scope})"
            for pair, finding, scope in verdict_parts(results)]


def verdict_groups(results: dict) -> dict[tuple[str, str], list[str]]:
    """The findings of `verdict_parts` under (pair, scope), in results.json's order: a heading and its scope said
    once, and lines short enough for a terminal."""
    groups: dict[tuple[str, str], list[str]] = {}
    for pair, finding, scope in verdict_parts(results):
        groups.setdefault((pair, scope), []).append(finding)
    return groups


def summary_in_words(results: dict) -> str:
    """A few sentences on the generated models, from results.json's verdicts alone: their mean test accuracy and
    their similarity to the checkpoints (median max IoU), each against the originals with its CI and scope, then
    the dominance records. The median and the val-chosen best are descriptive (no verdict) and left out; "" when
    results.json holds none of these comparisons."""
    generators = generator_count(results)
    found = {c["metric"]: c for c in results.get("comparisons", []) if c["group"] == "generated"
             and c["versus"] == "original"}
    clauses, scopes = [], []
    if "mean_test_accuracy" in found:
        c = found["mean_test_accuracy"]
        scopes.append(scope_words(c, generators))
        clauses.append(f"mean test accuracy is {ACCURACY_WORDS[c['verdict']]} the checkpoints' "
                       f"({in_points(c)}, {scopes[-1]})")
    if "median_max_iou" in found:
        c = found["median_max_iou"]
        scope = scope_words(c, generators)
        said = "" if scope in scopes else f", {scope}"
        scopes.append(scope)
        clauses.append(f"similarity to the checkpoints is {ACCURACY_WORDS[c['verdict']]} the checkpoints' "
                       f"similarity to each other (median max IoU {points_with_ci(c, 1)}{said})")
    sentences = []
    if clauses:
        sentences.append("The generated models' " + ", and their ".join(clauses) + ".")
    dominance = [c for c in results.get("comparisons", []) if c["metric"] == "dominance"]
    if dominance:
        said = [dominance_words([c for c in dominance if c["verdict"] == verdict])
                for verdict in dict.fromkeys(c["verdict"] for c in dominance)]
        scope = scope_words(dominance[0], generators)
        where = "" if scope in scopes else f" ({scope})"
        sentences.append(f"On the accuracy-novelty plane{where}: {'; '.join(said)}.")
    return " ".join(sentences)


def _and(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
