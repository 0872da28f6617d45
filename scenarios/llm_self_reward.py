"""A reward model retrained every round on the policy's own samples, labeled by the biased labeler,
by itself (no external anchor), or with a share of gold-judge labels (the anchor)."""

from recsim.scenario import LLM_QUICK, Scenario

SCENARIO = Scenario(
    name="llm-self-reward",
    description="GRPO against a reward model retrained each round on the policy's samples: biased "
    "labeler vs self-reward vs 25% gold anchor.",
    base={
        "domain": "llm",
        "llm": {"optimizer": "grpo", "reward": "reward_model", "initial_prompts": 4096},
        "loop": {"rounds": 10},
    },
    arms={
        "labeler": {"llm": {"rm_mode": "labeler"}},
        "self-reward": {"llm": {"rm_mode": "self"}},
        "anchored": {"llm": {"rm_mode": "anchored", "anchor_share": 0.25}},
    },
    plot=("gold", "proxy", "gap", "accuracy", "answer_entropy", "length", "sycophancy", "spurious_share"),
    table=(
        "gold",
        "proxy",
        "gap",
        "accuracy",
        "answer_entropy",
        "entropy",
        "gini",
        "length",
        "sycophancy",
        "spurious_share",
    ),
    quick=LLM_QUICK,
)
