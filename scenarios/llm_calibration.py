"""Binary reward vs binary + Brier term (RLCR, Damani et al. 2025): calibration of stated confidence."""

from recsim.scenario import LLM_QUICK, Scenario

SCENARIO = Scenario(
    name="llm-calibration",
    description="GRPO on binary correctness vs RLCR (binary + Brier of stated confidence): ece, "
    "brier and accuracy over training.",
    base={
        "domain": "llm",
        # the rewards are binary and RLCR: the reward model only feeds proxy metrics, fitted once
        "llm": {"optimizer": "grpo", "rm_refit": False, "initial_prompts": 4096},
        "loop": {"rounds": 10},
    },
    arms={"binary": {"llm": {"reward": "binary"}}, "rlcr": {"llm": {"reward": "rlcr"}}},
    plot=("ece", "brier", "accuracy", "pass_at_1", "kl_ref", "answer_entropy"),
    table=("ece", "brier", "accuracy", "pass_at_1", "pass_at_64", "kl_ref"),
    quick=LLM_QUICK,
)
