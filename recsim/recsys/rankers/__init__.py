"""Rankers: the learners of the recommender domain, one file per kind, found by ``ranker.name``.

A ranker scores candidates for users and, when trainable, is refitted each round on the logs its
own earlier slates produced (protocol: :class:`~recsim.recsys.rankers.base.Ranker`).

| kind | file | what it is |
|---|---|---|
| ``random``, ``popularity``, ``oracle`` | :mod:`.baselines` | random scores, click counts, the truth |
| ``mf`` | :mod:`.mf` | logistic matrix factorization on the logged clicks |
| ``mmoe``, ``shared_bottom``, ``single_task`` | :mod:`.multitask` | multi-task networks, position handling |

A new kind is one file with its config section and its class, and one registration line: a
:func:`~recsim.recsys.config.register_ranker` call in the user's own module, or for a built-in a
line beside the others in :mod:`recsim.recsys.config`. Scoring runs under
``torch.inference_mode()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recsim.recsys.config import RANKERS, RankerConfig, ranker_section, register_ranker
from recsim.recsys.rankers.base import Ranker
from recsim.recsys.rankers.baselines import OracleRanker, PopularityRanker, RandomRanker
from recsim.recsys.rankers.mf import MFRanker
from recsim.recsys.rankers.training import Optimizers, RowSparseAdam, column, train_bce

if TYPE_CHECKING:
    from recsim.config import SimConfig
    from recsim.recsys.world import World

__all__ = [
    "RANKERS",
    "MFRanker",
    "OracleRanker",
    "Optimizers",
    "PopularityRanker",
    "RandomRanker",
    "Ranker",
    "RowSparseAdam",
    "RankerConfig",
    "column",
    "make_ranker",
    "ranker_section",
    "register_ranker",
    "train_bce",
]


def make_ranker(config: SimConfig, world: World, dist: Any = None) -> Ranker:
    """The ranker named by ``config.ranker.name``, sized for every item the world will have;
    ``dist`` (a :class:`recsim.recsys.distributed.Dist`) trains a multi-task ranker sharded."""
    return RANKERS.get(config.ranker.name).build(config, world, dist)
