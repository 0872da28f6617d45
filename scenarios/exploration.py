"""Randomized traffic as an anchor: a logistic-MF ranker with 0% vs 10% exploration traffic,
against popularity, random and oracle rankers."""

from recsim.scenario import Scenario

SCENARIO = Scenario(
    name="exploration",
    description="Logistic-MF ranker on its own clicks with 0% vs 10% exploration traffic, "
    "against popularity, random and oracle rankers.",
    base={
        "world": {"n_users": 2000, "n_items": 1000, "drift_rate": 0.05},
        "loop": {"rounds": 20},
    },
    arms={
        "mf": {"ranker": {"name": "mf"}},
        "mf-explore10": {"ranker": {"name": "mf"}, "policy": {"exploration_share": 0.1}},
        "popularity": {"ranker": {"name": "popularity"}},
        "random": {"ranker": {"name": "random"}},
        "oracle": {"ranker": {"name": "oracle"}},
    },
    plot=(
        "gold",
        "gold_satisfaction",
        "ndcg_truth",
        "gini",
        "coverage",
        "gap",
        "ece",
        "homogenization",
        "rank_stability",
    ),
    window=6,  # rounds 14-19, past the loops' transient
)
