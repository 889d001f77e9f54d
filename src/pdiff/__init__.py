"""pdiff: Neural Network Diffusion (p-diff, Wang et al. 2024) as a library and a command line."""

from .ablation import ablate
from .baselines import fine_tuned, gaussian_fit, mean_of_k, noise_added, weight_average
from .checkpoints import CheckpointSet
from .collect import collect, train_base
from .config import Config, load_config
from .errors import PdiffError
from .generate import sample_models
from .generator import ParameterGenerator
from .inference import accuracy, predict, predict_many
from .params import Normalizer, ParamSpec, last_norm_layers
from .pipeline import Run, run_pipeline, run_stage
from .similarity import iou_matrix, max_similarity, nearest_checkpoint, similarity_summary
from .tasks import Task

__all__ = [
    "CheckpointSet", "Config", "Normalizer", "ParamSpec", "ParameterGenerator", "PdiffError", "Run", "Task", "ablate",
    "accuracy", "collect", "fine_tuned", "gaussian_fit", "iou_matrix", "last_norm_layers", "load_config",
    "max_similarity", "mean_of_k", "nearest_checkpoint", "noise_added", "predict", "predict_many", "run_pipeline",
    "run_stage", "sample_models", "similarity_summary", "train_base", "weight_average",
]
