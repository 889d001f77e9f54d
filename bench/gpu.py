"""The GPU path in one unattended, time-boxed command: tests, two `pdiff run`s, evaluation, a throughput probe.

    python -m bench.gpu [--device cuda] [--toy] [--out DIR] [--data-dir DIR] [--budget-s S] [--steps NAME ...]
                        [--write-benchmarks [PATH]]
    python -m bench.gpu --render OUT/gpu.json [--write-benchmarks [PATH]]   # the section again, from a fetched run

Made for a GPU machine that is lent briefly and cannot reach the network (`bench/gpu_run.sh` is its launcher).
Every step runs in a process of its own under a timeout cut from what is left of `--budget-s`, writes its
figures as soon as it ends, and OUT/gpu.json and OUT/gpu_section.md are rewritten after each step (OUT/steps.log
holds every step's output as it comes): a step that hangs, or the whole command killed, still leaves the rest.
Run folders and step files go to a temporary folder, since only a few files come back from such a machine.

Steps, in order (`--steps` picks some):
- environment: the GPU, torch, CUDA, cuDNN, NCCL and package versions.
- tests: `tests/test_gpu.py` with PDIFF_TEST_DEVICE set to the device; pass / fail / skip counts.
- run-mnist1d-convnet, run-mnist-convnet3: `pdiff run` of the preset on the device (precision=auto), read back
  from the run folder: each stage's seconds (stage.json), peak GPU memory, the accuracy summary.
- evaluation: `bench.evaluation` on the device, 200 models: one by one, whole-model vmap, split + vmap, floor.
- probe-cifar100-resnet18, probe-cifar10-vit-tiny: the preset's model on synthetic data of CIFAR's shape, timed
  per step of base training, collection, autoencoder, diffusion and sampling and per evaluated model; then the
  preset's whole run projected from its epochs, K, steps and N (`project`).

`--toy` shrinks every step so that the whole script runs in a few minutes on a CPU (`--device cpu --toy`): that
checks the script, and none of its figures is a GPU measurement (the section says so, and `--write-benchmarks`
refuses to put such a run in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from . import common
from .common import BENCHMARKS, ROOT, clock, table

log = logging.getLogger("bench.gpu")
NAME = "gpu"
STEPS = {  # step -> the most seconds it may take (less when the budget runs short), sized for one H200
    "environment": 60, "tests": 150, "run-mnist1d-convnet": 120, "run-mnist-convnet3": 150, "evaluation": 90,
    "probe-cifar100-resnet18": 75, "probe-cifar10-vit-tiny": 75,
}
TOY_SLACK = 2  # --toy: each step may take this many times its limit (a shared CPU is slow), the budget still holds
RESERVE_S = 5  # of the budget, kept for writing the results after the last step
RUN_FOLDERS = ("collect", "train", "generate", "evaluate", "report")  # a run folder's stages, in order
TOY_RUNS = {  # --toy: each run shrunk to about a minute of one CPU core
    "mnist1d-convnet": ["data.num_samples=1500", "data.val_size=200", "collect.epochs=2", "collect.k=12",
                        "train.autoencoder.steps=150", "train.autoencoder.kwargs={hidden: 64}",
                        "train.autoencoder.latent_dim=8", "train.diffusion.steps=150",
                        "train.diffusion.kwargs={width: 32, depth: 2}", "generate.n=6", "generate.sampler=ddim",
                        "generate.steps=10", "train.health_tolerance=1.0"],
    "mnist-convnet3": ["model.kwargs={channels: [8, 16, 16]}", "collect.epochs=0", "collect.k=4",
                       "train.autoencoder.steps=50", "train.diffusion.steps=50", "generate.n=4",
                       "generate.sampler=ddim", "generate.steps=10", "evaluate.baselines=[ensemble]",
                       "train.health_tolerance=1.0"],
}
# the probed presets' datasets: image shape, classes, training and test examples (CIFAR-10 and -100 alike)
DATASET_SHAPES = {"cifar10": ((3, 32, 32), 10, 50000, 10000), "cifar100": ((3, 32, 32), 100, 50000, 10000)}
PACKAGES = ("torch", "torchvision", "accelerate", "diffusers", "omegaconf", "timm", "mnist1d", "safetensors")


@dataclasses.dataclass(frozen=True)
class ProbeSize:
    """How much the throughput probe runs; None: the preset's own value."""

    batch: int | None = None  # training batch
    steps: int = 30  # timed training steps (after `warmup` untimed ones)
    warmup: int = 5
    eval_images: int = 10000  # synthetic test images each evaluated model sees
    eval_models: int | None = None  # models evaluated together (None: evaluate.model_chunk)
    k: int | None = None  # rows of the synthetic checkpoint set [K, D]
    generator_steps: int = 50  # timed autoencoder and diffusion steps (after `warmup` untimed ones)
    sample_steps: int = 20  # timed denoising steps of sampling n models
    n: int | None = None  # models sampled


FULL_PROBE = ProbeSize()
TOY_PROBE = ProbeSize(batch=8, steps=2, warmup=1, eval_images=64, eval_models=2, k=8, generator_steps=3,
                      sample_steps=2, n=4)


# ---- the steps, each run in its own process ------------------------------------------------------------------
# pdiff is imported inside the steps: where it cannot be imported (a package missing), each step fails and says
# why, and the process running the steps still writes what it has.
def step_environment(device: torch.device, toy: bool, data_dir: str | None, work: Path) -> dict:
    """What the figures were measured on."""
    env = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
           "host": f"{platform.machine()}, {os.cpu_count()} CPU cores", "torch": torch.__version__,
           "cuda": torch.version.cuda, "packages": {}}
    for name in PACKAGES:
        try:
            env["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env["packages"][name] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        nccl = torch.cuda.nccl.version() if torch.distributed.is_nccl_available() else None  # (2, 27, 3)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                   bf16=torch.cuda.is_bf16_supported(),
                   nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl)
    return env


def step_tests(device: torch.device, toy: bool, data_dir: str | None, work: Path) -> dict:
    """tests/test_gpu.py on `device` in this process; counts and every test's outcome from its JUnit XML."""
    import pytest

    junit = work / "junit.xml"
    os.environ["PDIFF_TEST_DEVICE"] = str(device)
    exit_code = pytest.main(["-q", "-p", "no:cacheprovider", f"--junitxml={junit}", str(ROOT / "tests/test_gpu.py")])
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests = []
    for case in suite.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, message = tag, (node.get("message") or "")[:300]
        tests.append({"name": case.get("name"), "seconds": float(case.get("time", 0)), "outcome": outcome,
                      "message": message})
    count = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failure", "error", "skipped")}
    return {"exit_code": int(exit_code), "passed": count["passed"], "failed": count["failure"] + count["error"],
            "skipped": count["skipped"], "seconds": float(suite.get("time", 0)), "tests": tests}


def step_run(task: str):
    def run(device: torch.device, toy: bool, data_dir: str | None, work: Path) -> dict:
        """`pdiff run` of `task` on `device`, from an empty run folder, read back from the folder's files."""
        from pdiff import distributed
        from pdiff.pipeline import run_pipeline
        from pdiff.presets import load_config

        overrides = [f"device={device}", *(TOY_RUNS[task] if toy else [])]
        if data_dir:
            overrides += [f"data.data_dir={data_dir}", "data.download=false"]
        config = load_config(task, overrides)
        runs = work / "runs"
        shutil.rmtree(runs / task, ignore_errors=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        result = run_pipeline(config, runs, progress=False)
        wall = time.perf_counter() - start
        stages = {folder: json.loads((result.root / folder / "stage.json").read_text())["seconds"]
                  for folder in RUN_FOLDERS}
        summary = json.loads((result.root / "evaluate" / "results.json").read_text())["summary"]
        figures = {"task": task, "overrides": overrides, "wall_s": wall, "stage_s": stages,
                   "precision": distributed.accelerator().mixed_precision, "summary": summary,
                   "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
        if device.type == "cuda":
            figures.update(peak_gpu_allocated_gib=torch.cuda.max_memory_allocated(device) / 2**30,
                           peak_gpu_reserved_gib=torch.cuda.max_memory_reserved(device) / 2**30)
        return figures

    return run


def step_evaluation(device: torch.device, toy: bool, data_dir: str | None, work: Path) -> dict:
    """bench.evaluation's measurement (`common.measure_evaluation`) of both its tasks on `device`."""
    models, repeats = (8, 1) if toy else (200, 3)
    rows = [common.measure_evaluation(task, n_test, models, repeats, data_dir, device)
            for task, n_test in common.EVALUATION_TASKS.items()]
    return {"models": models, "repeats": repeats, "rows": rows}


def step_probe(task: str):
    def probe(device: torch.device, toy: bool, data_dir: str | None, work: Path) -> dict:
        """Seconds per step of each stage of `task`'s preset on synthetic data, and the whole run projected."""
        return measure_throughput(task, device, TOY_PROBE if toy else FULL_PROBE)

    return probe


STEP_FUNCTIONS = {
    "environment": step_environment, "tests": step_tests,
    "run-mnist1d-convnet": step_run("mnist1d-convnet"), "run-mnist-convnet3": step_run("mnist-convnet3"),
    "evaluation": step_evaluation,
    "probe-cifar100-resnet18": step_probe("cifar100-resnet18"),
    "probe-cifar10-vit-tiny": step_probe("cifar10-vit-tiny"),
}


# ---- the throughput probe --------------------------------------------------------------------------------------
def timed(fn, device: torch.device) -> float:
    """Seconds of one call of fn (wall time with synchronisation on a GPU, CPU time on the CPU; see `clock`)."""
    start = clock(device)
    fn()
    return clock(device) - start


def measure_throughput(task: str, device: torch.device, size: ProbeSize) -> dict:
    """Time each kind of step of `task`'s preset, at its batch sizes, on random tensors of its dataset's shape.

    Training goes through `train_base` and `collect` over a TensorLoader with the preset's augmentation (so the
    CPU-side batching and the copy to the device are counted), under the preset's precision (bf16 autocast on a
    GPU that has it); the generator trains on a synthetic checkpoint set [K, D] of the preset's subset; evaluation
    is `predict_many` with the preset's chunk. Every timing follows untimed warm-up steps of the same kind.
    """
    from pdiff import distributed
    from pdiff.collect import collect, train_base
    from pdiff.generator import ParameterGenerator
    from pdiff.inference import predict_many
    from pdiff.params import ParamSpec
    from pdiff.presets import load_config
    from pdiff.tasks.datasets import Split, TensorLoader, augmentation
    from pdiff.tasks.models import build_model

    config = load_config(task, [f"device={device}"])
    device = distributed.setup(device, config.precision)
    shape, classes, _, n_test = DATASET_SHAPES[config.data.name]
    batch = size.batch or config.data.batch_size
    torch.manual_seed(0)
    model = build_model(config.model.name, shape, classes, **config.model.kwargs)
    spec = ParamSpec.select(model, config.collect.subset)
    augment = augmentation(config.data.name, shape) if config.data.augment else None

    def loader(batches: int) -> TensorLoader:
        split = Split(torch.randn(batches * batch, *shape), torch.randint(0, classes, (batches * batch,)))
        return TensorLoader(split, batch, shuffle=True, generator=torch.Generator().manual_seed(0), augment=augment)

    c = config.collect
    warm, timed_batches = loader(size.warmup), loader(size.steps)
    train_base(model, warm, 1, c.lr, c.momentum, c.weight_decay, device, progress=False)
    base = timed(lambda: train_base(model, timed_batches, 1, c.lr, c.momentum, c.weight_decay, device,
                                    progress=False), device) / size.steps
    log.info("%s: %.4f s per base-training step", task, base)

    def collect_epoch(batches: TensorLoader) -> None:  # one pass over `batches`: one step per batch either recipe
        k = 1 if c.recipe == "epoch" else len(batches)
        collect(model, batches, spec, k, c.recipe, c.subset_lr, c.subset_weight_decay, device, progress=False)

    collect_epoch(warm)
    collection = timed(lambda: collect_epoch(timed_batches), device) / size.steps
    log.info("%s: %.4f s per collection step", task, collection)

    k = size.k or c.k
    checkpoints = spec.flatten(model).cpu() + 0.01 * torch.randn(k, spec.dim)  # [K, D]

    def generator(steps: int) -> ParameterGenerator:
        train = dataclasses.replace(config.train,  # no global denoiser: `project` leaves it out
                                    autoencoder=dataclasses.replace(config.train.autoencoder, steps=steps),
                                    diffusion=dataclasses.replace(config.train.diffusion, steps=steps,
                                                                  global_steps=0))
        return ParameterGenerator(spec, train, device, config.seed)

    generator(size.warmup).fit(checkpoints, progress=False)
    gen = generator(size.generator_steps)
    autoencoder = timed(lambda: gen.fit_autoencoder(checkpoints, progress=False), device) / size.generator_steps
    diffusion = timed(lambda: gen.fit_prior(checkpoints, progress=False), device) / size.generator_steps
    n = size.n or config.generate.n
    gen.sample(n, config.generate.sampler, size.sample_steps)
    sampling = timed(lambda: gen.sample(n, config.generate.sampler, size.sample_steps), device) / size.sample_steps
    log.info("%s: %.4f / %.4f s per autoencoder / diffusion step, %.4f s per sampling step", task, autoencoder,
             diffusion, sampling)

    model.eval()
    m = size.eval_models or config.evaluate.model_chunk
    vectors = spec.flatten(model).cpu() + 0.01 * torch.randn(m, spec.dim)
    images = Split(torch.randn(size.eval_images, *shape), torch.zeros(size.eval_images, dtype=torch.int64))
    test = TensorLoader(images, config.data.eval_batch_size)
    predict_many(model, spec, vectors, test, config.evaluate.model_chunk, device)
    evaluation = timed(lambda: predict_many(model, spec, vectors, test, config.evaluate.model_chunk, device),
                       device) / (m * size.eval_images)
    per_step = {"base_step_s": base, "collect_step_s": collection, "autoencoder_step_s": autoencoder,
                "diffusion_step_s": diffusion, "sampling_step_s": sampling, "eval_image_model_s": evaluation}
    figures = {"task": task, "model": config.model.name, "dim": spec.dim, "batch": batch, "k": k, "n": n,
               "eval_models": m, "precision": distributed.accelerator().mixed_precision, **per_step,
               "eval_model_s": evaluation * (config.data.val_size + n_test), "projection": project(config, per_step)}
    if device.type == "cuda":
        figures["peak_gpu_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return figures


def project(config, t: dict) -> dict:
    """Seconds of each stage of the preset's whole run, from the seconds per step `t` (see `measure_throughput`).

    base: epochs x steps per epoch; collect: its training steps (K epochs for the epoch recipe, whole epochs
    covering K steps for iteration) plus K models evaluated on val + test; train: the autoencoder's and the
    diffusion model's steps plus the health gate (2K models on val); generate: the sampler's denoising steps for
    N models; evaluate: every group's models on val + test plus the fine-tuned baseline's training steps (timed
    as collection steps, though fine-tuning runs without autocast). Leaves out start-up, data loading, the
    report, the per-call overheads the timings amortise, and a global denoiser (train.diffusion.global_steps:
    a small MLP, about a minute on 2 CPU cores; none of the probed presets has one).
    """
    from pdiff.diffusion import DEFAULT_STEPS

    _, _, n_train, n_test = DATASET_SHAPES[config.data.name]
    c, ev, d = config.collect, config.evaluate, config.train.diffusion
    steps_per_epoch = math.ceil((n_train - config.data.val_size) / config.data.batch_size)
    collect_steps = steps_per_epoch * (c.k if c.recipe == "epoch" else math.ceil(c.k / steps_per_epoch))
    n, baseline_n = config.generate.n, ev.baseline_n or config.generate.n
    group_models = {"ensemble": 1, "noise": baseline_n * len(ev.noise_strengths), "finetune": baseline_n,
                    "mean_of_k": baseline_n, "gaussian": baseline_n}
    evaluated = c.k + n + sum(group_models[b] for b in ev.baselines)
    sampler = config.generate.sampler
    sampling_steps = config.generate.steps or (d.num_train_timesteps if sampler == "ddpm" else DEFAULT_STEPS[sampler])
    val_test = t["eval_image_model_s"] * (config.data.val_size + n_test)  # one model on val + test
    val = t["eval_image_model_s"] * config.data.val_size
    finetune = baseline_n * ev.finetune_steps if "finetune" in ev.baselines else 0
    stages = {
        "base": c.epochs * steps_per_epoch * t["base_step_s"],
        "collect": collect_steps * t["collect_step_s"] + c.k * val_test,
        "train": (config.train.autoencoder.steps * t["autoencoder_step_s"] + d.steps * t["diffusion_step_s"]
                  + 2 * c.k * val),
        "generate": sampling_steps * t["sampling_step_s"],
        "evaluate": evaluated * val_test + finetune * t["collect_step_s"],
    }
    return {"steps_per_epoch": steps_per_epoch, "base_steps": c.epochs * steps_per_epoch,
            "collect_steps": collect_steps, "autoencoder_steps": config.train.autoencoder.steps,
            "diffusion_steps": d.steps, "sampling_steps": sampling_steps, "evaluated_models": evaluated,
            "stage_s": stages, "total_s": sum(stages.values())}


# ---- running the steps -----------------------------------------------------------------------------------------
def measure(args: argparse.Namespace) -> dict:
    """Each step in a child process under its share of the budget; gpu.json and the section after each."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pdiff-gpu-"))
    log = out / "steps.log"
    log.write_text("")
    results = common.results(" ".join(["python -m bench.gpu", *sys.argv[1:]]), args.device, toy=args.toy,
                             budget_s=args.budget_s, steps={})
    deadline = time.monotonic() + args.budget_s
    for name in args.steps:
        left = deadline - time.monotonic() - RESERVE_S
        if left < 10:
            results["steps"][name] = {"status": "not run", "reason": "the budget was spent"}
        else:
            limit = STEPS[name] * (TOY_SLACK if args.toy else 1)
            results["steps"][name] = run_step(name, min(limit, left), args, work, log)
        save(results, out)
        print(f"bench.gpu: {name}: {results['steps'][name]['status']}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return results


def run_step(name: str, timeout: float, args: argparse.Namespace, work: Path, log: Path) -> dict:
    """One step as `python -m bench.gpu --step NAME`, its output appended to `log`, killed after `timeout` s."""
    result = work / f"{name}.json"
    command = [sys.executable, "-m", "bench.gpu", "--step", name, "--result", str(result), "--work", str(work),
               "--device", args.device, *(["--toy"] if args.toy else []),
               *(["--data-dir", args.data_dir] if args.data_dir else [])]
    with log.open("a") as f:
        f.write(f"\n===== {name} (at most {timeout:.0f} s) =====\n")
        f.flush()
        offset = f.tell()
        start = time.perf_counter()
        try:
            code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT).returncode
            status = "ok" if code == 0 and result.is_file() else "failed"
        except subprocess.TimeoutExpired:
            code, status = None, "timeout"
        seconds = time.perf_counter() - start
    record = {"status": status, "seconds": round(seconds, 1), "limit_s": round(timeout)}
    if result.is_file():
        record["figures"] = json.loads(result.read_text())
    if status != "ok":
        with log.open() as f:
            f.seek(offset)
            record.update(returncode=code, log_tail=f.read()[-2000:])
    return record


def save(results: dict, out: Path) -> None:
    for name, text in (("gpu.json", json.dumps(results, indent=1)), ("gpu_section.md", render(results))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


# ---- the BENCHMARKS.md section -----------------------------------------------------------------------------------
def render(results: dict) -> str:
    """The "GPU" section of BENCHMARKS.md from gpu.json: every figure measured, and what was not."""
    steps = results["steps"]

    def figures(name: str) -> dict | None:
        return steps.get(name, {}).get("figures") if steps.get(name, {}).get("status") == "ok" else None

    env = figures("environment") or {}
    device, command = results["provenance"]["device"], results["provenance"]["command"]
    where = (f"{env['gpu']} ({env['gpu_memory_gib']} GiB, compute capability {env['capability']}), torch built "
             f"for CUDA {env['cuda']}, cuDNN {env['cudnn']}, NCCL {env['nccl']}" if "gpu" in env else device)
    software = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    times = ("wall-clock seconds with `torch.cuda.synchronize()` around each timed block" if device == "cuda"
             else "CPU seconds of the process timing them")
    lines = ["## GPU (`python -m bench.gpu`)", "",
             f"`{command}` on {where}; host {env.get('host', '?')}, Python {env.get('python', '?')}; "
             f"{software}; {env.get('date', '')}. Times are {times}; stage times are those each `stage.json` "
             "recorded."]
    if results["toy"] or device != "cuda":
        lines += ["", "**A toy run on the CPU: it checks that the script works end to end. No figure below is a "
                      "GPU measurement.**"]
    lines += ["", "| step | status | seconds (limit) |", "|---|---|---|"]
    lines += [f"| {name} | {s['status']} | {s.get('seconds', '-')} ({s.get('limit_s', '-')}) |"
              for name, s in steps.items()]
    lines += render_tests(figures("tests"))
    lines += render_runs([figures(f"run-{task}") for task in TOY_RUNS])
    lines += render_evaluation(figures("evaluation"))
    lines += render_probes([figures(name) for name in ("probe-cifar100-resnet18", "probe-cifar10-vit-tiny")])
    missing = [f"- {name}: {s['status']}{': ' + s['reason'] if 'reason' in s else ''}"
               + (f" (last output: `{_last_line(s['log_tail'])}`)" if s.get("log_tail") else "")
               for name, s in steps.items() if s["status"] != "ok"]
    if missing:
        lines += ["", "Not measured (the step did not finish):", *missing]
    return "\n".join(lines) + "\n"


def render_tests(tests: dict | None) -> list[str]:
    if tests is None:
        return []
    failed = [f"- `{t['name']}`: {t['outcome']}: {t['message']}" for t in tests["tests"]
              if t["outcome"] in ("failure", "error")]
    return ["", f"**Tests** (`tests/test_gpu.py` on the device): {tests['passed']} passed, {tests['failed']} failed, "
                f"{tests['skipped']} skipped in {tests['seconds']:.1f} s.", *failed]


def render_runs(runs: list[dict | None]) -> list[str]:
    runs = [r for r in runs if r is not None]
    if not runs:
        return []
    header = ["task", "wall s", *RUN_FOLDERS, "precision", "peak GPU GiB (allocated / reserved)", "peak RSS GiB",
              "original best / mean %", "ensemble %", "generated best / mean %"]
    rows = []
    for r in runs:
        s = r["summary"]
        gpu = (f"{r['peak_gpu_allocated_gib']:.2f} / {r['peak_gpu_reserved_gib']:.2f}"
               if "peak_gpu_allocated_gib" in r else "-")
        ensemble = f"{100 * s['ensemble']['mean']:.2f}" if "ensemble" in s else "-"
        rows.append([r["task"], f"{r['wall_s']:.1f}", *(f"{r['stage_s'][f]:.1f}" for f in RUN_FOLDERS), r["precision"],
                     gpu, f"{r['peak_rss_gib']:.2f}", _best_mean(s["original"]), ensemble,
                     _best_mean(s["generated"])])
    return ["", "**`pdiff run` on the device** (from an empty run folder; *best* is the test accuracy of the "
                "val-chosen model; stage columns are the run folder's stage folders):", "", table(header, rows)]


def render_evaluation(ev: dict | None) -> list[str]:
    if ev is None:
        return []
    rows = [common.evaluation_row(m) for m in ev["rows"]]
    return ["", f"**Evaluation of {ev['models']} models** (`bench.evaluation` on the device, medians of "
                f"{ev['repeats']} runs, one by one: {max(1, ev['repeats'] - 1)}; the floor is the prefix once plus "
                f"one model's suffix times {ev['models']}):", "", table(common.EVALUATION_HEADER, rows)]


def render_probes(probes: list[dict | None]) -> list[str]:
    probes = [p for p in probes if p is not None]
    if not probes:
        return []
    header = ["preset", "D", "precision", "batch", "s / base step", "s / collection step", "s / autoencoder step",
              "s / diffusion step", "s / sampling step (N models)", "s / model on val + test", "peak GPU GiB"]
    rows = [[p["task"], p["dim"], p["precision"], p["batch"], _s(p["base_step_s"]), _s(p["collect_step_s"]),
             _s(p["autoencoder_step_s"]), _s(p["diffusion_step_s"]), f"{_s(p['sampling_step_s'])} ({p['n']})",
             _s(p["eval_model_s"]),
             f"{p['peak_gpu_allocated_gib']:.2f}" if "peak_gpu_allocated_gib" in p else "-"] for p in probes]
    projected = ["preset", "base steps", "collection steps", "AE + diffusion steps", "sampling steps",
                 "models evaluated", "base h", "collect h", "train h", "generate h", "evaluate h", "total h"]
    prows = []
    for p in probes:
        j = p["projection"]
        prows.append([p["task"], j["base_steps"], j["collect_steps"],
                      f"{j['autoencoder_steps']} + {j['diffusion_steps']}", j["sampling_steps"], j["evaluated_models"],
                      *(f"{v / 3600:.2f}" for v in j["stage_s"].values()), f"**{j['total_s'] / 3600:.2f}**"])
    return ["", "**Throughput of the paper's headline presets** (their models on random tensors of CIFAR's shape; "
                "an evaluated model sees the preset's val split and the 10000 test images; each timing follows "
                "untimed warm-up steps):", "",
            table(header, rows), "", "Projected whole run of each preset (`bench.gpu.project`: the preset's step "
            "counts times the seconds per step above; start-up, data loading and the report left out):", "",
            table(projected, prows)]


def _best_mean(group: dict) -> str:
    return f"{100 * group['best']:.2f} / {100 * group['mean']:.2f}"


def _s(seconds: float) -> str:
    return f"{seconds:.2g}" if seconds < 0.01 else f"{seconds:.3f}"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200].replace("`", "'") if lines else ""


def write_benchmarks(results: dict, path: Path) -> None:
    """Put the section into BENCHMARKS.md, and the results into bench/gpu.json; a toy or CPU run goes only to
    another file."""
    if path.resolve() == BENCHMARKS.resolve():
        if results["toy"] or results["provenance"]["device"] != "cuda":
            sys.exit("bench.gpu: a toy or CPU run is no GPU measurement: not written to BENCHMARKS.md "
                     "(give --write-benchmarks another file to see the section)")
        common.save_results(NAME, results)
    common.write_section(NAME, render(results), path, **common.measured_at(results))
    print(f"bench.gpu: wrote the {NAME!r} section of {path}")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--toy", action="store_true", help="every step shrunk to run on a CPU in minutes")
    parser.add_argument("--out", default="gpu-out", help="gets gpu.json, gpu_section.md and steps.log")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"),
                        help="where MNIST lives (torchvision layout), for the steps on mnist-convnet3")
    parser.add_argument("--budget-s", type=float, help="all the steps together, in seconds (480; 900 with --toy)")
    parser.add_argument("--steps", nargs="+", choices=list(STEPS), default=list(STEPS))
    parser.add_argument("--write-benchmarks", nargs="?", const=str(BENCHMARKS), metavar="PATH",
                        help="also replace the GPU section of BENCHMARKS.md (or of PATH)")
    parser.add_argument("--render", metavar="GPU_JSON", help="only render the section of an earlier run's gpu.json")
    parser.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)  # internal: one step in this process
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = parser().parse_args()
    args.budget_s = args.budget_s or (900 if args.toy else 480)
    if args.step:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
        device = torch.device(args.device)
        if device.type == "cpu":  # two threads on a CPU shared with other jobs run 3-4x slower than one
            torch.set_num_threads(1)
        figures = STEP_FUNCTIONS[args.step](device, args.toy, args.data_dir, Path(args.work))
        Path(args.result).write_text(json.dumps(figures, indent=1))
        return
    results = json.loads(Path(args.render).read_text()) if args.render else measure(args)
    if args.write_benchmarks:
        write_benchmarks(results, Path(args.write_benchmarks))
    if not args.render:
        bad = [name for name, s in results["steps"].items() if s["status"] != "ok"]
        tests = results["steps"].get("tests", {}).get("figures", {})
        print(f"bench.gpu: {len(results['steps']) - len(bad)} of {len(results['steps'])} steps ok"
              + (f"; not ok: {', '.join(bad)}" if bad else "")
              + (f"; tests: {tests['passed']} passed, {tests['failed']} failed" if tests else "")
              + f"; results in {args.out}")
        sys.exit(1 if bad or tests.get("failed") else 0)


if __name__ == "__main__":
    main()
