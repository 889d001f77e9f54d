"""Evaluating 200 parameter vectors: split + vmap (`predict_many`) against one model at a time.

    python -m bench.evaluation [--models 200] [--repeats 3] [--data-dir /work/shared/data] [--device cpu]

For each task: a fresh model with random running statistics and `models` vectors around its subset
(timing does not depend on training). Columns: one by one (load the vector, run the full model), the
whole model vmapped (no split), split + vmap (pdiff), and the floor: the prefix once plus the suffix
of one model times `models`, each run plainly. On the CPU the times are CPU seconds and the table is the
"evaluation" section of BENCHMARKS.md; with `--device cuda` they are wall-clock seconds with
`torch.cuda.synchronize()` around each timed block, and the table is printed only (`python -m bench.gpu`
puts it in the GPU section).
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn
from torch.func import functional_call, vmap

from pdiff.config import load_config
from pdiff.inference import predict, predict_many, split_model
from pdiff.params import ParamSpec
from pdiff.tasks.datasets import Split, TensorLoader, load_dataset
from pdiff.tasks.models import build_model

from .markdown import machine, median_seconds, table, write_section

TASKS = {"mnist-convnet3": 500, "mnist1d-convnet": None}  # task -> test examples used (None: all)
HEADER = ["task", "test examples x batch", "generated D", "chunk", "one by one (s)", "whole-model vmap (s)",
          "split + vmap (s)", "floor (s)", "speedup vs one by one", "split / floor", "predictions differing"]


def one_by_one(model: nn.Module, spec: ParamSpec, vectors: torch.Tensor, loader, device: torch.device
               ) -> torch.Tensor:
    model = copy.deepcopy(model)
    return torch.stack([predict(spec.load_into(model, v.to(device)), loader, device) for v in vectors])


@torch.no_grad()
def whole_model_vmap(model: nn.Module, spec: ParamSpec, vectors: torch.Tensor, loader, chunk: int,
                     device: torch.device) -> torch.Tensor:
    """pdiff's evaluation before the split: every layer runs once per vector."""
    batched = vmap(lambda subset, x: functional_call(model, subset, (x,)), in_dims=(0, None))
    vectors = vectors.to(device)
    rows = [torch.cat([batched(spec.unflatten(vectors[s:s + chunk]), x.to(device)).argmax(-1).cpu()
                       for x, _ in loader], dim=1)
            for s in range(0, len(vectors), chunk)]
    return torch.cat(rows)


@torch.no_grad()
def floor_seconds(model: nn.Module, spec: ParamSpec, loader, repeats: int, device: torch.device
                  ) -> tuple[float, float]:
    """(prefix over the test set once, suffix of one model over the test set), medians."""
    prefix, suffix, _ = split_model(model, spec)
    t_prefix, _ = median_seconds(lambda: [prefix(x.to(device)) for x, _ in loader], repeats, device)
    frontiers = [prefix(x.to(device)) for x, _ in loader]
    t_suffix, _ = median_seconds(lambda: [suffix(*f) for f in frontiers], repeats, device)
    return t_prefix, t_suffix


def measure_task(task: str, n_test: int | None, n_models: int, repeats: int, data_dir: str | None,
                 device: torch.device | str = "cpu") -> dict:
    """Every figure of one task's row: seconds of each way, the floor, and the predictions that differ."""
    device = torch.device(device)
    config = load_config(task, [f"data.data_dir={data_dir}"] if data_dir else [])
    d = config.data
    data = load_dataset(d.name, d.data_dir, d.val_size, config.seed, d.num_samples, download=False)
    test = data.test if n_test is None else Split(data.test.x[:n_test], data.test.y[:n_test])
    loader = TensorLoader(test, d.eval_batch_size)
    torch.manual_seed(0)
    model = build_model(config.model.name, data.input_shape, data.num_classes, **config.model.kwargs).eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2)
    spec = ParamSpec.select(model, config.collect.subset)
    vectors = spec.flatten(model) + 0.05 * torch.randn(n_models, spec.dim)
    model.to(device)
    chunk = config.evaluate.model_chunk
    reference = one_by_one(model, spec, vectors, loader, device)
    batched = predict_many(model, spec, vectors, loader, chunk, device)
    mismatches = int((reference != batched).sum())
    t_one, _ = median_seconds(lambda: one_by_one(model, spec, vectors, loader, device), max(1, repeats - 1), device)
    t_whole, _ = median_seconds(lambda: whole_model_vmap(model, spec, vectors, loader, chunk, device), repeats,
                                device)
    t_split, times = median_seconds(lambda: predict_many(model, spec, vectors, loader, chunk, device), repeats,
                                    device)
    t_prefix, t_suffix = floor_seconds(model, spec, loader, repeats, device)
    floor = t_prefix + n_models * t_suffix
    print(f"{task}: one-by-one {t_one:.2f}s, whole vmap {t_whole:.2f}s, split {t_split:.2f}s {times}, "
          f"floor {floor:.2f}s (prefix {t_prefix:.3f}s + {n_models} x {t_suffix:.4f}s), mismatches {mismatches}")
    return {"task": task, "test_examples": len(test), "eval_batch_size": d.eval_batch_size, "dim": spec.dim,
            "tensors": len(spec.names), "chunk": chunk, "models": n_models, "one_by_one_s": t_one,
            "whole_vmap_s": t_whole, "split_s": t_split, "split_times_s": times, "prefix_s": t_prefix,
            "suffix_s": t_suffix, "floor_s": floor, "mismatches": mismatches, "predictions": reference.numel()}


def table_row(m: dict) -> list:
    """A `measure_task` result as a row under HEADER."""
    return [m["task"], f"{m['test_examples']} x {m['eval_batch_size']}", f"{m['dim']} ({m['tensors']} tensors)",
            m["chunk"], f"{m['one_by_one_s']:.2f}", f"{m['whole_vmap_s']:.2f}", f"**{m['split_s']:.2f}**",
            f"{m['floor_s']:.2f}", f"{m['one_by_one_s'] / m['split_s']:.1f}x", f"{m['split_s'] / m['floor_s']:.2f}",
            f"{m['mismatches']} of {m['predictions']}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default="/work/shared/data", help="where MNIST lives (torchvision layout)")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--device", default="cpu", help="cpu (writes BENCHMARKS.md) or cuda (prints the table)")
    args = parser.parse_args()
    results = [measure_task(task, TASKS.get(task), args.models, args.repeats, args.data_dir, args.device)
               for task in args.tasks]
    rows = [table_row(m) for m in results]
    if torch.device(args.device).type != "cpu":
        print(table(HEADER, rows))
        return
    write_section("evaluation", f"""## Evaluation of {args.models} models: batched vs one by one

`python -m bench.evaluation --models {args.models} --repeats {args.repeats}` on {machine()}.
Medians of {args.repeats} runs (one by one: {max(1, args.repeats - 1)}). Fresh models with random BatchNorm
statistics and vectors around their subset: timing does not depend on training. The floor is the prefix
(everything before the first generated parameter) run once plus one model's suffix times {args.models},
each run plainly; "split / floor" below 1 means batching the suffix beats running it model by model.

{table(HEADER, rows)}
""")


if __name__ == "__main__":
    main()
