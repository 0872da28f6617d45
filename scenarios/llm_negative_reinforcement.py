"""Sign-split REINFORCE (Zhu et al. 2025): PSR vs NSR vs W-REINFORCE vs GRPO on binary rewards,
against the base policy: pass@k from k = 1 to 64."""

from recsim.scenario import LLM_QUICK, Scenario

_PASS = tuple(f"pass_at_{k}" for k in (1, 2, 4, 8, 16, 32, 64))

SCENARIO = Scenario(
    name="llm-negative-reinforcement",
    description="PSR vs NSR vs W-REINFORCE vs GRPO on binary correctness, and the base policy: "
    "pass@k for k = 1..64, answer entropy.",
    base={
        "domain": "llm",
        # the reward is binary; the reward model only feeds proxy metrics
        "llm": {"reward": "binary", "rm_refit": False, "initial_prompts": 4096},
        "loop": {"rounds": 10},
    },
    arms={
        "base": {"llm": {"optimizer": "none"}},
        "psr": {"llm": {"optimizer": "psr"}},
        "nsr": {"llm": {"optimizer": "nsr"}},
        "w-reinforce": {"llm": {"optimizer": "w_reinforce"}},
        "grpo": {"llm": {"optimizer": "grpo"}},
    },
    plot=("pass_at_1", "pass_at_8", "pass_at_64", "answer_entropy", "accuracy", "kl_ref"),
    table=(*_PASS, "answer_entropy"),
    quick=LLM_QUICK,
)
