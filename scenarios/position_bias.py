"""Every position-bias treatment x logging-policy quality, for MMoE and shared-bottom rankers.

Logging quality is the share of randomized traffic: 0% (the ranker's own slates only: position
and relevance confounded), 10%, and 100% (uniformly random slates: position identifiable).
Zhang et al. (KDD 2023) predict that additive bias towers absorb relevance when the logger is good,
and that observation dropout and gradient reversal counter it; randomized traffic restores
identifiability.
"""

from recsim.scenario import Scenario

MODES = ("none", "feature", "shallow_tower", "obs_dropout", "grad_reversal", "ips", "pal")
EXPLORATION = {"explore0": 0.0, "explore10": 0.1, "explore100": 1.0}
MODELS = ("mmoe", "shared_bottom")

SCENARIO = Scenario(
    name="position-bias",
    description="Every position-bias treatment x exploration share (0/10/100%) x {MMoE, "
    "shared-bottom}: ndcg_truth, gini, learned vs true position curves.",
    base={
        "world": {"n_users": 1000, "n_items": 500},
        "policy": {"slate_size": 10, "n_candidates": 100},
        "ranker": {"window": 5},
        "metrics": {"panel_users": 128},
        "loop": {"rounds": 16},
    },
    arms={
        f"{model}-{mode}-{tag}": {
            "ranker": {"name": model, "position": mode},
            "policy": {"exploration_share": share},
        }
        for model in MODELS
        for mode in MODES
        for tag, share in EXPLORATION.items()
    },
    plot=("ndcg_truth", "gini", "position_curve_error", "position_share", "spurious_share", "gold"),
    table=(
        "gold",
        "ndcg_truth",
        "gini",
        "position_curve_error",
        "position_share",
        "spurious_share",
        "gap",
        "ece",
    ),
    window=6,  # rounds 10-15: a tower and the loop it trains on pull apart up to round ~7
)
