"""The shallow position tower of Zhao et al. (RecSys 2019) at two learning rates of its position
channel, against the plain MMoE ranker, on its own position-biased logs (no randomized slates).

The position channel (the bias tower, and its position embedding) has its own Adam learning rate,
``ranker.position_lr``: 0.05 by default against 0.003 for the rest of the ranker, because it is a
few parameters that every example updates and whose offsets reach several logits. At 0.003 it
learns at the rate of the relevance towers. The summary reads ``position_curve_error`` (how far
the learned examination curve is from the true one) and ``ndcg_truth`` over rounds 10-15.
"""

from recsim.scenario import Scenario
from scenarios.position_bias import SCENARIO as GRID

_BASE_LR = 0.003  # the ranker's own learning rate (ranker.lr's default)

SCENARIO = Scenario(
    name="position-lr",
    description="Shallow position tower at position_lr 0.05 (default) and 0.003 (the ranker's own "
    "rate) vs plain MMoE: learned curve error and ndcg_truth over rounds 10-15.",
    base={**GRID.base, "ranker": {**GRID.base["ranker"], "name": "mmoe"}},  # the grid's world
    arms={
        "none": {"ranker": {"position": "none"}},
        "tower-lr0.05": {"ranker": {"position": "shallow_tower", "position_lr": 0.05}},
        f"tower-lr{_BASE_LR}": {"ranker": {"position": "shallow_tower", "position_lr": _BASE_LR}},
    },
    plot=("ndcg_truth", "position_curve_error", "position_share", "gold"),
    table=("ndcg_truth", "position_curve_error", "position_share", "gold", "gini"),
    window=GRID.window,  # rounds 10-15, as the position-bias scenario
)
