"""Baseline rankers that learn no weights: ``random``, ``popularity`` and ``oracle``.

``popularity`` ranks by clicks in the training window with a Beta-smoothed click rate as its
probability; ``oracle`` scores by the true relevance (the ideal recommender of the metrics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import polars as pl
import torch
from pydantic import Field, model_validator

from recsim.core.rng import generator
from recsim.recsys.config import RankerConfig, RankerKind
from recsim.recsys.rankers.training import column
from recsim.recsys.world import World

if TYPE_CHECKING:
    from recsim.config import SimConfig


class RandomConfig(RankerConfig):
    """``random``: uniformly random scores."""

    name: Literal["random"] = "random"


class PopularityConfig(RankerConfig):
    """``popularity``: most-clicked first."""

    name: Literal["popularity"] = "popularity"
    prior_clicks: float = Field(1.0, gt=0)
    """Pseudo-clicks of the Beta prior of the per-item click rate."""
    prior_impressions: float = Field(10.0, gt=0)
    """Pseudo-impressions of that prior (must exceed prior_clicks)."""

    @model_validator(mode="after")
    def _prior(self) -> PopularityConfig:
        if self.prior_impressions <= self.prior_clicks:
            raise ValueError(
                "ranker.prior_impressions must be > ranker.prior_clicks, got "
                f"{self.prior_impressions} <= {self.prior_clicks}"
            )
        return self


class OracleConfig(RankerConfig):
    """``oracle``: the true relevance."""

    name: Literal["oracle"] = "oracle"


class RandomRanker:
    """Uniformly random scores; predicts the window's overall click rate for every item."""

    def __init__(self, config: SimConfig) -> None:
        self.seed = config.seed
        self.ctr_ = 0.5

    def score(self, world: World, users: torch.Tensor, items: torch.Tensor, round_: int) -> torch.Tensor:
        gen = generator(self.seed, round_, "random-ranker", items.device)
        return torch.rand(items.shape, generator=gen, device=items.device)

    def predict_proba(self, world: World, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.full(items.shape, self.ctr_, device=items.device)

    def fit(self, logs: pl.DataFrame, world: World, round_: int) -> dict[str, float]:
        self.ctr_ = float(logs["click"].mean())
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"ctr": self.ctr_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ctr_ = float(state["ctr"])


class PopularityRanker:
    """Most-clicked first. Score: clicks in the window (ties broken by the smoothed click rate).
    Probability: (clicks + a) / (impressions + a + b), a Beta(a, b) posterior mean per item with
    a = ``prior_clicks``, a + b = ``prior_impressions``."""

    def __init__(self, config: SimConfig, n_items: int) -> None:
        self.a = config.ranker.prior_clicks
        self.n0 = config.ranker.prior_impressions
        self.device = torch.device(config.device)
        self.clicks_ = torch.zeros(n_items, device=self.device)
        self.shows_ = torch.zeros(n_items, device=self.device)

    def _rate(self, items: torch.Tensor) -> torch.Tensor:
        return (self.clicks_[items] + self.a) / (self.shows_[items] + self.n0)

    def score(self, world: World, users: torch.Tensor, items: torch.Tensor, round_: int) -> torch.Tensor:
        return self.clicks_[items] + self._rate(items)  # rate < 1 only breaks ties

    def predict_proba(self, world: World, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self._rate(items)

    def fit(self, logs: pl.DataFrame, world: World, round_: int) -> dict[str, float]:
        items = column(logs, "item", torch.long).to(self.device)
        clicks = column(logs, "click", torch.float32).to(self.device)
        self.clicks_ = torch.bincount(items, weights=clicks, minlength=len(self.clicks_))
        self.shows_ = torch.bincount(items, minlength=len(self.shows_)).float()
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"clicks": self.clicks_, "shows": self.shows_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clicks_, self.shows_ = state["clicks"].to(self.device), state["shows"].to(self.device)


class OracleRanker:
    """The truth: scores and probabilities are the true relevance. Learns nothing."""

    def score(self, world: World, users: torch.Tensor, items: torch.Tensor, round_: int) -> torch.Tensor:
        return world.relevance(users, items)

    def predict_proba(self, world: World, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return world.relevance(users, items)

    def fit(self, logs: pl.DataFrame, world: World, round_: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def _sharded_ok(rc: RankerConfig) -> None:
    return None  # nothing to train: every rank scores its own users


RANDOM = RankerKind(RandomConfig, lambda config, world, dist: RandomRanker(config), _sharded_ok)
POPULARITY = RankerKind(
    PopularityConfig, lambda config, world, dist: PopularityRanker(config, world.n_items_total)
)
ORACLE = RankerKind(OracleConfig, lambda config, world, dist: OracleRanker(), _sharded_ok)
