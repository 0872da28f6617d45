"""The default scenario: MMoE rankers retrained on their own position-biased clicks, without and
with the shallow position tower of Zhao et al. (RecSys 2019), against the oracle."""

from recsim.scenario import Scenario

_MMOE = {"name": "mmoe", "window": 5}
_SHOWN = ("gold", "gold_satisfaction", "ndcg_truth", "gini", "coverage", "gap", "ece")
_SHOWN += ("position_curve_error", "position_share", "spurious_share")

SCENARIO = Scenario(
    name="feedback-loop",
    description="MMoE ranker retrained on its own position-biased clicks, without vs with the "
    "shallow position tower; the oracle as the ceiling.",
    base={
        "world": {"n_users": 1000, "n_items": 500, "drift_rate": 0.05},
        "policy": {"slate_size": 10, "n_candidates": 200},
        "loop": {"rounds": 20},
    },
    arms={
        "mmoe": {"ranker": {**_MMOE, "position": "none"}},
        "mmoe-shallow-tower": {"ranker": {**_MMOE, "position": "shallow_tower"}},
        "oracle": {"ranker": {"name": "oracle"}},
    },
    plot=_SHOWN,
    table=("regret", *_SHOWN),
    window=6,  # rounds 14-19: the two loops pull apart over the first rounds
)
