"""The report from hand-made results: every figure is written, and the HTML renders in headless Chromium."""

import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest
import torch

from pdiff import report
from pdiff.evaluate import summarise
from pdiff.figures import plot_tsne
from pdiff.memorization import Group, heldout_test
from pdiff.report import write_report
from pdiff.similarity import similarity_summary
from pdiff.task import Task
from tests.conftest import copy_stages, tiny_config

GROUPS = ["original"] * 8 + ["ensemble"] + [g for g in ("generated", "noise@0.01", "noise@0.1", "mean_of_k")
                                             for _ in range(6)]
CONFIG = {"seed": 0, "description": "synthetic", "collect": {"subset": ["last_norm:2"]},
          "generate": {"sampler": "ddim"}}


def fake_results(groups: list[str], seed: int = 0) -> dict:
    """Results of models that each get a random tenth of 200 test examples wrong."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(200, dtype=torch.long)
    predictions = (torch.rand(len(groups), 200, generator=generator) < 0.1).long()
    accuracy = (predictions == labels).float().mean(1).tolist()
    records = [{"group": g, "index": i, "val_accuracy": a, "test_accuracy": a}
               for i, (g, a) in enumerate(zip(groups, accuracy, strict=True))]
    standardised = torch.randn(len(groups), 16, generator=generator)
    return {"task": "synthetic", "models": records, "summary": summarise(records),
            "baselines": {"n": 6, "noise_strengths": [0.01, 0.1], "mean_of_k": 4},
            "similarity": similarity_summary(predictions, labels, groups, standardised)}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results = fake_results(GROUPS)
    rng = np.random.default_rng(0)
    latents = {"original": rng.normal(size=(8, 4)), "generated": rng.normal(size=(6, 4))}
    runs = [results, fake_results(["original"] * 4 + GROUPS[8:], seed=1)]  # a second run with K = 4
    write_report(results, out, CONFIG, {"collect": 1.0}, latents=latents, runs=runs)
    return out


def test_every_figure_and_table(report_dir) -> None:
    text = (report_dir / "report.md").read_text()
    for figure in ["accuracy_hist.png", "accuracy_vs_similarity.png", "iou_bars.png", "tsne.png",
                   "similarity_vs_k.png"]:
        assert (report_dir / figure).stat().st_size > 1000 and f"![{figure}]({figure})" in text
    assert "| noise@0.1 | 6 |" in text and "L2 to nearest original" in text
    html = (report_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "src='http" not in html  # self-contained


def test_html_renders_in_headless_chromium(report_dir, tmp_path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    screenshot = tmp_path / "page.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}", "--window-size=1200,2000",
                    (report_dir / "report.html").as_uri()], check=True, capture_output=True, timeout=120)
    pixels = matplotlib.image.imread(screenshot)[..., :3]  # [H, W, 3] in 0..1
    assert pixels.shape[:2] == (2000, 1200)
    not_white = (pixels < 0.9).any(-1).mean()
    assert not_white > 0.02 and pixels.std() > 0.05, f"the page looks blank ({not_white:.1%} non-white pixels)"


def test_stage_alone_writes_the_report(tiny_run, tmp_path) -> None:
    root = copy_stages(tiny_run, tmp_path, ("collect", "train", "generate", "evaluate"))
    out = root / report.FOLDER
    out.mkdir()
    report.run(Task(tiny_config(), progress=False), root, out)
    assert {"report.md", "report.html", "tsne.png", "accuracy_vs_similarity.png"} <= {p.name for p in out.iterdir()}
    text = (out / "report.md").read_text()
    assert "| original | 12 |" in text
    assert "## Verdicts\n\nThe generated models' mean test accuracy is " in text  # the verdicts open in words


def test_a_conditioned_run_shows_its_target_beside_the_accuracy_reached(tmp_path) -> None:
    results = fake_results(GROUPS)
    val = [m["val_accuracy"] for m in results["models"] if m["group"] == "generated"]
    target = sorted(val)[3]  # the 3 generated models above it and any tied with it reach it
    write_report(results, tmp_path, CONFIG, {"collect": 1.0},
                 conditioning={"target": "q60", "target_accuracy": target, "guidance": 2.0})
    text = (tmp_path / "report.md").read_text()
    assert f"| target (q60) | {100 * target:.2f} |  |" in text
    mean = results["summary"]["generated"]
    assert f"| generated mean | {100 * mean['val_mean']:.2f} | {100 * mean['mean']:.2f} |" in text
    reached = sum(v >= target for v in val)
    assert f"guidance w = 2: {reached} of 6 generated models reach it" in text
    assert "Target accuracy" not in (write_report(results, tmp_path / "plain", CONFIG, {}).read_text())


def test_tsne_of_identical_latents(tmp_path) -> None:
    """K = 1: every latent is the same point; PCA's start would be NaN (a segfault in scikit-learn's t-SNE)."""
    plot_tsne({"original": np.ones((1, 8)), "generated": np.ones((40, 8))}, tmp_path / "tsne.png")
    assert (tmp_path / "tsne.png").stat().st_size > 0


def test_collapse_section_and_token_latents(tmp_path) -> None:
    """A collapsed run says so with the fix, and token latents [n, T, c] still make the t-SNE (flattened)."""
    results = fake_results(GROUPS)
    results["collapse"] = {"worst_original": 0.88, "resolution": 0.01, "share_below": 0.83, "collapsed": True}
    rng = np.random.default_rng(0)
    latents = {"original": rng.normal(size=(8, 5, 3)), "generated": rng.normal(size=(6, 5, 3))}
    write_report(results, tmp_path, CONFIG, {"collect": 1.0}, latents=latents)
    text = (tmp_path / "report.md").read_text()
    assert "## Collapse" in text and "83% of the generated models" in text
    assert (tmp_path / "tsne.png").stat().st_size > 1000


def heldout_record() -> dict:
    """results.json["memorization"] of random models: 6 generated, two baselines, 4 held-out checkpoints."""
    generator = torch.Generator().manual_seed(0)

    def group(m: int) -> Group:
        return Group(torch.randn(m, 8, generator=generator), torch.rand(m, 50, generator=generator) < 0.9,
                     torch.rand(m, generator=generator))

    return heldout_test(group(6), {"mean_of_k": group(6), "interpolation": group(9)}, group(4),
                        torch.randn(20, 8, generator=generator))


def test_the_heldout_test_is_one_table_row_per_group(tmp_path) -> None:
    results, record = fake_results(GROUPS), heldout_record()
    results["memorization"] = record
    write_report(results, tmp_path, CONFIG, {"collect": 1.0})
    text = (tmp_path / "report.md").read_text()
    assert "## Held-out test beside the simpler explanations" in text and "6 models per group" in text
    header, rows = report.heldout_test_table(record)
    assert [row[0] for row in rows] == ["heldout", "generated", "mean_of_k", "interpolation"]
    assert [row[1] for row in rows] == ["4", "6", "6", "6"]  # the baselines cut to the generated group's size
    ratio = record["baselines"]["interpolation"]["comparisons"]["median_memorization_ratio"]
    assert rows[3][3] == f"{ratio['difference']:+.3f} [{ratio['ci_low']:+.3f}, {ratio['ci_high']:+.3f}]"
    assert rows[0][3] == rows[1][3] == ""  # compared with no one
