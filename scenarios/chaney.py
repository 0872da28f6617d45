"""Homogenization in the feedback loop (Chaney, Stewart & Engelhardt 2018): recommenders retrained
each round on the interactions their own recommendations caused, after a start-up period of random
recommendations, with new items every round; measured against the ideal recommender (top-K by true
relevance). The paper's set-up, at our click model: 100 users, 20 latent attributes, 10 new items a
round, 10 start-up rounds then 90 retrained rounds, every user in the panel and every item a
candidate. (The paper's content-filtering recommender has no counterpart here: items carry no
observed content.)"""

from recsim.scenario import Scenario

SCENARIO = Scenario(
    name="chaney",
    description="Chaney et al. 2018: MF, popularity, random and ideal recommenders retrained on "
    "their own interactions after 10 random start-up rounds, 10 new items a round: "
    "homogenization (Jaccard of neighbours' interaction histories vs the ideal's), gold, gini.",
    base={
        "world": {"n_users": 100, "n_items": 100, "dim": 20, "new_items_per_round": 10},
        "policy": {"n_candidates": None, "startup_rounds": 10},
        "metrics": {"panel_users": 100},
        "loop": {"rounds": 100},
    },
    arms={
        "mf": {"ranker": {"name": "mf"}},
        "popularity": {"ranker": {"name": "popularity"}},
        "random": {"ranker": {"name": "random"}},
        "ideal": {"ranker": {"name": "oracle"}},
    },
    plot=("homogenization", "jaccard", "gold", "gini", "coverage", "homogenization_topk"),
    table=("homogenization", "jaccard", "gold", "ndcg_truth", "gini", "coverage", "homogenization_topk"),
)
