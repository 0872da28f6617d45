"""What a response is worth: gold correctness, the biased labeler, the gold judge, rewards.

Labeler (the biased human or judge): Bradley-Terry over a pair (a, b) of responses to one prompt,

    P(a > b) = sigmoid( w_g (c_a - c_b) + w_len (l_a - l_b) / L + w_syc (h_a - h_b) + w_conf (q_a - q_b) )

with c correctness, l elaboration length (L = max_elaboration), h = 1[answer = user's hint], q the
stated confidence. The gold judge is the same model with every bias weight 0.
Rewards for RL: binary correctness; RLCR (Damani et al. 2025): 1[correct] - (q - 1[correct])^2;
or the learned reward model's score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from recsim.llm.tasks import Format, Prompts

if TYPE_CHECKING:
    from recsim.llm.config import LlmConfig


@dataclass(frozen=True)
class Rollouts:
    """Responses with what the simulator knows about them. All [N] except ``tokens`` [N, T].

    ``prompt`` indexes ``prompts`` (a response's prompt); ``prompts`` holds the distinct prompts.
    """

    prompts: Prompts
    prompt: torch.Tensor
    tokens: torch.Tensor
    correct: torch.Tensor
    confidence: torch.Tensor
    length: torch.Tensor
    agree: torch.Tensor

    @classmethod
    def build(cls, fmt: Format, prompts: Prompts, prompt: torch.Tensor, tokens: torch.Tensor) -> Rollouts:
        answer = tokens[:, 0]
        return cls(
            prompts=prompts,
            prompt=prompt,
            tokens=tokens,
            correct=(answer == prompts.answer[prompt]).float(),
            confidence=fmt.confidence(tokens),
            length=fmt.length(tokens).float(),
            agree=(answer == prompts.hint[prompt]).float(),
        )

    @property
    def prompt_tokens(self) -> torch.Tensor:
        """[N, P] the prompt of each response."""
        return self.prompts.tokens[self.prompt]


def preference_logit(
    cfg: LlmConfig, a: Rollouts, ia: torch.Tensor, ib: torch.Tensor, gold_only: bool = False
) -> torch.Tensor:
    """Bradley-Terry logit of P(response ia > response ib) for the labeler (or the gold judge)."""
    logit = cfg.labeler.gold_weight * (a.correct[ia] - a.correct[ib])
    if not gold_only:
        scale = max(cfg.task.max_elaboration, 1)
        logit = logit + cfg.labeler.length_bias * (a.length[ia] - a.length[ib]) / scale
        logit = logit + cfg.labeler.sycophancy_bias * (a.agree[ia] - a.agree[ib])
        logit = logit + cfg.labeler.confidence_bias * (a.confidence[ia] - a.confidence[ib])
    return logit


def rlcr_reward(correct: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """1[correct] - (q - 1[correct])^2: correctness plus a Brier term (Damani et al. 2025)."""
    return correct - (confidence - correct) ** 2
