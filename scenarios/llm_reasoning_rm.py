"""Reward models that reason before scoring (RRM, RM-R1, DeepSeek-GRM): GRPO against a reward
model retrained each round on the policy's own samples, at increasing test-time compute - more
weight-tied reasoning passes, then sampled judgments weighted by a learned meta-judge. Does a
larger budget leave fewer blind spots for the optimizer to exploit (smaller gap, lower
spurious_share, higher accuracy against gold)?"""

from recsim.scenario import LLM_QUICK, Scenario

SCENARIO = Scenario(
    name="llm-reasoning-rm",
    description="GRPO against reward models of budget 1, 2, 4, 8 passes and 8 passes x 4 judgments "
    "with a meta-judge: gold, proxy, gap, spurious_share and the reward model's accuracy against "
    "gold on the policy's samples and on held-out pairs, per round.",
    base={
        "domain": "llm",
        # the reward model refits each round on the last 4 rounds' pairs of the policy's samples
        "llm": {"optimizer": "grpo", "reward": "reward_model", "rm_window": 4, "initial_prompts": 4096},
        "loop": {"rounds": 8},
    },
    arms={
        "rm-1": {"llm": {"rm_passes": 1}},
        "rm-2": {"llm": {"rm_passes": 2}},
        "rm-4": {"llm": {"rm_passes": 4}},
        "rm-8": {"llm": {"rm_passes": 8}},
        "rm-8x4-meta": {"llm": {"rm_passes": 8, "rm_votes": 4, "rm_meta_judge": True}},
    },
    plot=("gold", "proxy", "gap", "spurious_share", "rm_accuracy", "rm_accuracy_heldout", "accuracy"),
    table=(
        "gold",
        "proxy",
        "gap",
        "spurious_share",
        "rm_accuracy",
        "rm_accuracy_heldout",
        "accuracy",
        "length",
    ),
    quick=LLM_QUICK,
)
