"""A scenario in one file: the toy ranker against MF in a tiny world."""

from recsim.scenario import Scenario

SCENARIO = Scenario(
    name="toy-category",
    description="The category ranker against MF in a tiny world.",
    base={
        "world": {"n_users": 60, "n_items": 40, "n_clusters": 4},
        "policy": {"slate_size": 5},
        "metrics": {"panel_users": 8},
        "loop": {"rounds": 2},
        "tracking": {"enabled": False},
    },
    arms={"category": {"ranker": {"name": "category", "prior": 0.2}}, "mf": {"ranker": {"name": "mf"}}},
    table=("gold", "served_relevance"),
)
