"""The paper's ablations on a CPU task: K, parameter location, noise augmentation, sampling steps.

    python -m bench.ablations [--task mnist1d-convnet] [--studies k location noise steps] [--runs-dir runs/bench]

Runs `pdiff ablate TASK --study S` for each study (default values; finished variants are read back, not
redone; variants evaluate only their generated models, which is all the table compares) and writes their tables
into the "ablations" section of BENCHMARKS.md. Each study's figures are in
RUNS_DIR/TASK/ablation/STUDY/report.html.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pdiff.ablation import STUDIES, ablate, ablation_table
from pdiff.config import load_config

from .markdown import hardware, table, write_section

ONLY_GENERATED = {"evaluate.baselines": []}  # variants: the table compares generated models only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d-convnet")
    parser.add_argument("--studies", nargs="*", default=list(STUDIES))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    config = load_config(args.task)
    parts = []
    for study in args.studies:
        report = ablate(config, study, runs_dir=args.runs_dir, progress=False, shared=ONLY_GENERATED)
        rows = json.loads((report.parent / "ablation.json").read_text())["variants"]
        parts.append(f"**{study}** (`pdiff ablate {args.task} --study {study}`)\n\n{table(*ablation_table(rows))}")
    body = "\n\n".join(parts)
    resolution = json.loads((args.runs_dir / args.task / "evaluate" / "results.json").read_text())["resolution"]
    write_section("ablations", f"""## Ablations of {args.task} (`python -m bench.ablations`)

`python -m bench.ablations --task {args.task} --studies {' '.join(args.studies)}` ({hardware()}). Test accuracy (%)
of the generated models: *max* / *mean* / *median* are the paper's best / avg. / median, *best (val)* the test
accuracy of the generated model with the best validation accuracy, *original mean* the checkpoints' mean;
*max IoU generated*: the mean over generated models of their max wrong-prediction IoU to any original, *max IoU
original* the same for each original against the others. The preset's own value of each study is its main run.
*mean - main run*: the variant's generated mean test accuracy minus the main run's, in points, with its 95% CI
(two-level paired bootstrap over test examples and models, `pdiff.stats`) and verdict; the test set resolves
about ±{100 * resolution:.2f} points between two groups of originals.

{body}
""")


if __name__ == "__main__":
    main()
