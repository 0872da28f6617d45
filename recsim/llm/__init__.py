"""The LLM-reward domain: synthetic tasks, a small token-level policy, a biased labeler, a reward
model retrained on the policy's own samples (with an optional test-time compute budget), and RL
against it (GRPO, best-of-n, sign-split REINFORCE), plus directive feedback: critiques of failed
rollouts learned through Critique-GRPO refinements or hindsight distillation. Runs on the shared
loop (:mod:`recsim.core.loop`) with the shared metric names.

Shape legend: N prompts, G samples per prompt (group), T response tokens, V vocabulary, H hidden.
"""
