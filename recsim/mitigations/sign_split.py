"""Sign-split reinforcement as one module (Zhu et al. 2025).

Weights of positive and negative samples: PSR learns only from positives (+1, 0), NSR only from
negatives (0, -1), W-REINFORCE from both with positives down-weighted (lambda, -1). In the LLM
domain these are policy-gradient advantages; in the recommender they weight the click loss of
clicked (positive) and non-clicked (negative) impressions (magnitudes only: a loss weight is >= 0).
"""

from __future__ import annotations

import torch

MODES = ("psr", "nsr", "w_reinforce")


def sign_split_advantages(positive: torch.Tensor, mode: str, w_lambda: float = 0.1) -> torch.Tensor:
    """Advantages from a [N] bool of positive samples."""
    pos = positive.float()
    if mode == "psr":
        return pos
    if mode == "nsr":
        return pos - 1.0
    if mode == "w_reinforce":
        return w_lambda * pos - (1 - pos)
    raise ValueError(f"sign-split mode must be one of {', '.join(MODES)}, got {mode!r}")


def sign_split_weights(positive: torch.Tensor, mode: str, w_lambda: float = 0.1) -> torch.Tensor:
    """Non-negative per-sample loss weights: |advantage| of each sample."""
    return sign_split_advantages(positive, mode, w_lambda).abs()
