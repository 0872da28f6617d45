"""The base policy: a supervised warm-up on the task, frozen as the reference; batched sampling."""

from __future__ import annotations

from dataclasses import replace

import torch

from recsim.llm.critique import (
    STRENGTHS,
    critique,
)
from recsim.llm.feedback import Rollouts
from recsim.llm.state import DomainParts
from recsim.llm.tasks import Prompts, shortcut_answer, step_masks
from towers.llm_policy import TokenPolicy


class BasePolicy(DomainParts):
    """Warm-up and sampling, a concern of :class:`recsim.llm.domain.LlmDomain`."""

    # 0. the base policy: supervised warm-up, then frozen as the reference ---------------------
    def _base_policy(self, setup) -> TokenPolicy:  # noqa: ANN001
        c, fmt = self.cfg, self.fmt
        policy = TokenPolicy(
            fmt.prompt_vocab, fmt.vocab, step_masks(fmt), c.policy.hidden, setup("policy-init")
        )
        opt = torch.optim.Adam(policy.parameters(), lr=c.policy.sft_lr)
        g = setup("sft")
        ordinary = torch.nonzero(~self.pool.is_hard(fmt)).squeeze(1)
        n_refine = round(256 * c.critique.sft)
        for _ in range(c.policy.sft_steps):
            idx = torch.randint(len(self.pool), (256,), generator=g)
            p = self.pool.take(idx)
            # Gold answers (the shortcut on hard prompts); confidence and length drawn at random:
            # accurate-ish, uncalibrated, diverse.
            loss = -policy.log_probs(p.tokens, self._sft_response(shortcut_answer(fmt, p), g)).sum(1)
            if n_refine and len(ordinary):  # following critiques: prompt + critique of a wrong answer
                q = self.pool.take(ordinary[torch.randint(len(ordinary), (n_refine,), generator=g)])
                given = (q.answer + torch.randint(1, fmt.n_answers, (n_refine,), generator=g)) % fmt.n_answers
                strength = torch.randint(len(STRENGTHS), (n_refine,), generator=g)
                crit = critique(fmt, q, torch.arange(n_refine), given, "cot")
                crit = replace(
                    crit,
                    truth=torch.where(strength >= 1, crit.truth, -1),
                    step=torch.where(strength >= 2, crit.step, -1),
                )
                refined = policy.log_probs(crit.context(fmt, q.tokens), self._sft_response(q.answer, g))
                loss = torch.cat([loss, -refined.sum(1)])
            loss = loss.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        policy.eval()
        return policy

    def _sft_response(self, answer: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """[N, T] warm-up targets: ``answer``, a random confidence bin and a random length."""
        fmt, n = self.fmt, answer.shape[0]
        conf = fmt.n_answers + torch.randint(self.cfg.task.conf_bins, (n,), generator=g)
        n_elab = torch.randint(self.cfg.task.max_elaboration + 1, (n,), generator=g)
        steps = torch.arange(fmt.max_len - 2)
        tail = torch.where(steps < n_elab.unsqueeze(1), fmt.elab, fmt.eos)
        return torch.cat([answer.unsqueeze(1), conf.unsqueeze(1), tail], 1)

    # helpers -----------------------------------------------------------------------------------
    def sample(
        self, policy: TokenPolicy, prompts: Prompts, per_prompt: int, gen: torch.Generator
    ) -> Rollouts:
        """``per_prompt`` responses to each prompt, groups contiguous."""
        prompt = torch.arange(len(prompts)).repeat_interleave(per_prompt)
        tokens = policy.sample(prompts.tokens[prompt], gen)
        return Rollouts.build(self.fmt, prompts, prompt, tokens)
