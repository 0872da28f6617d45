"""Reward-model overoptimization (Gao, Schulman & Hilton 2022): gold and proxy against sqrt(KL)
for best-of-n (n = 1..256) and GRPO against a reward model fitted once on base-policy samples."""

from recsim.experiments.overoptimization import OveroptimizationScenario
from recsim.scenario import LLM_QUICK

SCENARIO = OveroptimizationScenario(
    name="llm-overoptimization",
    description="Best-of-n (n = 1..256) and GRPO against a learned reward model: gold and proxy vs "
    "sqrt(KL), with the functional forms of Gao et al. 2022 fitted.",
    base={
        "domain": "llm",
        "llm": {"rm_refit": False, "reward": "reward_model", "initial_prompts": 4096},
        "loop": {"rounds": 9},
    },
    arms={
        "best-of-n": {"llm": {"optimizer": "best_of_n"}},
        "grpo": {"llm": {"optimizer": "grpo", "kl_coef": 0.0}, "loop": {"rounds": 12}},
    },
    plot=("gold", "proxy", "gap", "kl_ref", "accuracy", "length", "spurious_share"),
    table=("gold", "proxy", "gap", "kl_ref", "accuracy", "length", "spurious_share"),
    quick=LLM_QUICK,
)
