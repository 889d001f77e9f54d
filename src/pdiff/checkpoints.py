"""CheckpointSet: K saved values of one parameter subset, with what the collection measured about them.

It is what `collect` produces and what `ParameterGenerator.fit` consumes, so it lives below both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ArtifactError, TrainingError
from .folders import atomic_folder
from .hub import download
from .layout import CHECKPOINTS_FILE
from .params import ParamSpec
from .pretrained import CHECKPOINTS, checkpoints_card, read_export, write_export
from .provenance import version
from .store import load_tensors, save_tensors

TRAJECTORY_SPLITS = ("interleaved", "last")  # the splits of one collection (`CheckpointSet.split`)


@dataclass
class CheckpointSet:
    """K checkpoints of a parameter subset: params [K, D] and, once evaluated, their accuracies [K] and
    test-set predictions [K, n_test] (kept so that the evaluation never runs the originals again); from
    independent training runs (collect.runs), the run of each checkpoint runs [K]."""

    params: torch.Tensor
    spec: ParamSpec
    val_accuracy: torch.Tensor | None = None
    test_accuracy: torch.Tensor | None = None
    test_predictions: torch.Tensor | None = None
    runs: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.params)

    def rows(self, index: torch.Tensor | slice) -> CheckpointSet:
        """The checkpoints at `index` (a slice or an index tensor), with their measurements."""
        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]
        return CheckpointSet(self.params[index], self.spec, pick(self.val_accuracy), pick(self.test_accuracy),
                             pick(self.test_predictions), pick(self.runs))

    def split(self, holdout: int, how: str = "interleaved") -> tuple[CheckpointSet, CheckpointSet | None]:
        """(training checkpoints, held-out checkpoints or None): `holdout` rows kept from the generator.

        "interleaved" holds out every (K/H)-th checkpoint in collection order (rows floor((i + 1) K / H) - 1),
        so the held-out ones come from all along the trajectory; "last" holds out the final H.
        """
        if holdout == 0:
            return self, None
        k = len(self)
        if how == "last":
            heldout = torch.arange(k - holdout, k)
        elif how == "interleaved":
            heldout = torch.tensor([(i + 1) * k // holdout - 1 for i in range(holdout)])
        else:
            raise ValueError(f"holdout split {how!r}: choose one of {', '.join(TRAJECTORY_SPLITS)}")
        keep = torch.ones(k, dtype=torch.bool)
        keep[heldout] = False
        return self.rows(keep.nonzero().squeeze(1)), self.rows(heldout)

    def save(self, path: str | Path, metadata: dict | None = None) -> None:
        tensors = {"params": self.params}
        for name in ("val_accuracy", "test_accuracy", "test_predictions", "runs"):
            if getattr(self, name) is not None:
                tensors[name] = getattr(self, name)
        save_tensors(path, tensors, {**(metadata or {}), "spec": self.spec.to_dict()})

    @classmethod
    def load(cls, path: str | Path) -> tuple[CheckpointSet, dict]:
        tensors, metadata = load_tensors(path)
        if "params" not in tensors or "spec" not in metadata:
            raise ArtifactError(f"{path} holds no checkpoint set (no 'params' or spec): rerun `pdiff collect`")
        spec = ParamSpec.from_dict(metadata["spec"])
        if tensors["params"].shape[1] != spec.dim:
            raise ArtifactError(f"{path}: params have {tensors['params'].shape[1]} columns but the spec needs "
                                f"{spec.dim}; the file was edited or is corrupt: rerun `pdiff collect`")
        if not torch.isfinite(tensors["params"]).all():
            raise ArtifactError(f"{path} contains NaN or Inf parameters: rerun `pdiff collect --force`")
        ckpts = cls(tensors["params"], spec, tensors.get("val_accuracy"), tensors.get("test_accuracy"),
                    tensors.get("test_predictions"), tensors.get("runs"))
        return ckpts, metadata

    def save_pretrained(self, directory: str | Path, metadata: dict | None = None, force: bool = False) -> Path:
        """Write a Hugging Face hub dataset repository into `directory` (new or empty; an earlier checkpoints export
        is replaced only with `force`): checkpoints.safetensors, config.json and a dataset card (README.md).
        `pdiff export --checkpoints` adds a run's base model (`pdiff.share`)."""
        with atomic_folder(directory, CHECKPOINTS, force) as folder:
            self.write_pretrained(folder, metadata)
        return Path(directory)

    def write_pretrained(self, folder: Path, metadata: dict | None = None, command: str | None = None,
                         repo_id: str | None = None) -> None:
        """`save_pretrained`'s files, written into `folder` as it is (for an export that adds files of its own)."""
        metadata = dict(metadata or {})
        self.save(folder / CHECKPOINTS_FILE, metadata)
        fields = {**metadata, "k": len(self), "spec": self.spec.to_dict()}
        test = None if self.test_accuracy is None else self.test_accuracy.tolist()
        n_test = None if self.test_predictions is None else self.test_predictions.shape[1]
        config = {"library_name": "pdiff", "kind": CHECKPOINTS.kind, "pdiff_version": version(), **fields}
        write_export(folder, CHECKPOINTS, fields, checkpoints_card(config, test, n_test, command, repo_id))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, revision: str | None = None) -> CheckpointSet:
        """A checkpoint set from a folder written by `save_pretrained`, or from a hub dataset repo id (downloaded
        once, then read from the cache)."""
        folder = download(name_or_path, "dataset", revision)
        read_export(folder, CHECKPOINTS)
        ckpts, _ = cls.load(folder / CHECKPOINTS_FILE)
        return ckpts


def params_of(checkpoints: CheckpointSet | torch.Tensor, dim: int) -> torch.Tensor:
    """The parameter vectors [K, dim] (float32) of a CheckpointSet or a tensor, refused with one line when they
    have another width or hold NaN or Inf (training on them could only fail later)."""
    params = checkpoints.params if isinstance(checkpoints, CheckpointSet) else checkpoints
    if params.ndim != 2 or params.shape[1] != dim:
        raise ValueError(f"checkpoints must be [K, {dim}] for this spec, got {tuple(params.shape)}")
    finite = torch.isfinite(params).all(dim=1)
    if not finite.all():
        row = int((~finite).nonzero()[0])
        raise TrainingError(f"checkpoint {row} (of {len(params)}) holds NaN or Inf values, so training cannot "
                            "start: drop those rows or collect the checkpoints again")
    return params.float()
