"""Claims and the accuracy-novelty plane, decided by one rule from the 95% CIs of `pdiff.stats`.

Every claim and every place on the plane, for every bench script, the terminal, the report and the card:
- an effect claim (a source claims a difference of size d > 0 in one direction; the CI is oriented so that
  direction is positive) is *reproduced* when the CI excludes 0 and its upper end reaches d/2, *refuted* when its
  upper end is below d/2 (whatever effect there is, it is under half the claimed one), else *not resolvable*. A
  qualitative claim ("less similar") names the smallest effect that would matter and is decided as an effect
  claim of that size;
- an equivalence claim ("matches") with margin m is *reproduced* when the CI lies inside [-m, m], *refuted* when
  it lies wholly outside, else *not resolvable*;
- on the accuracy-novelty plane, generated is the subject: "generated dominates B", "generated is dominated by
  B", a trade-off (more accurate and less novel, or less accurate and more novel), or "not resolved".
Every bound is strict where it excludes a value and inclusive where it reaches one, in every branch alike.
"""

from __future__ import annotations

from .stats import SCOPES, Comparison

CLAIM_VERDICTS = ("reproduced", "refuted", "not resolvable")
# Mean accuracy differences within +-ACCURACY_MARGIN (a fraction: 0.25 points) count as equal, in equivalence claims
# and in "non-inferior" on the accuracy-novelty plane. A margin must be smaller than the effects that are claimed
# (the paper's Table 1 gains are 0.3-0.52 points), else one CI could reproduce both "matches" and "beats"; at 0.25
# points a CI inside the margin also refutes a claimed gain of 0.5 points (upper end below d/2), so the two rules
# never disagree on one interval.
ACCURACY_MARGIN = 0.0025
# generated (the subject) against a baseline B, said as f"{verdict} {B}"; the last one as "generated vs B: ..."
DOMINANCE_VERDICTS = ("generated dominates", "generated is dominated by",
                      "trade-off: generated more accurate, less novel than",
                      "trade-off: generated less accurate, more novel than", "not resolved")


def decide_claim(ci_low: float | None, ci_high: float | None, claimed: float | None = None,
                 margin: float | None = None) -> str:
    """A claim's verdict (one of CLAIM_VERDICTS) from our 95% CI of the difference the claim is about.

    Give exactly one of `claimed` (an effect claim: the signed size the source claims, in the CI's units; the CI
    is oriented so that its sign is positive) and `margin` (an equivalence claim: the difference lies within
    +-margin). Effect: *reproduced* when the oriented CI excludes 0 and its upper end reaches |claimed| / 2,
    *refuted* when its upper end is below |claimed| / 2, else *not resolvable*. Equivalence: *reproduced* when the
    CI lies inside [-margin, margin], *refuted* when it lies wholly outside, else *not resolvable*. A difference
    without a CI (a descriptive one) resolves nothing: *not resolvable*.
    """
    if (claimed is None) == (margin is None):
        raise ValueError("decide_claim needs exactly one of claimed (an effect) and margin (an equivalence)")
    if claimed is not None and claimed == 0 or margin is not None and margin <= 0:
        raise ValueError(f"an effect claim needs a size other than 0 and an equivalence a margin above 0, got "
                         f"claimed={claimed}, margin={margin}")
    if ci_low is None or ci_high is None:
        return CLAIM_VERDICTS[2]
    if margin is not None:
        if -margin <= ci_low and ci_high <= margin:
            return CLAIM_VERDICTS[0]
        return CLAIM_VERDICTS[1] if ci_low > margin or ci_high < -margin else CLAIM_VERDICTS[2]
    low, high = (ci_low, ci_high) if claimed > 0 else (-ci_high, -ci_low)
    if high < abs(claimed) / 2:
        return CLAIM_VERDICTS[1]
    return CLAIM_VERDICTS[0] if low > 0 else CLAIM_VERDICTS[2]


def dominance_verdict(accuracy: tuple[float, float], similarity: tuple[float, float],
                      margin: float = ACCURACY_MARGIN) -> str:
    """generated's place against a baseline B on the accuracy-novelty plane, one of DOMINANCE_VERDICTS.

    accuracy: 95% CI (low, high) of generated's mean test accuracy minus B's; similarity: of generated's median max
    IoU (or another similarity) minus B's; margin: the accuracy difference that counts as equal. Generated
    dominates when its accuracy is non-inferior (CI lower end above -margin) and its similarity lower (CI upper end
    below 0); it is dominated in the mirror case (upper end below margin, lower end above 0). Failing both, a
    trade-off needs both differences resolved (CIs excluding 0) in opposite directions; else "not resolved".
    """
    (a_low, a_high), (s_low, s_high) = accuracy, similarity
    if a_low > -margin and s_high < 0:
        return DOMINANCE_VERDICTS[0]
    if a_high < margin and s_low > 0:
        return DOMINANCE_VERDICTS[1]
    if a_low > 0 and s_low > 0:
        return DOMINANCE_VERDICTS[2]
    if a_high < 0 and s_high < 0:
        return DOMINANCE_VERDICTS[3]
    return DOMINANCE_VERDICTS[4]


def dominance(accuracy: Comparison, similarity: Comparison, group: str, versus: str = "generated",
              margin: float = ACCURACY_MARGIN) -> dict:
    """Where `versus` (generated) stands against the baseline `group` in the accuracy-novelty plane.

    The critique of p-diff (Zeng et al. 2025) places every method on two axes, accuracy and similarity to the
    training checkpoints: a generator is only interesting if no cheap baseline (noise added to checkpoints,
    their mean, ...) is at least as accurate while being less similar. Both inputs are GENERATED minus
    BASELINE: `accuracy` of mean test accuracy, `similarity` of e.g. median max IoU to the originals. The verdict
    is `dominance_verdict`'s. The record has the Comparison's keys, with None where a number has no meaning, the
    margin, both component comparisons ("accuracy", "similarity") and the narrower scope of the two (a
    method-scope accuracy beside a one-generator similarity speaks for the generators' models only).
    """
    for c in (accuracy, similarity):
        if (c.group, c.versus) != (versus, group):
            raise ValueError(f"dominance needs {versus} minus {group}, got {c.metric} of {c.group} minus {c.versus}")
    outcome = dominance_verdict((accuracy.ci_low, accuracy.ci_high), (similarity.ci_low, similarity.ci_high), margin)
    return {"group": group, "versus": versus, "metric": "dominance", "difference": None, "ci_low": None,
            "ci_high": None, "p_value": None, "verdict": outcome,
            "scope": accuracy.scope if similarity.scope == accuracy.scope else SCOPES[0],  # the narrower of the two
            "margin": margin, "accuracy": accuracy.as_dict(), "similarity": similarity.as_dict()}
