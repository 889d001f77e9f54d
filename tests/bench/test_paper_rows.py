import pytest
import torch

from bench import paper_rows


def test_stats_use_the_test_max_and_the_val_choice() -> None:
    s = paper_rows.stats(torch.tensor([0.9, 0.5, 0.7]), torch.tensor([0.80, 0.95, 0.85]))
    assert (s["best"], s["val_best"], s["median"]) == pytest.approx((95.0, 80.0, 85.0))


def test_section_is_rendered_and_replaced_in_place(tmp_path) -> None:
    acc = {"best": 90.0, "val_best": 89.0, "mean": 88.0, "median": 88.5}
    row = {"dim": 16, "collect_s": 12.0, "original": acc, "ensemble": 88.2,
           "seeds": [{**acc, "best": b, "seconds": 60.0} for b in (90.0, 91.0, 92.0)]}
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nkept\n")
    for _ in range(2):  # the second write replaces the first
        section = paper_rows.render({"mnist-s1": row}, {"mnist-s2": False}, ["cifar10-resnet18"])
        paper_rows.write_section(paper_rows.SECTION, section, path)
    text = path.read_text()
    assert text.count("## The paper's rows") == 1 and "kept" in text
    assert "| mnist-s1 | 16 | 90.0 / 88.0 / 88.5 | 88.2 | 91.0 ± 1.0 |" in text
    assert "87.4 / 87.4 / 88.4" in text and "`cifar10-resnet18`: GPU preset" in text
