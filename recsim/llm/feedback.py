"""What a response is worth: gold correctness, the biased labeler, the gold judge, rewards.

Labeler (the biased human or judge): Bradley-Terry over a pair (a, b) of responses to one prompt,

    P(a > b) = sigmoid( w_g (c_a - c_b) + w_len (l_a - l_b) / L + w_syc (h_a - h_b) + w_conf (q_a - q_b)
                        [chain task: + w_concept (k_a - k_b), and w_g (1 - w_disc) for disfavoured users] )

with c correctness (the final answer; with ``gold_checks = "steps"`` the answer and every step), l
elaboration length (L = max_elaboration), h = 1[answer = user's hint], q the stated confidence,
k = 1[the response's framing is the prompt's concept]. The four hacking modes that counterfactual
invariance is reported to cut (Wang et al. 2025) are length, sycophancy, concept and
discrimination (a user attribute the labeler favours). The gold judge is the same model with every
bias weight 0.
Rewards for RL: binary correctness; RLCR (Damani et al. 2025): 1[correct] - (q - 1[correct])^2;
or the learned reward model's score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from recsim.llm.chain import ChainFormat, first_wrong, written_steps
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
    answer: torch.Tensor | None = None
    # chain task only (None on the sum task):
    concept_match: torch.Tensor | None = None
    """1 where the response's framing is the prompt's concept."""
    disfavoured: torch.Tensor | None = None
    """1 where the user is not of the group the biased labeler favours (attribute 0)."""
    first_wrong: torch.Tensor | None = None
    """The first wrong step (long; d + 1 = the answer after right steps, 0 = right throughout)."""
    step_accuracy: torch.Tensor | None = None
    """Share of the written steps that equal the true chain's."""
    consistent: torch.Tensor | None = None
    """1 where the final answer is the last written step."""

    @classmethod
    def build(
        cls, fmt: Format | ChainFormat, prompts: Prompts, prompt: torch.Tensor, tokens: torch.Tensor
    ) -> Rollouts:
        if fmt.kind == "chain":
            return cls._build_chain(fmt, prompts, prompt, tokens)
        answer = tokens[:, 0]
        return cls(
            prompts=prompts,
            prompt=prompt,
            tokens=tokens,
            correct=(answer == prompts.answer[prompt]).float(),
            confidence=fmt.confidence(tokens),
            length=fmt.length(tokens).float(),
            agree=(answer == prompts.hint[prompt]).float(),
            answer=answer,
        )

    @classmethod
    def _build_chain(
        cls, fmt: ChainFormat, prompts: Prompts, prompt: torch.Tensor, tokens: torch.Tensor
    ) -> Rollouts:
        d = prompts.difficulty[prompt]
        answer = fmt.answer(tokens, d, prompts.hint[prompt])
        values, written = written_steps(fmt, tokens, d)
        right = (values == prompts.chain[prompt]) & written
        last = values.gather(1, (d - 1).unsqueeze(1)).squeeze(1)
        return cls(
            prompts=prompts,
            prompt=prompt,
            tokens=tokens,
            correct=(answer == prompts.answer[prompt]).float(),
            confidence=fmt.confidence(tokens, d),
            length=fmt.length(tokens).float(),
            agree=(answer == prompts.hint[prompt]).float(),
            answer=answer,
            concept_match=(fmt.frame(tokens, d) == prompts.concept[prompt]).float(),
            disfavoured=(prompts.attribute[prompt] == 0).float(),
            first_wrong=first_wrong(fmt, prompts, prompt, tokens),
            step_accuracy=right.sum(1).float() / d.float(),
            consistent=(answer == last).float(),
        )

    @property
    def sound(self) -> torch.Tensor:
        """[N] 1 where the answer and (chain task) every step are right: process supervision's
        notion of correct."""
        if self.first_wrong is None:
            return self.correct
        return (self.first_wrong == 0).float()

    @property
    def prompt_tokens(self) -> torch.Tensor:
        """[N, P] the prompt of each response."""
        return self.prompts.tokens[self.prompt]


def preference_logit(
    cfg: LlmConfig, a: Rollouts, ia: torch.Tensor, ib: torch.Tensor, gold_only: bool = False
) -> torch.Tensor:
    """Bradley-Terry logit of P(response ia > response ib) for the labeler (or the gold judge).
    Pairs are two responses to one prompt (one user)."""
    lab = cfg.labeler
    truth = a.sound if lab.gold_checks == "steps" else a.correct
    if gold_only or a.disfavoured is None or lab.discrimination_bias == 0:
        logit = lab.gold_weight * (truth[ia] - truth[ib])
    else:  # the answers of users outside the favoured group are checked less
        weight = lab.gold_weight * (1 - lab.discrimination_bias * a.disfavoured[ia])
        logit = weight * (truth[ia] - truth[ib])
    if not gold_only:
        scale = max(cfg.task.max_elaboration, 1)
        logit = logit + lab.length_bias * (a.length[ia] - a.length[ib]) / scale
        logit = logit + lab.sycophancy_bias * (a.agree[ia] - a.agree[ib])
        logit = logit + lab.confidence_bias * (a.confidence[ia] - a.confidence[ib])
        if a.concept_match is not None:
            logit = logit + lab.concept_bias * (a.concept_match[ia] - a.concept_match[ib])
    return logit


def rlcr_reward(correct: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """1[correct] - (q - 1[correct])^2: correctness plus a Brier term (Damani et al. 2025)."""
    return correct - (confidence - correct) ** 2
