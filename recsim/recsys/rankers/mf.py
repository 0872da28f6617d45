"""``mf``: logistic matrix factorization on the logged clicks (:class:`towers.mf.LogisticMF`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import polars as pl
import torch
from pydantic import Field

from recsim.core.rng import SETUP_ROUND, generator
from recsim.recsys.config import RankerKind, TrainableConfig
from recsim.recsys.rankers.training import FlatAdam, column, train_bce
from recsim.recsys.world import World

if TYPE_CHECKING:
    from recsim.config import SimConfig


class MFConfig(TrainableConfig):
    """``mf``: logistic MF, refitted each round with Adam."""

    name: Literal["mf"] = "mf"
    negatives: Literal["impressions", "sampled"] = "impressions"
    """What the MF learns clicks against. 'impressions': every logged impression, clicked or not
    (P(click | shown); an item never shown keeps its prior score, above items shown and not
    clicked, so new items are tried first). 'sampled': implicit feedback, as the MF of Chaney et
    al. 2018 and T-RECS: clicked (user, item) pairs against ``negatives_per_click`` items drawn
    uniformly from the catalogue for the same user (a pair never interacted with is a negative)."""
    negatives_per_click: int = Field(4, gt=0)
    """'sampled': negatives drawn per clicked pair."""


class MFRanker:
    """Logistic MF on logged clicks, refitted each round (warm start or scratch) with Adam."""

    scores_from_fit: ClassVar[bool] = True  # see Ranker: the model alone scores

    def __init__(self, config: SimConfig, n_users: int, n_items: int) -> None:
        from towers.mf import LogisticMF

        self.config = config
        self.device = torch.device(config.device)
        self._make = lambda round_: LogisticMF(
            n_users, n_items, config.ranker.dim, generator(config.seed, round_, "ranker-init")
        ).to(self.device)
        self.model_ = self._make(SETUP_ROUND)
        self.opt_ = self._optimizer()

    def _optimizer(self) -> FlatAdam:
        rc = self.config.ranker
        return FlatAdam(self.model_.parameters(), lr=rc.learning_rate, weight_decay=rc.weight_decay)

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
        if rc.negatives == "sampled":
            users, items, clicks = self._implicit(users, items, clicks.bool(), world, round_)
        return train_bce(
            self.model_,
            self.opt_,
            (users, items),
            clicks,
            rc.epochs,
            rc.batch,
            generator(self.config.seed, round_, "ranker-fit", dev),
            # the closed form on the CPU only: CUDA's index_add_ is not deterministic (PyTorch's
            # use_deterministic_algorithms lists it), so there autograd's embedding backward stays
            backward=(lambda inputs, labels, loss: self.model_.bce_backward(*inputs, labels, loss))
            if dev.type == "cpu"
            else None,
        )

    def _implicit(
        self, users: torch.Tensor, items: torch.Tensor, clicked: torch.Tensor, world: World, round_: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clicked pairs (label 1) and, per click, ``negatives_per_click`` uniform items of the
        catalogue for the same user (label 0): (users [n], items [n, 1], labels [n, 1])."""
        keep = clicked.squeeze(1)
        pos_u, pos_i = users[keep], items[keep]
        m = self.config.ranker.negatives_per_click
        gen = generator(self.config.seed, round_, "mf-negatives", self.device)
        neg_i = torch.randint(
            world.n_available(round_), (len(pos_u) * m, 1), generator=gen, device=self.device
        )
        u = torch.cat([pos_u, pos_u.repeat_interleave(m)])
        i = torch.cat([pos_i, neg_i])
        labels = torch.cat([torch.ones(len(pos_u), 1), torch.zeros(len(neg_i), 1)]).to(self.device)
        return u, i, labels


KIND = RankerKind(MFConfig, lambda config, world, dist: MFRanker(config, world.n_users, world.n_items_total))
