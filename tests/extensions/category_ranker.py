"""A ranker kind in one file: each item scored by its category's click rate in the training window."""

from __future__ import annotations

from typing import Any, Literal

import polars as pl
import torch
from pydantic import Field

from recsim.recsys.config import RankerConfig, RankerKind
from recsim.recsys.rankers import column


class CategoryConfig(RankerConfig):
    """``category``: the click rate of the item's category, smoothed toward ``prior``."""

    name: Literal["category"] = "category"
    prior: float = Field(0.1, ge=0, le=1)
    """Click rate of a category never shown."""


class CategoryRanker:
    def __init__(self, config: Any, n_categories: int) -> None:
        self.prior = config.ranker.prior
        self.rate_ = torch.full((n_categories,), self.prior)

    def score(self, world, users, items, round_):  # noqa: ANN001, ANN201
        return self.rate_[world.item_category[items]]

    def predict_proba(self, world, users, items):  # noqa: ANN001, ANN201
        return self.score(world, users, items, 0)

    def fit(self, logs: pl.DataFrame, world: Any, round_: int) -> dict[str, float]:
        category = world.item_category[column(logs, "item", torch.long)]
        clicks = column(logs, "click", torch.float32)
        n = len(self.rate_)
        shows = torch.bincount(category, minlength=n).float()
        self.rate_ = (torch.bincount(category, weights=clicks, minlength=n) + self.prior) / (shows + 1)
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"rate": self.rate_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rate_ = state["rate"]


KIND = RankerKind(CategoryConfig, lambda config, world, dist: CategoryRanker(config, world.n_categories))
