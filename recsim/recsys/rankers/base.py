"""The :class:`Ranker` protocol: what every ranker kind implements (its config section and
registration are in :mod:`recsim.recsys.config`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from recsim.recsys.config import RANKERS, RankerConfig, RankerKind, TrainableConfig, ranker_section

if TYPE_CHECKING:
    import polars as pl
    import torch

    from recsim.recsys.world import World

__all__ = ["RANKERS", "Ranker", "RankerConfig", "RankerKind", "TrainableConfig", "ranker_section"]


class Ranker(Protocol):
    """The learner of the recommender domain. Shapes: B users, C candidates per user.

    Optional class attribute ``scores_from_fit`` (default False): True when ``score`` depends only
    on what ``fit`` learned, the users, the items and the round (not on the world's drifting
    truth, nor on a random draw), so that the scores the metrics panel computed after a fit may
    stand in for the next round's (:meth:`recsim.recsys.domain.RecsysDomain._scores`).

    Optional method ``score_and_predict(world, users, items, round_)``: ``score``'s [B, C] and a
    function from positions [B, K] into ``items`` to ``predict_proba``'s [B, K] for those pairs,
    the same values from one pass, so that the shown items are not scored again in a round
    (:class:`recsim.recsys.rankers.multitask.MultiTaskRanker` has it).
    """

    def score(self, world: World, users: torch.Tensor, items: torch.Tensor, round_: int) -> torch.Tensor:
        """[B], [B, C] -> [B, C] ranking scores at serving time in ``round_`` (higher is better)."""
        ...

    def predict_proba(self, world: World, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B], [B, C] -> [B, C] the learner's own P(click | examined at the top): its belief,
        compared with the truth by ``proxy``, ``gap``, ``ece`` and ``brier``."""
        ...

    def fit(self, logs: pl.DataFrame, world: World, round_: int) -> dict[str, float]:
        """Retrain on ``logs`` (the training window's rows, schema in :mod:`recsim.io.logs`);
        returns training statistics (e.g. ``train_loss``) that join the round's metrics."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything fitted, as tensors and plain values (what a checkpoint stores)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (refuse state of another shape with ValueError)."""
        ...
