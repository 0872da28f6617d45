"""Off-policy evaluation with a logger that is retrained every round on a drifting world: IPW,
SNIPW and DR estimates of three target policies (uniform, popularity, the ideal) from each
round's log, each with its 95% interval, against the exact true value (``ope.md``, ``ope.png``;
see :mod:`recsim.experiments.ope`). A benchmark no real dataset allows: the logging policy
changes every round and the truth is known. Loggers: uniformly random slates, and an MF ranker
with epsilon-greedy exploration at two rates (the propensities are exact, see
:mod:`recsim.recsys.policy`)."""

from recsim.experiments.ope import OpeScenario

_MF = {"name": "mf"}

SCENARIO = OpeScenario(
    name="ope",
    description="IPW / SNIPW / DR estimates of uniform, popularity and ideal slates from a "
    "retrained, drifting logger's logs (uniform, epsilon 0.3, epsilon 0.1) against the truth.",
    base={
        "world": {"n_users": 2000, "n_items": 300, "drift_rate": 0.05},
        "policy": {"slate_size": 5, "n_candidates": 30, "log_candidates": True},
        "loop": {"rounds": 8},
    },
    arms={
        "uniform": {"ranker": _MF, "policy": {"epsilon": 1.0}},
        "mf-eps0.3": {"ranker": _MF, "policy": {"epsilon": 0.3}},
        "mf-eps0.1": {"ranker": _MF, "policy": {"epsilon": 0.1}},
    },
    plot=("gold", "ndcg_truth", "gini", "coverage"),
    table=("gold", "ndcg_truth", "gini", "coverage"),
    quick=("loop.rounds=3", "world.n_users=300", "metrics.panel_users=64"),
)
