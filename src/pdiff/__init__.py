"""pdiff: Neural Network Diffusion (p-diff, Wang et al. 2024) as a library and a command line."""

from .ablation import ablate
from .baselines import fine_tuned, gaussian_fit, mean_of_k, noise_added, weight_average
from .collect import CheckpointSet, collect, train_base
from .config import Config, load_config
from .evaluate import accuracy, predict, predict_many
from .generator import ParameterGenerator
from .params import Normalizer, ParamSpec, last_norm_layers
from .pipeline import Run, run_pipeline, run_stage, sample_models
from .similarity import iou_matrix, max_similarity, nearest_checkpoint, similarity_summary

__all__ = [
    "CheckpointSet", "Config", "Normalizer", "ParamSpec", "ParameterGenerator", "Run", "ablate", "accuracy",
    "collect", "fine_tuned", "gaussian_fit", "iou_matrix", "last_norm_layers", "load_config", "max_similarity",
    "mean_of_k", "nearest_checkpoint", "noise_added", "predict", "predict_many", "run_pipeline", "run_stage",
    "sample_models", "similarity_summary", "train_base", "weight_average",
]
