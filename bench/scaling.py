"""Scaling in D: seconds per training step, peak memory and sampling time of each generator arch.

    python -m bench.scaling [--dims 1000 10000 100000 1000000] [--archs mlp conv1d tokens tokens-crop] [--steps 3]
                            [--k 100] [--max-gb 16] [--max-point-seconds 3600] [--cache runs/bench/scaling.json]
                            [--part archs]

The checkpoint sets are random walks shaped like real ones, not trained checkpoints: for each D the spec is
every parameter of MNIST's ConvNet-3 with channels (w, 2w, 2w), w chosen so that D is closest to the target,
and checkpoint k + 1 is checkpoint k plus Gaussian steps of 1% of each tensor's initial std (0.01 for
constant tensors), starting from the network's initialisation. Speed and memory do not depend on the values.

Each (arch, D) point runs in its own process (`--point ARCH D`): it trains the autoencoder and then the
denoiser for --steps steps each (seconds per step = the fit's CPU time / steps, so the set-up is included),
then samples 100 models by DDIM: --sample-steps denoiser steps are timed and the time of DDIM's default 50
steps is extrapolated from them (plus one decode). Peak RSS is that of the point's process (os.wait4).
Before a point runs, its memory above a child that only imports the same modules (the baseline) and its timed
work (steps and sampling; the rest of its wall time is taken as fixed) are extrapolated linearly in D from the
arch's previous point; a point that would exceed --max-gb or --max-point-seconds is not run and is reported so.
"Full training"
extrapolates the step time to the presets' 2000 autoencoder + 3000 diffusion steps.
Each point's result (with the 1-minute load average when it started) is kept in --cache and reused by later
calls with the same --steps, --k and --sample-steps, so the table can be built over several short calls.
Writes bench/scaling.json and the "scaling" section of BENCHMARKS.md: one part per --part (default "archs"; another
name adds a table beside the first, e.g. for an arch measured later), each with its own provenance.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pdiff.config import AutoencoderConfig, DiffusionConfig, TrainConfig
from pdiff.generator import ParameterGenerator
from pdiff.params import ParamSpec
from pdiff.tasks.models import build_model

from . import common
from .common import clock

NAME = "scaling"

# Each autoencoder arch with the denoiser it is paired with and the sizes the presets use.
ARCHS = {
    "mlp": (AutoencoderConfig(arch="mlp", latent_dim=32, kwargs={"hidden": 256}),
            DiffusionConfig(arch="mlp", kwargs={"width": 256, "depth": 3})),
    "conv1d": (AutoencoderConfig(arch="conv1d", latent_dim=64),
               DiffusionConfig(arch="conv1d")),
    "tokens": (AutoencoderConfig(arch="tokens", latent_dim=16, kwargs={"token_size": 256, "hidden": 128}),
               DiffusionConfig(arch="transformer", kwargs={"width": 64, "depth": 2, "heads": 4, "window": 256})),
    # tokens trained on crops: 256 tokens (the autoencoder) and two windows (the transformer) a step, at any D
    "tokens-crop": (AutoencoderConfig(arch="tokens", latent_dim=16, kwargs={"token_size": 256, "hidden": 128},
                                      tokens_per_step=256),
                    DiffusionConfig(arch="transformer", kwargs={"width": 64, "depth": 2, "heads": 4, "window": 256},
                                    tokens_per_step=512)),
}
FULL_STEPS = (2000, 3000)  # autoencoder, diffusion: what the presets train for
SAMPLED, DDIM_STEPS = 100, 50


def convnet3_spec(target: int) -> tuple[ParamSpec, torch.nn.Module]:
    """Every parameter of ConvNet-3 on MNIST with channels (w, 2w, 2w), D closest to `target`."""
    # 3x3 convs without bias 9w + 18w^2 + 36w^2, BN 2(w + 2w + 2w), head (2w * 3 * 3) * 10 + 10
    w = min(range(1, 1000), key=lambda w: abs(math.log((54 * w * w + 199 * w + 10) / target)))
    net = build_model("convnet3", (1, 28, 28), 10, channels=(w, 2 * w, 2 * w))
    return ParamSpec.select(net, "all"), net


def random_walk(spec: ParamSpec, net: torch.nn.Module, k: int, seed: int = 0) -> torch.Tensor:
    """K checkpoints [K, D]: a Gaussian random walk from the initialisation, 1% of each tensor's std a step."""
    g = torch.Generator().manual_seed(seed)
    start = spec.flatten(net)
    scale = torch.cat([torch.full((n,), 0.01 * (t.std().item() if n > 1 and t.std() > 0 else 1.0))
                       for n, t in zip(spec.numels, spec.unflatten(start).values(), strict=True)])
    walk = torch.randn(k, spec.dim, generator=g)
    walk.mul_(scale)
    torch.cumsum(walk, dim=0, out=walk)
    return walk.add_(start)


def point(arch: str, target: int, steps: int, k: int, sample_steps: int) -> dict:
    """Measure one (arch, D) point in this process."""
    spec, net = convnet3_spec(target)
    ckpts = random_walk(spec, net, k)
    ae, dm = ARCHS[arch]
    ae.steps, dm.steps = steps, steps
    gen = ParameterGenerator(spec, TrainConfig(ae, dm))
    start = clock()
    gen.fit_autoencoder(ckpts, progress=False)
    ae_seconds = clock() - start
    start = clock()
    gen.fit_prior(ckpts, progress=False)
    dm_seconds = clock() - start
    start = clock()
    latents = gen.sample_latents(SAMPLED, "ddim", sample_steps)
    denoise = clock() - start
    start = clock()
    gen.decode(latents)
    decode = clock() - start
    return {"arch": arch, "target": target, "dim": spec.dim, "ae_step": ae_seconds / steps,
            "dm_step": dm_seconds / steps, "sample100": DDIM_STEPS * denoise / sample_steps + decode,
            "latent": list(gen.latent_shape)}


def cache_key(arch: str, target: int, args: argparse.Namespace) -> str:
    return f"{arch} {target} steps={args.steps} k={args.k} sample_steps={args.sample_steps}"


def is_cached(arch: str, target: int, args: argparse.Namespace) -> bool:
    return args.cache.is_file() and cache_key(arch, target, args) in json.loads(args.cache.read_text())


def baseline(args: argparse.Namespace) -> dict:
    """Peak RSS (MiB) and wall seconds of a child that imports what a point imports and stops."""
    return run_point("none", 0, args)


def run_point(arch: str, target: int, args: argparse.Namespace) -> dict:
    """Run `point` in a child process (or take it from --cache); adds its peak RSS (MiB), wall seconds, load."""
    key = cache_key(arch, target, args)
    cache = json.loads(args.cache.read_text()) if args.cache.is_file() else {}
    if key in cache:
        return cache[key]
    load = os.getloadavg()[0]
    command = [sys.executable, "-m", "bench.scaling", "--point", arch, str(target), "--steps", str(args.steps),
               "--k", str(args.k), "--sample-steps", str(args.sample_steps)]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"`{' '.join(command)}` failed")
    result = json.loads(out.strip().splitlines()[-1])
    cache[key] = {**result, "rss": usage.ru_maxrss / 1024, "wall": time.perf_counter() - start, "load": load}
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    args.cache.write_text(json.dumps(cache, indent=1))
    return cache[key]


def compute_seconds(r: dict, steps: int, sample_steps: int) -> float:
    """The timed work of a point: its training steps and its sampling steps."""
    return (r["ae_step"] + r["dm_step"]) * steps + r["sample100"] * sample_steps / DDIM_STEPS


def slope(xs: list[float], ys: list[float]) -> str:
    """The least-squares slope of log y on log x ("-" with fewer than two points)."""
    if len(xs) < 2:
        return "-"
    return f"{np.polyfit(np.log(xs), np.log(ys), 1)[0]:.2f}"


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__)
    parser.add_argument("--dims", type=int, nargs="*", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--archs", nargs="*", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--steps", type=int, default=3, help="training steps timed per network and point")
    parser.add_argument("--k", type=int, default=100, help="checkpoints per set (the batch is min(200, K))")
    parser.add_argument("--sample-steps", type=int, default=3, help="DDIM steps timed (50 are extrapolated)")
    parser.add_argument("--max-gb", type=float, default=16.0)
    parser.add_argument("--max-point-seconds", type=float, default=3600.0)
    parser.add_argument("--cache", type=Path, default=Path("runs/bench/scaling.json"))
    parser.add_argument("--cached-only", action="store_true",
                        help="run nothing: write the table from --cache, points missing from it marked so")
    parser.add_argument("--note", default="", help="a paragraph written below the table")
    parser.add_argument("--part", default="archs", help="the part of the section written (another name adds a "
                        "table beside the first, e.g. for an arch measured later)")
    parser.add_argument("--point", nargs=2, metavar=("ARCH", "D"), help=argparse.SUPPRESS)
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Every (arch, D) point, measured, read from --cache, or skipped with the estimate that ruled it out; the
    other parts' earlier entries are kept."""
    base = baseline(args)
    points = []
    for arch in args.archs:
        done: list[dict] = []
        for target in sorted(args.dims):
            if done:  # extrapolate linearly in D from the previous point
                ratio = target / done[-1]["dim"]
                gb = (base["rss"] + (done[-1]["rss"] - base["rss"]) * ratio) / 1024
                seconds = done[-1]["wall"] + compute_seconds(done[-1], args.steps, args.sample_steps) * (ratio - 1)
                if gb > args.max_gb or seconds > args.max_point_seconds:
                    points.append({"arch": arch, "target": target, "skipped": f"not run: estimated {gb:.0f} GB, "
                                                                               f"{seconds:.0f} s"})
                    print(arch, target, "skipped", gb, seconds, flush=True)
                    continue
            if args.cached_only and not is_cached(arch, target, args):
                points.append({"arch": arch, "target": target, "skipped": "not measured (see the note)"})
                continue
            done.append(run_point(arch, target, args))
            points.append(done[-1])
            print(done[-1], flush=True)
    command = (f"python -m bench.scaling --dims {' '.join(map(str, args.dims))} --archs {' '.join(args.archs)} "
               f"--steps {args.steps} --k {args.k} --sample-steps {args.sample_steps} --max-gb {args.max_gb:g} "
               f"--max-point-seconds {args.max_point_seconds:g}" + " --cached-only" * args.cached_only
               + f" --part {args.part}" * (args.part != "archs"))
    entry = {"provenance": common.provenance(command), "archs": args.archs, "steps": args.steps, "k": args.k,
             "sample_steps": args.sample_steps, "baseline_rss": base["rss"], "points": points, "note": args.note}
    parts = {**common.load_results(NAME).get("parts", {}), args.part: entry}
    return {"format_version": common.FORMAT_VERSION, "provenance": entry["provenance"], "parts": parts}


def point_row(r: dict) -> list:
    if "skipped" in r:
        return [r["arch"], f"~{r['target']:.0e}", "-", r["skipped"], "", "", "", "", ""]
    full = FULL_STEPS[0] * r["ae_step"] + FULL_STEPS[1] * r["dm_step"]
    return [r["arch"], r["dim"], "x".join(map(str, r["latent"])), f"{r['ae_step']:.3f}", f"{r['dm_step']:.3f}",
            f"{r['sample100']:.1f}", f"{r['rss']:.0f}", f"{full / 60:.0f}", f"{r['load']:.1f}"]


def slopes_row(arch: str, done: list[dict], baseline_rss: float) -> list:
    """Growth exponents of one arch's measured points: overall, and between the two largest."""
    dims = [r["dim"] for r in done]
    return [arch, slope(dims, [r["ae_step"] + r["dm_step"] for r in done]), slope(dims, [r["rss"] for r in done]),
            slope(dims, [r["sample100"] for r in done]),
            slope(dims[-2:], [r["ae_step"] + r["dm_step"] for r in done[-2:]]),
            slope(dims[-2:], [max(r["rss"] - baseline_rss, 1.0) for r in done[-2:]])]


def render_part(part: str, r: dict) -> str:
    header = ["arch (AE / denoiser)", "D", "latent per model", "AE s/step", "denoiser s/step",
              "sample 100 models s", "peak RSS MiB", "full training min (est.)", "load at start"]
    slopes = [slopes_row(arch, [p for p in r["points"] if p["arch"] == arch and "skipped" not in p],
                         r["baseline_rss"]) for arch in r["archs"]]
    title = "the generator archs" if part == "archs" else ", ".join(r["archs"])
    p = r["provenance"]
    return f"""## Scaling in D: {title} (`python -m bench.scaling`)

`{p['command']}`
on {common.machine(p)}.
Random-walk checkpoint sets shaped like real ones (every parameter of MNIST ConvNet-3 with channels (w, 2w, 2w),
K = {r['k']}, the batch the whole set), not trained checkpoints: time and memory do not depend on the values.
Pairs: mlp / mlp, conv1d / conv1d, tokens / transformer (tokens-crop: trained on crops of the token sequence,
`tokens_per_step`), at the sizes in `bench/scaling.py`. Seconds per step
are the fit's CPU seconds over {r['steps']} steps (set-up included); sampling is DDIM-50 for 100 models,
extrapolated from {r['sample_steps']} timed steps plus one decode; peak RSS is the whole point's process
(a child that only imports the same modules peaks at {r['baseline_rss']:.0f} MiB, the baseline). Full training
extrapolates to 2000 AE + 3000 diffusion steps.

{common.table(header, [point_row(point) for point in r["points"]])}

{r['note']}

Growth exponents (least-squares slope of log value on log D over the measured points; time per step and memory
above the baseline also between the two largest points, where the fixed set-up in a 3-step fit matters least):

{common.table(["arch", "time per step", "peak RSS", "sampling", "time per step, last two points",
               "RSS above baseline, last two points"], slopes)}"""


def render(results: dict) -> str:
    parts = results["parts"]
    order = sorted(parts, key=lambda part: (part != "archs", part))
    return "\n\n".join(render_part(part, parts[part]) for part in order)


def main() -> None:
    args = parser().parse_args()
    if args.point:
        arch, target = args.point[0], int(args.point[1])
        print(json.dumps({} if arch == "none" else point(arch, target, args.steps, args.k, args.sample_steps)))
        return
    common.publish(NAME, measure(args), render)


if __name__ == "__main__":
    main()
