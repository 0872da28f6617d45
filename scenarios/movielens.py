"""The feedback loop on a world fitted to MovieLens-100k (``make data`` fetches it and runs
``recsim world fit``; see :mod:`recsim.recsys.worldfit`), beside a drawn world of the same size.

Both worlds run the ``feedback-loop`` arms (MMoE without and with the shallow position tower,
the oracle) under the same click model, policy and drift; 400 of the 943 users act each round,
drawn by their fitted activity in the MovieLens world and uniformly in the drawn one. What the
fitted world changes: relevance learned from real co-interactions (mean relevance 0.063
against 0.298 in the drawn world, while each user's ten most relevant items average 0.90 and
0.92: a much sharper taste, few items worth showing), skewed activity, and real genres as
categories. Compare an arm across worlds by its ``ml-`` / ``drawn-`` pair.
"""

from recsim.experiments.fitted import MOVIELENS_WORLD
from recsim.scenario import Scenario

_MMOE = {"name": "mmoe", "window": 5}
_ARMS = {
    "mmoe": {"ranker": {**_MMOE, "position": "none"}},
    "mmoe-shallow-tower": {"ranker": {**_MMOE, "position": "shallow_tower"}},
    "oracle": {"ranker": {"name": "oracle"}},
}
_DRAWN = {"world": {"source": None, "n_users": 943, "n_items": 1682}}  # MovieLens-100k's size
_SHOWN = ("gold", "gold_satisfaction", "ndcg_truth", "gini", "coverage", "gap", "ece", "position_share")

SCENARIO = Scenario(
    name="movielens",
    description="feedback-loop's arms on a world fitted to MovieLens-100k (make data) and on a "
    "drawn world of the same size.",
    base={
        "world": {"source": MOVIELENS_WORLD, "drift_rate": 0.05},
        "policy": {"slate_size": 10, "n_candidates": 200},
        "loop": {"rounds": 20, "active_users": 400},
    },
    arms={
        **{f"ml-{name}": delta for name, delta in _ARMS.items()},
        **{f"drawn-{name}": {**delta, **_DRAWN} for name, delta in _ARMS.items()},
    },
    plot=_SHOWN,
    table=("regret", *_SHOWN),
    quick=("loop.rounds=3", "loop.active_users=100", "metrics.panel_users=64"),
    window=6,  # rounds 14-19, past the loops' transient
)
