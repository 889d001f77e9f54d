"""The catalogue of bad inputs: each one, given to the CLI, exits with code 1, prints one line naming the
problem and the fix, and changes nothing on disk (no temporary file, half stage folder or stale lock).

Cases marked `run=True` start from a copy of a finished tiny run and tamper with it first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pdiff.cli import app
from pdiff.store import load_tensors, save_json, save_tensors
from pdiff.tasks.models import build_model
from tests.conftest import TINY, write_image_folder

runner = CliRunner(env={"COLUMNS": "200"})
TASK = "mnist1d-convnet"
Setup = Callable[[Path, Path], None]  # (run root, tmp folder)


@dataclass
class Case:
    id: str
    args: list[str]  # "{runs}", "{root}" and "{tmp}" are filled in; --runs-dir {runs} is added if absent
    problem: str  # substrings the error line must hold
    fix: str
    setup: Setup | None = None
    run: bool = False  # start from a copy of a finished tiny run


def edit_tensors(file: str, change: Callable[[dict, dict], None]) -> Setup:
    """A setup that loads root/`file`, lets `change(tensors, meta)` edit it in place, and saves it back."""
    def setup(root: Path, tmp: Path) -> None:
        tensors, meta = load_tensors(root / file)
        change(tensors, meta)
        save_tensors(root / file, tensors, meta)
    return setup


def write_file(relative: str, data: bytes | Callable[[bytes], bytes], under_tmp: bool = False) -> Setup:
    def setup(root: Path, tmp: Path) -> None:
        path = (tmp if under_tmp else root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)
    return setup


def _edit_header(data: bytes) -> bytes:
    """Change the params shape in the safetensors JSON header by hand, keeping its length."""
    return data.replace(b'"shape":[12,128]', b'"shape":[12,127]', 1)


def _nan(name: str, index: tuple = (0,)) -> Callable[[dict, dict], None]:
    def change(tensors: dict, meta: dict) -> None:
        tensors[name][index] = float("nan")
    return change


def _first_tensor_only(tensors: dict, meta: dict) -> None:
    """A checkpoint set of another (smaller) subset of the same model."""
    name, shape = meta["spec"]["names"][0], meta["spec"]["shapes"][0]
    meta["spec"] = {"names": [name], "shapes": [shape]}
    tensors["params"] = tensors["params"][:, :shape[0]].contiguous()


def _set_meta(key: str, value) -> Callable[[dict, dict], None]:
    def change(tensors: dict, meta: dict) -> None:
        meta[key] = value
    return change


def _other_spec(tensors: dict, meta: dict) -> None:
    meta["spec"] = {"names": ["features.0.1.weight"], "shapes": [[16]]}


def _edit_both_generator_files(change: Callable[[dict, dict], None]) -> Setup:
    ae, dm = edit_tensors("train/autoencoder.safetensors", change), edit_tensors(
        "train/diffusion.safetensors", change)
    return lambda root, tmp: (ae(root, tmp), dm(root, tmp))


def _fewer_rows(tensors: dict, meta: dict) -> None:
    for name in tensors:
        tensors[name] = tensors[name][:5].contiguous()


def _base_of_another_model(tensors: dict, meta: dict) -> None:
    tensors.clear()
    tensors["net.1.weight"] = torch.zeros(10, 40)


def _results_of_another_config(root: Path, tmp: Path) -> None:
    results = json.loads((root / "evaluate/results.json").read_text())
    save_json(root / "evaluate/results.json", {**results, "config_hash": "0" * 16})


def _lock_held_by_a_live_process(root: Path, tmp: Path) -> None:
    (root / ".lock").write_text(f"{os.getppid()}\n")  # pytest's parent: alive, and not us


def _read_only(root: Path, tmp: Path) -> None:
    root.chmod(0o500)


def _collect_again_with_another_seed(root: Path, tmp: Path) -> None:
    """`pdiff collect seed=1 --force` in a finished run: the generator stays, made for the old base model."""
    result = runner.invoke(app, ["collect", *TINY, "seed=1", "--force", "-q", "--runs-dir", str(root.parent)])
    assert result.exit_code == 0, result.output


def _write_results(data: bytes) -> Setup:
    return write_file("evaluate/results.json", data)


def own_checkpoint(name: str, change: Callable[[dict], object] = lambda state: state) -> Setup:
    """A setup that writes tmp/mine/`name`: `change(state)` of a fresh tiny-task model's state_dict, saved with
    torch.save (bytes are written as they are)."""
    def setup(root: Path, tmp: Path) -> None:
        (tmp / "mine").mkdir(exist_ok=True)
        data = change(build_model("convnet1d", (1, 40), 10).state_dict())
        if isinstance(data, bytes):
            (tmp / "mine" / name).write_bytes(data)
        else:
            torch.save(data, tmp / "mine" / name)
    return setup


def _replaced(name: str, tensor: torch.Tensor) -> Callable[[dict], dict]:
    return lambda state: {**state, name: tensor}


MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"]


def _truncated_mnist(root: Path, tmp: Path) -> None:
    for name in MNIST_FILES:
        write_file(f"data/MNIST/raw/{name}", b"\x00\x00\x08\x03" + b"\x00" * 60, under_tmp=True)(root, tmp)


def _image_folder(damage: Callable[[Path], object] | None = None) -> Setup:
    """A setup that writes a tiny image folder at {tmp}/images, then lets `damage(folder)` spoil it."""
    def setup(root: Path, tmp: Path) -> None:
        write_image_folder(tmp / "images", {"train": {"cat": 3, "dog": 3}, "test": {"cat": 1, "dog": 1}})
        if damage is not None:
            damage(tmp / "images")
    return setup


IMAGES = ["collect", "data.name=imagefolder", "data.val_size=2", "--data-dir", "{tmp}/images", "-q"]
# A collect stage made from {tmp}/images, fast: a tiny ConvNet-3 (8x8 images survive its three poolings).
IMAGE_RUN = [*IMAGES, "model.name=convnet3", "model.kwargs={channels: [4, 4, 4]}", "collect.k=3", "collect.epochs=1"]
FORCE = ["--force", "-q"]


def _image_run(change: Callable[[Path], object]) -> Setup:
    """A setup that collects from a tiny image folder into the run folder, then lets `change(folder)` edit it."""
    def setup(root: Path, tmp: Path) -> None:
        _image_folder()(root, tmp)
        args = [a.replace("{tmp}", str(tmp)) for a in IMAGE_RUN]
        result = runner.invoke(app, [*args, "--runs-dir", str(root.parent)])
        assert result.exit_code == 0, result.output
        change(tmp / "images")
    return setup


def _relabel(folder: Path) -> None:
    """One training image moved from cat/ to dog/: the same files, another label."""
    (folder / "train" / "cat" / "000.png").rename(folder / "train" / "dog" / "100.png")


def _replace_keeping_size_and_mtime(folder: Path) -> None:
    """One image's bytes changed in place, its size and modification time as they were (a careful copy-over)."""
    path = folder / "train" / "cat" / "000.png"
    stat, data = path.stat(), bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _link(relative: str, target: str) -> Callable[[Path], None]:
    return lambda folder: os.symlink(target, folder / relative)


def _bomb(folder: Path) -> None:
    """A small PNG file of more pixels than PIL decodes (twice its MAX_IMAGE_PIXELS): a decompression bomb."""
    from PIL import Image

    Image.new("1", (13500, 13500)).save(folder / "train" / "cat" / "bomb.png")


def _unicode_twins(folder: Path) -> None:
    """The class 'café' written with a composed é in train/ and as e + combining accent in test/."""
    (folder / "train" / "cat").rename(folder / "train" / "caf\u00e9")
    (folder / "test" / "cat").rename(folder / "test" / "cafe\u0301")


def _edit_json(relative: str, change: Callable[[dict], object]) -> Setup:
    def setup(root: Path, tmp: Path) -> None:
        data = json.loads((root / relative).read_text())
        change(data)
        (root / relative).write_text(json.dumps(data))
    return setup


def _base_of_other_widths(tensors: dict, meta: dict) -> None:
    """The generated parameters' tensors in the base twice as wide: a base of another model's widths."""
    for name in meta["spec"]["names"]:
        tensors[name] = torch.zeros(2 * tensors[name].shape[0])
CASES = [
    # ---- config: keys, types, values -------------------------------------------------------------
    Case("unknown-key", ["run", "collect.kk=3"], "unknown config key 'collect.kk'", "did you mean collect.k"),
    Case("unknown-section", ["run", "trian.autoencoder.steps=5"], "unknown config key 'trian.autoencoder.steps'",
         "did you mean train.autoencoder.steps"),
    Case("wrong-type-int", ["run", "collect.k=many"], "collect.k", "give it a value of its type"),
    Case("wrong-type-bool", ["run", "data.download=maybe"], "data.download", "give it a value of its type"),
    Case("wrong-type-float", ["run", "collect.lr=fast"], "collect.lr", "give it a value of its type"),
    Case("k-zero", ["run", "collect.k=0"], "collect.k=0 must be positive", "set it to 1 or more"),
    Case("k-negative", ["run", "collect.k=-5"], "collect.k=-5 must be positive", "set it to 1 or more"),
    Case("n-zero", ["run", "generate.n=0"], "generate.n=0 must be positive", "set it to 1 or more"),
    Case("n-negative", ["run", "generate.n=-2"], "generate.n=-2 must be positive", "set it to 1 or more"),
    Case("sampling-steps-zero", ["run", "generate.steps=0"], "generate.steps=0", "set it to 1 or more"),
    Case("negative-noise", ["run", "train.autoencoder.latent_noise=-0.1"], "latent_noise=-0.1",
         "set it to 0 or above"),
    Case("bad-choice", ["run", "generate.sampler=heun"], "generate.sampler='heun'", "choose one of ddpm, ddim"),
    Case("unknown-task", ["run", "mnist1d-convnt"], "unknown task 'mnist1d-convnt'", "did you mean mnist1d-convnet"),
    Case("unknown-dataset", ["run", "data.name=imagenet"], "data.name='imagenet'", "choose one of cifar10"),
    Case("unknown-model", ["run", "model.name=resnet"], "model.name='resnet'",
         "choose one of cifar_resnet18, convnet1d"),
    Case("model-kwargs", ["run", "model.kwargs={width: 3}"], "model.kwargs has 'width'", "choose from channels"),
    Case("autoencoder-kwargs", ["run", "train.autoencoder.kwargs={bogus: 1}"],
         "train.autoencoder.kwargs has 'bogus'", "choose from"),
    Case("override-not-yaml", ["run", "collect.subset=[a"], "an override is not valid YAML",
         "e.g. 'collect.subset=[layer4.*]'"),
    Case("task-file-not-yaml", ["run", "{tmp}/task.yaml"], "task.yaml is not valid YAML", "fix its syntax",
         write_file("task.yaml", b"collect: {k: [\n", under_tmp=True)),
    Case("task-file-not-mapping", ["run", "{tmp}/task.yaml"], "holds no mapping of config keys", "write e.g.",
         write_file("task.yaml", b"- collect\n- train\n", under_tmp=True)),
    Case("task-file-unknown-key", ["run", "{tmp}/task.yaml"], "unknown config key 'colect.k' in", "did you mean",
         write_file("task.yaml", b"colect: {k: 3}\n", under_tmp=True)),
    Case("bad-force", ["run", "--force", "trian"], "--force 'trian'", "choose one of collect, train"),
    Case("holdout-too-large", ["run", "train.holdout=199"], "train.holdout=199 leaves fewer than 2",
         "hold out at most 198"),
    Case("bad-device", ["run", "device=tpu"], "device='tpu' is not a torch device", "use auto, cpu"),
    Case("device-meta", ["run", "device=meta"], "device='meta' cannot train or run models", "use auto, cpu"),
    Case("lr-negative", ["run", "collect.lr=-0.1"], "collect.lr=-0.1 is out of range", "give a finite value in (0,"),
    Case("autoencoder-lr-zero", ["run", "train.autoencoder.lr=0"], "train.autoencoder.lr=0.0 is out of range",
         "give a finite value in (0,"),
    Case("diffusion-lr-infinite", ["run", "train.diffusion.lr=.inf"], "train.diffusion.lr=inf is out of range",
         "give a finite value"),
    Case("momentum-negative", ["run", "collect.momentum=-0.5"], "collect.momentum=-0.5 is out of range",
         "in [0, 1]"),
    Case("ema-decay-above-1", ["run", "train.diffusion.ema_decay=1.5"], "train.diffusion.ema_decay=1.5 must be in",
         "0 to sample the raw denoiser weights"),
    Case("beta-end-above-1", ["run", "train.diffusion.beta_end=1.5"], "train.diffusion.beta_end=1.5 is out",
         "in (0, 1)"),
    Case("beta-start-above-end", ["run", "train.diffusion.beta_start=0.5"], "beta_start=0.5 is above beta_end",
         "swap them"),
    Case("one-timestep", ["run", "train.diffusion.num_train_timesteps=1"], "num_train_timesteps=1 is too few",
         "set it to 2 or more"),
    Case("sampling-steps-above-timesteps", ["run", "generate.steps=2000"],
         "generate.steps=2000 is more than the 1000 timesteps", "set it to 1..1000"),
    Case("latent-dim-one", ["run", "train.autoencoder.latent_dim=1"], "latent_dim=1 is too small",
         "set it to 2 or more"),
    Case("seed-beyond-64-bits", ["run", "seed=18446744073709551616"], "seed=18446744073709551616 is not a 64-bit",
         "give a whole number in 0.."),
    Case("seed-negative", ["run", "seed=-1"], "seed=-1 is not a 64-bit seed", "give a whole number in 0.."),
    Case("model-kwargs-negative", ["run", "model.kwargs={channels: [16, -32, 32]}"],
         "model.kwargs.channels.1=-32 is negative", "give sizes of 1 or more"),
    Case("model-kwargs-rejected", ["collect", *TINY, "model.kwargs={channels: [16, 32]}"],
         "model.kwargs={'channels': [16, 32]} cannot build the network", "fix model.kwargs"),
    Case("autoencoder-kwargs-rejected", ["run", "train.autoencoder.kwargs={hidden: [1, 2]}"],
         "train.autoencoder.kwargs={'hidden': [1, 2]} cannot build the network", "fix train.autoencoder.kwargs"),
    Case("denoiser-kwargs-rejected", ["run", "train.diffusion.kwargs={depth: 2.5}"],
         "train.diffusion.kwargs={'width': 256, 'depth': 2.5} cannot build the network",
         "fix train.diffusion.kwargs"),
    Case("global-tokens-set-by-hand", ["run", "train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                                       "train.diffusion.kwargs={global_tokens: 2}"],
         "train.diffusion.kwargs has 'global_tokens'", "choose from"),
    Case("global-latent-raw-latents", ["run", "train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                                       "train.autoencoder.kwargs={global_dim: 16}",
                                       "train.diffusion.standardise_latents=false"],
         "standardise_latents=false with a global latent", "set global_dim: 0"),
    Case("global-steps-without-global-latent", ["run", "train.autoencoder.arch=tokens",
                                                 "train.diffusion.arch=transformer",
                                                 "train.diffusion.global_steps=100"],
         "global_steps=100 trains a denoiser for the global latent", "or global_steps: 0"),
    Case("generate-n-beyond-memory", ["run", *TINY, "generate.n=1000000000"],
         "generate.n=1000000000 needs at least", "ask for fewer models"),
    # ---- task names are folder names ----------------------------------------------------------------
    Case("task-dot-dot", ["run", "task=.."], "task='..' is not a plain name", "use letters, digits"),
    Case("task-absolute-path", ["run", "task={tmp}/elsewhere"], "is not a plain name", "e.g. task=my-run"),
    Case("task-empty", ["run", "task=''"], "task='' is not a plain name", "use letters, digits"),
    Case("task-file-names-a-path", ["run", "{tmp}/task.yaml"], "task='../escape' is not a plain name",
         "use letters, digits", write_file("task.yaml", b"task: ../escape\n", under_tmp=True)),
    # ---- parameter selection -----------------------------------------------------------------------
    Case("empty-subset", ["run", "collect.subset=[]"], "collect.subset is empty", "give glob patterns"),
    Case("pattern-matches-nothing", ["collect", *TINY, "collect.subset=[nothing.*]"],
         "pattern 'nothing.*' matches no parameter", "parameter names look like"),
    Case("pattern-matches-int-buffer", ["collect", *TINY, "collect.subset=['*.num_batches_tracked']"],
         "matches no parameter of ConvNet1d: it names a buffer", "parameter names look like"),
    Case("last-norm-not-a-number", ["collect", *TINY, "collect.subset=[last_norm:two]"],
         "bad selection 'last_norm:two'", "write last_norm:N"),
    Case("last-norm-too-many", ["collect", *TINY, "collect.subset=[last_norm:9]"],
         "the last 9 normalization layers but ConvNet1d has 3", "choose 1..3"),
    # ---- datasets -----------------------------------------------------------------------------------
    Case("val-size-too-large", ["collect", *TINY, "data.val_size=5000"], "data.val_size=5000 holds out 5000 of the",
         "give a count between 1 and 1199, or a fraction such as 0.1"),
    Case("missing-dataset", ["collect", "mnist-convnet3", "data.download=false", "--data-dir", "{tmp}/empty"],
         "MNIST is not in", "pass --data-dir / set PDIFF_DATA"),
    Case("corrupt-dataset", ["collect", "mnist-convnet3", "data.download=false", "--data-dir", "{tmp}/data"],
         "MNIST in", "is incomplete or corrupt", _truncated_mnist),
    Case("imagefolder-missing", IMAGES, "images/train is missing", "pass the folder holding them as --data-dir"),
    Case("imagefolder-no-test-split", IMAGES, "images/test is missing", "test/<class>/ folders",
         _image_folder(lambda folder: shutil.rmtree(folder / "test"))),
    Case("imagefolder-classes-differ", IMAGES, "only in train/: dog; only in test/: dogs",
         "give both splits the same class folders",
         _image_folder(lambda folder: (folder / "test" / "dog").rename(folder / "test" / "dogs"))),
    Case("imagefolder-unreadable-image", IMAGES, "cannot read the image", "train/dog/001.jpg",
         _image_folder(lambda folder: (folder / "train" / "dog" / "001.jpg").write_bytes(b"\xff\xd8 truncated"))),
    Case("imagefolder-empty-class", IMAGES, "train/bird holds no images", "add images to it or remove the folder",
         _image_folder(lambda folder: (folder / "train" / "bird").mkdir())),
    Case("imagefolder-no-class-folders", IMAGES, "holds no class folders", "put each class's images in",
         _image_folder(lambda folder: shutil.rmtree(folder / "train") or (folder / "train").mkdir())),
    Case("imagefolder-sizes-differ", IMAGES, "the images differ in size", "set data.image_size=N",
         _image_folder(lambda folder: write_image_folder(folder, {"test": {"cat": 3}}, size=(6, 6)))),
    Case("image-size-zero", ["run", "data.image_size=0"], "data.image_size=0 must be positive",
         "or null to keep the images' size"),
    # ---- the run folder -----------------------------------------------------------------------------
    Case("stage-before-its-input", ["train", *TINY], "stage 'train' needs 'collect' first", "run `pdiff collect`"),
    Case("runs-dir-under-a-file", ["run", *TINY, "--runs-dir", "{tmp}/task.yaml/runs"],
         "cannot write to the run folder", "pass another --runs-dir",
         write_file("task.yaml", b"collect: {k: 3}\n", under_tmp=True)),
    Case("run-folder-locked", ["run", *TINY], "is in use by another pdiff process", "wait for it to finish",
         _lock_held_by_a_live_process, run=True),
    Case("corrupt-stage-marker", ["run", *TINY], "stage.json is not valid JSON", "delete it and rerun",
         write_file("collect/stage.json", b"{broken"), run=True),
    Case("missing-artifact", ["train", *TINY, *FORCE], "stage 'train' needs 'collect' first", "run `pdiff collect`",
         lambda root, tmp: (root / "collect/checkpoints.safetensors").unlink(), run=True),
    # ---- checkpoints ----------------------------------------------------------------------------------
    Case("truncated-checkpoints", ["train", *TINY, *FORCE], "checkpoints.safetensors is corrupt",
         "delete it and rerun its stage", write_file("collect/checkpoints.safetensors", lambda b: b[:-100]),
         run=True),
    Case("not-a-safetensors-file", ["train", *TINY, *FORCE], "is corrupt or not a pdiff file",
         "delete it and rerun its stage", write_file("collect/checkpoints.safetensors", b"not a tensor file"),
         run=True),
    Case("hand-edited-header", ["train", *TINY, *FORCE], "is corrupt", "delete it and rerun its stage",
         write_file("collect/checkpoints.safetensors", _edit_header), run=True),
    Case("k-larger-than-collected", ["train", *TINY, *FORCE], "holds 5 checkpoints but collect.k=12",
         "rerun `pdiff collect --force`", edit_tensors("collect/checkpoints.safetensors", _fewer_rows), run=True),
    Case("checkpoints-of-another-model", ["train", *TINY, *FORCE], "no parameter 'fc.weight'",
         "rerun `pdiff collect --force`",
         edit_tensors("collect/checkpoints.safetensors", _set_meta("spec", {"names": ["fc.weight"],
                                                                             "shapes": [[128]]})), run=True),
    Case("checkpoints-of-another-subset", ["train", *TINY, *FORCE], "another parameter subset than collect.subset",
         "rerun `pdiff collect --force`", edit_tensors("collect/checkpoints.safetensors", _first_tensor_only),
         run=True),
    Case("checkpoints-of-another-config", ["train", *TINY, *FORCE], "was made under another config",
         "rerun `pdiff collect --force`",
         edit_tensors("collect/checkpoints.safetensors", _set_meta("config_hash", "0" * 16)), run=True),
    Case("nan-in-checkpoints", ["train", *TINY, *FORCE], "contains NaN or Inf parameters",
         "rerun `pdiff collect --force`", edit_tensors("collect/checkpoints.safetensors", _nan("params", (3, 5))),
         run=True),
    Case("inf-in-base-model", ["train", *TINY, *FORCE], "contains NaN or Inf weights", "rerun `pdiff collect --force`",
         edit_tensors("collect/base.safetensors", _nan("head.weight", (0, 0))), run=True),
    Case("base-of-another-model", ["train", *TINY, *FORCE], "base.safetensors was saved from model",
         "rerun `pdiff collect --force`", edit_tensors("collect/base.safetensors", _base_of_another_model),
         run=True),
    # ---- your own checkpoints (collect.from, collect.base, train.holdout_from) --------------------------
    Case("from-matches-nothing", ["collect", *TINY, "collect.from={tmp}/mine/*.pt"], "matches no file or folder",
         "give a glob of .safetensors state_dict files, .pt / .pth"),
    Case("from-not-a-checkpoint", ["collect", *TINY, "collect.from={tmp}/mine/*"], "which is no checkpoint pdiff",
         "narrow the glob", own_checkpoint("notes.txt", lambda state: b"notes")),
    Case("from-unreadable", ["collect", *TINY, "collect.from={tmp}/mine/*"], "is not a readable torch file",
         "save model.state_dict() again, with torch.save or as safetensors",
         own_checkpoint("c.pt", lambda state: b"x" * 9)),
    Case("from-pickle-refused", ["collect", *TINY, "collect.from={tmp}/mine/*"],
         "holds a Python object (argparse.Namespace) besides tensors, which pdiff does not unpickle",
         "save the state_dict alone", own_checkpoint("c.pt", lambda state: {
             "model": state, "args": argparse.Namespace(lr=0.1)})),
    Case("from-not-a-state-dict", ["collect", *TINY, "collect.from={tmp}/mine/*"], "holds a list, not a state_dict",
         "save model.state_dict()", own_checkpoint("c.pt", lambda state: list(state.values()))),
    Case("from-wrapped-without-key", ["collect", *TINY, "collect.from={tmp}/mine/*"],
         "holds a dict around the state_dict", "set collect.state_dict_key=model",
         own_checkpoint("c.pt", lambda state: {"epoch": 3, "model": state})),
    Case("from-missing-state-dict-key", ["collect", *TINY, "collect.from={tmp}/mine/*",
                                         "collect.state_dict_key=state_dict"],
         "has no entry collect.state_dict_key='state_dict' (it holds epoch, model)",
         "set collect.state_dict_key to the entry", own_checkpoint("c.pt", lambda state: {"epoch": 3, "model": state})),
    Case("from-name-mismatch", ["collect", *TINY, "collect.from={tmp}/mine/*"],
         "holds 'module.features.0.0.weight', which the model has not", "save the model's own state_dict",
         own_checkpoint("c.pt", lambda state: {f"module.{n}": t for n, t in state.items()})),
    Case("from-shape-mismatch", ["collect", *TINY, "collect.from={tmp}/mine/*"],
         "'head.bias' is (3,) but the model's is (10,)", "of another model or of other model.kwargs",
         own_checkpoint("c.pt", _replaced("head.bias", torch.zeros(3)))),
    Case("from-dtype-mismatch", ["collect", *TINY, "collect.from={tmp}/mine/*"],
         "'head.bias' is torch.float16 but the model's is torch.float32", "save the checkpoint in torch.float32",
         own_checkpoint("c.pt", _replaced("head.bias", torch.zeros(10, dtype=torch.float16)))),
    Case("base-missing", ["collect", *TINY, "collect.base={tmp}/base.pt"], "collect.base='", "does not exist"),
    Case("base-incomplete", ["collect", *TINY, "collect.base={tmp}/mine/c.pt"], "lacks 'head.weight' of the model",
         "give a whole state_dict", own_checkpoint("c.pt", lambda state: {
             n: t for n, t in state.items() if n != "head.weight"})),
    Case("holdout-from-with-holdout", ["run", *TINY, "train.holdout=2", "train.holdout_from={tmp}/mine/*"],
         "train.holdout_from with train.holdout=2: the held-out checkpoints come from one or the other",
         "set train.holdout=0", own_checkpoint("c.pt")),
    # ---- generator, generated parameters, results ------------------------------------------------------
    Case("generator-of-another-subset", ["generate", *TINY, *FORCE], "trained for another parameter subset",
         "retrain it with `pdiff train --force`", _edit_both_generator_files(_other_spec), run=True),
    Case("generator-files-mixed", ["generate", *TINY, *FORCE], "mixes an autoencoder and a diffusion model",
         "rerun `pdiff train --force`", edit_tensors("train/diffusion.safetensors", _other_spec), run=True),
    Case("generator-of-another-config", ["generate", *TINY, *FORCE], "trained under another config",
         "rerun `pdiff train --force`",
         edit_tensors("train/autoencoder.safetensors", _set_meta("config_hash", "0" * 16)), run=True),
    Case("nan-in-generator", ["generate", *TINY, *FORCE], "produced NaN or Inf parameters",
         "retrain with `pdiff train --force`", edit_tensors("train/autoencoder.safetensors",
                                                             _nan("normalizer.std")), run=True),
    Case("generated-for-another-subset", ["evaluate", *TINY, *FORCE], "made for another parameter subset",
         "rerun `pdiff generate --force`", edit_tensors("generate/generated.safetensors", _other_spec), run=True),
    Case("nan-in-generated", ["evaluate", *TINY, *FORCE], "holds no finite 'params'", "rerun `pdiff generate --force`",
         edit_tensors("generate/generated.safetensors", _nan("params", (2, 7))), run=True),
    Case("results-not-an-object", ["report", *TINY], "results.json holds no evaluation summary",
         "rerun `pdiff evaluate --force`", _write_results(b"[1, 2]\n"), run=True),
    Case("results-without-summary", ["report", *TINY], "results.json holds no evaluation summary",
         "rerun `pdiff evaluate --force`", _write_results(b'{"task": "mnist1d-convnet"}\n'), run=True),
    Case("results-of-another-config", ["report", *TINY, *FORCE], "results.json was made under another config",
         "rerun `pdiff evaluate --force`", _results_of_another_config, run=True),
    # ---- training that diverges or collapses -----------------------------------------------------------
    Case("nan-loss-base-training", ["collect", *TINY, "collect.lr=1e30", "-q"], "loss became",
         "lower collect.lr"),
    Case("nan-loss-autoencoder", ["train", *TINY, "train.autoencoder.lr=1e30", *FORCE], "autoencoder loss became",
         "lower train.autoencoder.lr", run=True),
    Case("nan-loss-diffusion", ["train", *TINY, "train.diffusion.lr=1e30", *FORCE], "diffusion loss became",
         "lower train.diffusion.lr", run=True),
    Case("autoencoder-collapsed", ["train", *TINY, "train.health_tolerance=-1", *FORCE], "it has collapsed",
         "raise train.autoencoder.steps", run=True),
    # ---- pdiff sample -----------------------------------------------------------------------------------
    Case("sample-not-a-run", ["sample", "{tmp}/nowhere"], "base.safetensors does not exist",
         "run the stage that writes it"),
    Case("sample-zero-models", ["sample", "{root}", "-n", "0"], "-n 0", "ask for at least one model", run=True),
    Case("sample-bad-sampler", ["sample", "{root}", "--sampler", "heun"], "--sampler 'heun'",
         "choose one of ddpm", run=True),
    Case("sample-zero-steps", ["sample", "{root}", "--steps", "0"], "--steps 0", "give a positive number", run=True),
    Case("sample-beyond-memory", ["sample", "{root}", "-n", "100000000000", "--out", "{tmp}/out"],
         "-n 100000000000 needs at least", "ask for fewer models", run=True),
    Case("sample-out-not-empty", ["sample", "{root}", "--out", "{root}"], "is not empty and holds no `pdiff sample`",
         "give a new or empty folder", run=True),
    Case("sample-out-is-a-file", ["sample", "{root}", "--out", "{root}/config.yaml"], "is a file, not a folder",
         "pass a folder", run=True),
    Case("sample-generator-files-of-two-runs", ["sample", "{root}", "--out", "{tmp}/out"],
         "trained under another config (hash 1111111111111111, this config", "rerun `pdiff train --force`",
         edit_tensors("train/diffusion.safetensors", _set_meta("config_hash", "1" * 16)), run=True),
    Case("sample-after-collect-with-another-seed", ["sample", "{root}", "--out", "{tmp}/out"],
         "trained under another config", "rerun `pdiff train --force`", _collect_again_with_another_seed, run=True),
    # ---- pdiff ablate ------------------------------------------------------------------------------------
    Case("ablate-misspelt-task", ["ablate", "mnist1d-convnt", "--study", "location"],
         "'mnist1d-convnt' is not a task (did you mean mnist1d-convnet?)", "give the task first"),
    Case("ablate-k-on-own-checkpoints", ["ablate", *TINY, "collect.from={tmp}/mine/*", "--study", "k", "5"],
         "--study k takes the first K of pdiff's own collection", "runs whose collect.from globs match fewer",
         own_checkpoint("c.pt")),
    Case("ablate-k-not-a-number", ["ablate", "--study", "k", "ten"], "K value 'ten' is not a whole number",
         "give the K values to compare as numbers"),
    Case("ablate-location-matches-nothing", ["ablate", *TINY, "--study", "location", "nothing.*"],
         "pattern 'nothing.*' matches no parameter", "parameter names look like"),
    Case("ablate-two-locations-one-folder", ["ablate", *TINY, "--study", "location", "features.2.1.*",
                                             "features.2.1"],
         "locations 'features.2.1.*' and 'features.2.1' select the same parameters", "give one of them"),
    Case("ablate-one-value-twice", ["ablate", *TINY, "--study", "k", "3", "3"],
         "two values ask for the same variant 'k3'", "give each value once"),
    # ---- a finished run is never replaced unasked ---------------------------------------------------------
    Case("rerun-another-collect-config", ["run", *TINY, "collect.k=10", "-q"],
         "collect, train, generate, evaluate, report finished under another config (collect.k: 12 -> 10)",
         "rerun with --force collect", run=True),
    Case("rerun-own-images-in-a-preset-folder", ["run", *TINY, "data.name=imagefolder", "data.val_size=2",
                                                 "--data-dir", "{tmp}/images", "-q"],
         "finished under another config (data.name: 'mnist1d' -> 'imagefolder'", "task=NEW-NAME",
         _image_folder(), run=True),
    Case("rerun-another-train-config", ["train", *TINY, "train.diffusion.steps=100", "-q"],
         "train, generate, evaluate, report finished under another config (train.diffusion.steps: 150 -> 100)",
         "rerun with --force train", run=True),
    Case("images-relabelled-after-collect", IMAGE_RUN, "collect finished under another config (the data changed",
         "rerun with --force collect", _image_run(_relabel)),
    Case("image-replaced-keeping-size-and-mtime", IMAGE_RUN, "(the data changed since: imagefolder at",
         "rerun with --force collect", _image_run(_replace_keeping_size_and_mtime)),
    # ---- image folders: links, huge images, names, sizes ------------------------------------------------
    Case("imagefolder-link-leaves-its-class", IMAGES, "outside its class folder", "copy the image there",
         _image_folder(_link("train/cat/other.png", "../dog/000.png"))),
    Case("imagefolder-link-loop", IMAGES, "are the same folder (a link loop or a second link)",
         "delete the extra link", _image_folder(_link("train/cat/loop", "."))),
    Case("imagefolder-second-link-to-an-image", IMAGES, "are the same file (a second link)",
         "delete the extra link", _image_folder(_link("train/cat/again.png", "000.png"))),
    Case("imagefolder-folder-link-to-another-class", IMAGES, "outside its class folder",
         "copy the images there, or move the link", _image_folder(_link("train/cat/dogs", "../dog"))),
    Case("imagefolder-dangling-link", IMAGES, "which does not exist", "fix the link or delete it",
         _image_folder(_link("train/cat/gone.png", "nowhere.png"))),
    Case("imagefolder-decompression-bomb", IMAGES, "bomb.png is too large to decode safely", "shrink it or delete it",
         _image_folder(_bomb)),
    Case("imagefolder-classes-differ-in-unicode-only", IMAGES, "differ only in how their Unicode accents are encoded",
         "give both splits the same class folders", _image_folder(_unicode_twins)),
    Case("images-below-the-poolings", [*IMAGES, "model.name=convnet3"], "the images are 4x4, too small for "
         "model.name=convnet3", "set data.image_size=N",
         lambda root, tmp: write_image_folder(tmp / "images", {"train": {"cat": 3, "dog": 3},
                                                               "test": {"cat": 1, "dog": 1}}, size=(4, 4))),
    Case("image-size-below-the-poolings", [*IMAGES, "model.name=convnet3", "data.image_size=4"],
         "data.image_size=4 is too small for model.name=convnet3", "give a larger data.image_size",
         _image_folder()),
    # ---- values range-checked before work ---------------------------------------------------------------
    Case("sample-steps-above-timesteps", ["sample", "{root}", "--steps", "5000", "--out", "{tmp}/out"],
         "steps=5000: sample with 1..1000 steps", "or None for the default", run=True),
    Case("sample-seed-beyond-64-bits", ["sample", "{root}", "--seed", "18446744073709551616", "--out", "{tmp}/out"],
         "--seed 18446744073709551616 is not a 64-bit seed", "give a whole number in 0..", run=True),
    Case("sample-base-of-other-widths", ["sample", "{root}", "--out", "{tmp}/out"], "but the base state_dict has it",
         "merge into the model's own weights", edit_tensors("collect/base.safetensors", _base_of_other_widths),
         run=True),
    Case("transformer-window-zero", ["run", "train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                                     "train.diffusion.kwargs={window: 0}"],
         "train.diffusion.kwargs.window=0", "1 or more"),
    # ---- JSON files that are valid JSON but not what pdiff wrote ------------------------------------------
    Case("stage-marker-not-an-object", ["run", *TINY], "collect/stage.json holds a JSON list, not an object",
         "rerun `pdiff collect --force`", write_file("collect/stage.json", b"[1, 2]\n"), run=True),
    Case("stage-marker-not-utf8", ["run", *TINY], "stage.json is not UTF-8 text", "delete it and rerun its stage",
         write_file("train/stage.json", b'{"hash": "\xff"}'), run=True),
    Case("stage-marker-without-hash", ["run", *TINY], "stage.json has no 'hash'", "rerun `pdiff generate --force`",
         _edit_json("generate/stage.json", lambda d: d.pop("hash")), run=True),
    Case("stage-marker-files-not-a-list", ["run", *TINY], "'files' is a int", "rerun `pdiff evaluate --force`",
         _edit_json("evaluate/stage.json", lambda d: d.update(files=3)), run=True),
    Case("stage-marker-without-seconds", ["report", *TINY, *FORCE], "stage.json has no 'seconds'",
         "rerun `pdiff train --force`", _edit_json("train/stage.json", lambda d: d.pop("seconds")), run=True),
    Case("results-without-models", ["report", *TINY, *FORCE], "results.json has no 'models'",
         "rerun `pdiff evaluate --force`", _edit_json("evaluate/results.json", lambda d: d.pop("models")), run=True),
    # ---- messages that say what is wrong ------------------------------------------------------------------
    Case("kwargs-without-a-space", ["run", "train.autoencoder.kwargs={hidden:64}"],
         "YAML reads 'hidden:64' as one key", "with a space after the colon"),
    Case("last-norm-without-norm-layers", ["collect", *TINY, "model.name=mlp", "model.kwargs={hidden: []}"],
         "MLP has none with parameters", "select parameters by name instead"),
    Case("newline-in-runs-dir", ["run", *TINY, "--runs-dir", "{tmp}/a\nb/runs"], "a\\nb",
         "pass another --runs-dir", write_file("a\nb", b"", under_tmp=True)),
]
if os.geteuid() != 0:  # root writes anywhere, so a read-only folder cannot be tested as root
    CASES.append(Case("read-only-run-folder", ["run", *TINY], "cannot write to the run folder",
                      "fix its permissions", _read_only, run=False))
    CASES.append(Case("sample-out-read-only", ["sample", "{root}", "--out", "{tmp}/out"], "cannot write",
                      "fix the folder's permissions", lambda root, tmp: (tmp / "out").mkdir(mode=0o500), run=True))
if not torch.cuda.is_available():
    CASES.append(Case("cuda-without-gpu", ["collect", *TINY, "device=cuda"], "torch sees no CUDA GPU",
                      "use device=cpu"))
else:
    CASES.append(Case("cuda-index-not-there", ["collect", *TINY, "device=cuda:99"], "device='cuda:99' but torch sees",
                      "use cuda:0.."))
if not torch.backends.mps.is_available():
    CASES.append(Case("mps-not-there", ["run", "device=mps"], "device='mps' but this machine has no usable Apple GPU",
                      "use device=cpu"))


@pytest.fixture(scope="module")
def finished(tiny_run: Path) -> Path:
    """The runs folder of a finished tiny run, which the `run=True` cases copy."""
    return tiny_run.parent


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) -> hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_1_and_leaves_nothing(case: Case, finished: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    root = runs / TASK
    if case.run:
        shutil.copytree(finished, runs)
    else:
        root.mkdir(parents=True)
    if case.setup is not None:
        case.setup(root, tmp_path)
    before = snapshot(runs)
    args = [a.replace("{runs}", str(runs)).replace("{root}", str(root)).replace("{tmp}", str(tmp_path))
            for a in case.args]
    if args[0] != "sample" and "--runs-dir" not in args:
        args += ["--runs-dir", str(runs)]
    try:
        result = runner.invoke(app, args)
    finally:
        root.chmod(0o755)

    output = result.output.strip()
    assert result.exit_code == 1, output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in output, output
    error = output[output.rfind("error:"):]
    assert output.count("error:") == 1 and "\n" not in error, output  # one line, and the last one
    assert case.problem in error and case.fix in error, error
    after = snapshot(runs)
    assert {k: v for k, v in after.items() if k in before} == before, "a file that was there changed"
    assert set(after) - set(before) <= {f"{TASK}/config.yaml"}, "a partial artifact was left"
