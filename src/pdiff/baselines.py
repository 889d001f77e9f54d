"""Reference parameter vectors to compare generated models against."""

from __future__ import annotations

import torch


def weight_average(params: torch.Tensor) -> torch.Tensor:
    """The uniform average of all checkpoints [K, D] -> [1, D] (the paper's "ensemble")."""
    return params.mean(0, keepdim=True)
