"""pdiff: Neural Network Diffusion (p-diff, Wang et al. 2024) as a library and a command line."""

from .ablation import ablate
from .baselines import fine_tuned, gaussian_fit, interpolation, mean_of_k, noise_added, weight_average
from .checkpoint_files import checkpoints_from
from .checkpoints import CheckpointSet
from .collect import collect, collect_checkpoints, train_base  # collect: collect_checkpoints, as before
from .config import Config
from .errors import PdiffError
from .evaluate import FineTuning, evaluate_models
from .generator import ParameterGenerator
from .inference import accuracy, predict, predict_many
from .params import Normalizer, ParamSpec, last_norm_layers
from .pipeline import Run, run_pipeline, run_stage
from .presets import load_config
from .report import write_report
from .run_folder import FinishedRun, open_run
from .sample import sample_models
from .similarity import iou_matrix, max_similarity, nearest_checkpoint, similarity_summary
from .task import Task

__all__ = [
    "CheckpointSet", "Config", "FineTuning", "FinishedRun", "Normalizer", "ParamSpec", "ParameterGenerator",
    "PdiffError", "Run", "Task", "ablate", "accuracy", "checkpoints_from", "collect", "collect_checkpoints",
    "evaluate_models", "fine_tuned", "gaussian_fit", "interpolation", "iou_matrix", "last_norm_layers",
    "load_config", "max_similarity", "mean_of_k", "nearest_checkpoint", "noise_added", "open_run", "predict",
    "predict_many", "run_pipeline", "run_stage", "sample_models", "similarity_summary", "train_base",
    "weight_average", "write_report",
]
