"""Errors a run can stop with, besides bad input (:class:`recsim.config.ConfigError`)."""

from __future__ import annotations

import math
from typing import Any

import torch


class NonFiniteError(ValueError):
    """A loss, score or metric became NaN or infinite; the message names round, arm and tensor."""


def check_finite(name: str, value: Any) -> None:
    """Raise :class:`NonFiniteError` if a tensor or number holds NaN or infinity."""
    ok = bool(torch.isfinite(value).all()) if isinstance(value, torch.Tensor) else math.isfinite(value)
    if not ok:
        raise NonFiniteError(f"non-finite {name}")
