"""Directive vs evaluative feedback (Critique-GRPO, Zhang et al. 2025): on a task family with hard
prompts the base policy never solves (a learned shortcut that is always wrong there), scalar-reward
GRPO has no positive signal and plateaus however many samples it draws; critiques of the failed
rollouts, learned from through refinements (Critique-GRPO) or distilled into per-token advantages
(hindsight), carry how to change them. Every arm uses Critique-GRPO's advantage R - mean(R) and
shares one base policy (it was also taught to follow critiques on ordinary prompts)."""

from recsim.scenario import LLM_QUICK, Scenario

_CURVES = ("accuracy", "accuracy_hard", "unsolved_share", "unsolved_share_hard", "hard_pass_at_8")

SCENARIO = Scenario(
    name="llm-critique",
    description="Scalar GRPO vs GRPO with 2x samples vs Critique-GRPO (binary, ground truth, "
    "chain-of-thought critiques) vs hindsight distillation, on hard prompts the base policy never "
    "solves: accuracy, hard-subset accuracy, unsolved_share, pass@k.",
    base={
        "domain": "llm",
        "llm": {
            "optimizer": "grpo",
            "reward": "binary",
            "advantage": "mean",  # Critique-GRPO's R - mean(R), for every arm alike
            "hard_share": 0.5,
            "critique_sft": 0.25,
            "sft_steps": 1500,  # long enough for the shortcut to hold on the hard prompts
            "label_prompts": 512,  # 256 hard training prompts a round for unsolved_share
            "initial_prompts": 4096,  # the reward model's base-policy preference set
            "rm_refit": False,  # the reward is binary; the reward model only feeds proxy metrics
        },
        "loop": {"rounds": 10},
    },
    arms={
        "grpo": {},
        "grpo-2x-samples": {"llm": {"group_size": 16, "unsolved_k": 8}},
        "critique-binary": {"llm": {"critique": "binary"}},
        "critique-truth": {"llm": {"critique": "ground_truth"}},
        "critique-cot": {"llm": {"critique": "cot"}},
        "hindsight-cot": {"llm": {"critique": "cot", "critique_use": "hindsight"}},
    },
    plot=(*_CURVES, "refine_success", "kl_ref"),
    table=(*_CURVES, "pass_at_1", "hard_pass_at_64", "refine_success", "kl_ref"),
    quick=LLM_QUICK,
)
