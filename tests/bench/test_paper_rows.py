import pytest
import torch

from bench import common, paper_rows


def test_stats_use_the_test_max_and_the_val_choice() -> None:
    s = paper_rows.stats(torch.tensor([0.9, 0.5, 0.7]), torch.tensor([0.80, 0.95, 0.85]))
    assert (s["best"], s["val_best"], s["median"]) == pytest.approx((95.0, 80.0, 85.0))


def test_section_is_rendered_and_replaced_in_place(tmp_path) -> None:
    acc = {"best": 90.0, "val_best": 89.0, "mean": 88.0, "median": 88.5}
    row = {"dim": 16, "collect_s": 12.0, "original": acc, "ensemble": 88.2,
           "seeds": [{**acc, "best": b, "seconds": 60.0} for b in (90.0, 91.0, 92.0)]}
    path = tmp_path / "BENCHMARKS.md"
    results = common.results("python -m bench.paper_rows --tasks mnist-s1", rows={"mnist-s1": row},
                             unmeasured_cpu={"mnist-s1": True, "mnist-s2": False}, gpu_tasks=["cifar10-resnet18"])
    for _ in range(2):  # the second write replaces the first
        common.write_section(paper_rows.NAME, paper_rows.render(results), path)
    text = path.read_text()
    assert text.count("## The paper's rows") == 1
    assert "| mnist-s1 | 16 | 90.0 / 88.0 / 88.5 | 88.2 | 91.0 ± 1.0 |" in text
    assert "87.4 / 87.4 / 88.4" in text and "`cifar10-resnet18`: GPU preset" in text
    assert "`mnist-s2`: CPU preset, its dataset is not in the data folder here" in text
    assert "`mnist-s1`: CPU preset" not in text  # measured
