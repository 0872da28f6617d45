"""The feedback loop at platform scale: 1,000,000 users x 100,000 items, 100,000 active users a
round, two-tower retrieval through an IVF index (a few hundred candidates per user, a quarter of
them uniform exploration), an MMoE ranker with the shallow position tower retrained each round
on the new round's log (warm start, sparse row-wise Adam on its embedding tables)."""

from recsim.scenario import Scenario

#: ``recsim run scale --quick`` and ``recsim bench --quick``: a tenth of the users and items, 3 rounds.
QUICK = (
    "world.n_users=100000",
    "world.n_items=10000",
    "loop.active_users=10000",
    "loop.rounds=3",
    "policy.ivf_lists=64",
    "metrics.panel_items=2000",
)

_SHOWN = ("gold", "ndcg_truth", "gini", "coverage", "gap", "ece", "retrieval_recall", "spurious_share")

SCENARIO = Scenario(
    name="scale",
    description="1M users x 100k items, 100k active a round: two-tower IVF retrieval + MMoE "
    "(shallow tower) retrained on each new round's log.",
    base={
        "world": {"n_users": 1_000_000, "n_items": 100_000, "n_clusters": 64, "drift_rate": 0.05},
        "policy": {
            "slate_size": 10,
            "n_candidates": 200,
            "retrieval": "two_tower",
            "explore_candidates": 50,
            "ivf_lists": 256,
            "ivf_probe": 8,
        },
        "ranker": {
            "name": "mmoe",
            "position": "shallow_tower",
            "window": 1,
            "epochs": 1,
            "sparse_embeddings": True,
            "serve_bf16": True,
        },
        "loop": {"rounds": 10, "active_users": 100_000},
        "metrics": {"panel_users": 256, "panel_items": 5000},
    },
    arms={"mmoe-shallow-tower": {}},
    plot=_SHOWN,
    table=("regret", *_SHOWN),
    quick=QUICK,
)
