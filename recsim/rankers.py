"""Rankers: the learners of the recommender domain.

A ranker scores candidates for users and, when trainable, is refitted each round on the logs its
own earlier slates produced. The protocol (:class:`Ranker`) is small so that new models slot in:

- ``score(world, users, items, round)`` -> [B, C] ranking scores (higher is better);
- ``predict_proba(world, users, items)`` -> [B, C] predicted P(click | examined at the top), the
  learner's own belief, compared to the truth by the ``proxy``/``gap``/``ece``/``brier`` metrics;
- ``fit(logs, world, round)`` -> training statistics; ``logs`` is the polars frame of the
  training window (schema in :mod:`recsim.logs`).

Baselines: ``random``, ``popularity`` (click counts with a Beta-smoothed click rate as its
probability), ``oracle`` (the true relevance). Trainable: ``mf`` (:class:`towers.mf.LogisticMF`).
Scoring runs under ``torch.inference_mode()``.
"""

from __future__ import annotations

from typing import Any, Protocol

import polars as pl
import torch

from recsim.config import SimConfig
from recsim.rng import SETUP_ROUND, generator
from recsim.world import World


class Ranker(Protocol):
    def score(self, world: World, users: torch.Tensor, items: torch.Tensor, round_: int) -> torch.Tensor: ...

    def predict_proba(self, world: World, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...

    def fit(self, logs: pl.DataFrame, world: World, round_: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def column(logs: pl.DataFrame, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A log column as a torch tensor of ``dtype``."""
    return torch.from_numpy(logs[name].to_numpy(writable=True)).to(dtype)


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


class MFRanker:
    """Logistic MF on logged clicks, refitted each round (warm start or scratch) with Adam."""

    def __init__(self, config: SimConfig, n_users: int, n_items: int) -> None:
        from towers.mf import LogisticMF

        self.config = config
        self.device = torch.device(config.device)
        self._make = lambda round_: LogisticMF(
            n_users, n_items, config.ranker.dim, generator(config.seed, round_, "ranker-init")
        ).to(self.device)
        self.model_ = self._make(SETUP_ROUND)
        self.opt_ = self._optimizer()

    def _optimizer(self) -> torch.optim.Optimizer:
        rc = self.config.ranker
        return torch.optim.Adam(self.model_.parameters(), lr=rc.learning_rate, weight_decay=rc.weight_decay)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model_.state_dict(), "opt": self.opt_.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model_.load_state_dict(state["model"])
        self.opt_.load_state_dict(state["opt"])

    def score(self, world: World, users: torch.Tensor, items: torch.Tensor, round_: int) -> torch.Tensor:
        with torch.inference_mode():
            return self.model_(users, items)

    def predict_proba(self, world: World, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.sigmoid(self.model_(users, items))

    def fit(self, logs: pl.DataFrame, world: World, round_: int) -> dict[str, float]:
        rc = self.config.ranker
        if not rc.warm_start:
            self.model_ = self._make(round_)
            self.opt_ = self._optimizer()
        dev = self.device
        users = column(logs, "user", torch.long).to(dev)
        items = column(logs, "item", torch.long).unsqueeze(1).to(dev)  # [n, 1]
        clicks = column(logs, "click", torch.float32).unsqueeze(1).to(dev)
        return train_bce(
            self.model_,
            self.opt_,
            (users, items),
            clicks,
            rc.epochs,
            rc.batch,
            generator(self.config.seed, round_, "ranker-fit", dev),
        )


class Optimizers:
    """Several optimizers stepped as one (dense Adam beside a sparse optimizer for embedding tables)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        # Sparse gradients come from embedding_bag backward, well formed: skip torch's checks.
        with torch.sparse.check_sparse_tensor_invariants(enable=False):
            for opt in self.optimizers:
                opt.step()

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for opt, state in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(state)


def train_bce(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    inputs: tuple[torch.Tensor, ...],
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    gen: torch.Generator,
) -> dict[str, float]:
    """Minibatch ``opt`` steps on binary cross-entropy of ``model(*inputs)`` against ``labels``.

    Returns ``{"train_loss": mean loss of the last epoch}``.
    """
    model.train()
    n = labels.shape[0]
    last = float("nan")
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen, device=gen.device)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            logits = model(*(x[idx] for x in inputs))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        last = total / max(n, 1)
    model.eval()
    return {"train_loss": last}


def make_ranker(config: SimConfig, world: World, dist: Any = None) -> Ranker:
    """The ranker named by ``config.ranker.name``, sized for every item the world will have;
    ``dist`` (a :class:`recsim.distributed.Dist`) trains a multi-task ranker sharded."""
    name = config.ranker.name
    if name == "random":
        return RandomRanker(config)
    if name == "popularity":
        return PopularityRanker(config, world.n_items_total)
    if name == "oracle":
        return OracleRanker()
    if name == "mf":
        return MFRanker(config, world.n_users, world.n_items_total)
    if name in ("mmoe", "shared_bottom", "single_task"):
        from recsim.multitask import MultiTaskRanker

        return MultiTaskRanker(config, world, dist)
    raise ValueError(
        "ranker.name must be one of random, popularity, oracle, mf, mmoe, shared_bottom, "
        f"single_task; got {name!r}"
    )
