from bench.conditioning import findings

NAMES = ["min", "median", "max", "max + 1 step"]


def comparisons(verdict: str) -> dict:
    return {versus: {metric: {"verdict": verdict} for metric in ("mean_test_accuracy", "best_val_chosen_test_accuracy")}
            for versus in ("original", "ensemble")}


def test_findings_say_whether_the_accuracy_follows_the_target() -> None:
    asked = [0.970, 0.975, 0.980, 0.981]
    follows = {(0.0, n): (a, a - 0.002, comparisons("higher")) for n, a in zip(NAMES, asked, strict=True)}
    stuck = {(1.0, n): (a, 0.975 - 0.001 * (n == "max"), comparisons("no detectable difference"))
             for n, a in zip(NAMES, asked, strict=True)}
    text = findings({**follows, **stuck}, [0.0, 1.0], NAMES).splitlines()
    assert text[0].startswith("- w = 0: the mean validation accuracy reached is monotone")
    assert "moves +1.00 points for +1.00 asked (1.00 of the way)" in text[0]
    assert "vs the originals is higher, vs the ensemble higher" in text[0]
    assert "is not monotone" in text[1] and "moves -0.10 points for +1.00 asked (-0.10 of the way)" in text[1]
