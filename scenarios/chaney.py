"""Homogenization in the feedback loop (Chaney, Stewart & Engelhardt 2018): recommenders retrained
each round on the interactions their own recommendations caused, after a start-up period of random
recommendations, with new items every round; measured against the ideal recommender (top-K by true
relevance). The paper's set-up, at our click model: 100 users, 20 latent attributes, 10 new items a
round, 10 start-up rounds then 90 retrained rounds, every user in the panel and every item a
candidate; each user interacts with exactly one item of each slate, chosen in proportion to
attention x relevance (``behavior.model: choice``), and never with the same item twice
(``policy.repeat_consumption: false``), so every recommender's histories grow alike. Two MFs: the
paper's, learned from implicit feedback (a pair never interacted with is a negative), and ours,
learned against logged impressions (it tries never-shown items first). (The paper's
content-filtering recommender has no counterpart here: items carry no observed content.)"""

from recsim.scenario import Scenario

SCENARIO = Scenario(
    name="chaney",
    description="Chaney et al. 2018: MF (implicit feedback; on impressions), popularity, random and "
    "ideal recommenders retrained on their own interactions after 10 random start-up rounds, one "
    "interaction per slate, no item twice, 10 new items a round: "
    "homogenization (Jaccard of neighbours' interaction histories vs the ideal's), gold, gini.",
    base={
        "world": {"n_users": 100, "n_items": 100, "dim": 20, "new_items_per_round": 10},
        "policy": {"n_candidates": None, "startup_rounds": 10, "repeat_consumption": False},
        "behavior": {"model": "choice"},
        "metrics": {"panel_users": 100},
        "loop": {"rounds": 100},
    },
    arms={
        "mf-implicit": {"ranker": {"name": "mf", "negatives": "sampled"}},
        "mf-impressions": {"ranker": {"name": "mf", "negatives": "impressions"}},
        "popularity": {"ranker": {"name": "popularity"}},
        "random": {"ranker": {"name": "random"}},
        "ideal": {"ranker": {"name": "oracle"}},
    },
    # (gold is 1 by construction under the one-interaction choice model)
    plot=("homogenization", "jaccard", "ndcg_truth", "gini", "coverage", "homogenization_topk"),
    table=("homogenization", "jaccard", "ndcg_truth", "gini", "coverage", "homogenization_topk"),
)
