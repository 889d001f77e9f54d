"""bench.gpu without a GPU: the projection's step counts, and the section it renders and where it may write it."""

import pytest

from bench import common, gpu
from pdiff.presets import load_config

PER_STEP = {"base_step_s": 1.0, "collect_step_s": 2.0, "autoencoder_step_s": 3.0, "diffusion_step_s": 4.0,
            "sampling_step_s": 5.0, "eval_image_model_s": 1e-4}


def test_projection_counts_the_presets_steps_and_models() -> None:
    p = gpu.project(load_config("cifar100-resnet18"), PER_STEP)
    # 45000 training images (50000 less val 5000) in batches of 128; 200 epochs; the epoch recipe: K = 200 epochs
    assert (p["steps_per_epoch"], p["base_steps"], p["collect_steps"]) == (352, 70400, 70400)
    # 200 originals, 1 ensemble, 200 generated, 3 noise strengths x 200, finetune, mean_of_k, gaussian x 200
    assert p["evaluated_models"] == 1601 and p["sampling_steps"] == 1000
    val_test, val = 1e-4 * 15000, 1e-4 * 5000
    assert p["stage_s"] == pytest.approx({
        "base": 70400.0, "collect": 2 * 70400 + 200 * val_test, "train": 3 * 30000 + 4 * 30000 + 400 * val,
        "generate": 5000.0, "evaluate": 1601 * val_test + 200 * 10 * 2.0})
    assert p["total_s"] == pytest.approx(sum(p["stage_s"].values()))


def test_the_section_says_what_did_not_finish_and_a_toy_run_stays_out_of_benchmarks(tmp_path) -> None:
    tests = {"passed": 10, "failed": 1, "skipped": 0, "seconds": 12.5,
             "tests": [{"name": "test_x", "seconds": 1.0, "outcome": "failure", "message": "assert 1 == 2"}]}
    results = common.results("python -m bench.gpu --device cpu --toy", "cpu", toy=True, steps={
        "tests": {"status": "ok", "seconds": 20.0, "limit_s": 150, "figures": tests},
        "evaluation": {"status": "timeout", "seconds": 90.0, "limit_s": 90, "log_tail": "loading\nstill going\n"},
        "probe-cifar10-vit-tiny": {"status": "not run", "reason": "the budget was spent"}})
    section = gpu.render(results)
    assert "No figure below is a GPU measurement" in section
    assert "10 passed, 1 failed, 0 skipped" in section and "`test_x`: failure: assert 1 == 2" in section
    assert "- evaluation: timeout (last output: `still going`)" in section
    assert "- probe-cifar10-vit-tiny: not run: the budget was spent" in section
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("<!-- bench:stages -->\nkept\n<!-- /bench:stages -->\n")
    for _ in range(2):  # the second write replaces the first
        gpu.write_benchmarks(results, path)
    assert path.read_text().count("## GPU") == 1 and "kept" in path.read_text()
    with pytest.raises(SystemExit, match="no GPU measurement"):
        gpu.write_benchmarks(results, gpu.BENCHMARKS)
