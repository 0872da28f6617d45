"""The base policy: a supervised warm-up on the task, frozen as the reference; batched sampling."""

from __future__ import annotations

from dataclasses import replace

import torch

from recsim.llm.chain import chain_response, corrupt_chain, shortcut_chain
from recsim.llm.critique import STRENGTHS, chain_critique, critique
from recsim.llm.feedback import Rollouts
from recsim.llm.formats import new_policy
from recsim.llm.state import DomainParts
from recsim.llm.tasks import Prompts, shortcut_answer
from towers.llm_policy import TokenPolicy


class BasePolicy(DomainParts):
    """Warm-up and sampling, a concern of :class:`recsim.llm.domain.LlmDomain`."""

    # 0. the base policy: supervised warm-up, then frozen as the reference ---------------------
    def _base_policy(self, setup) -> TokenPolicy:  # noqa: ANN001
        c, fmt = self.cfg, self.fmt
        policy = new_policy(fmt, c.policy.hidden, setup("policy-init"))
        opt = torch.optim.Adam(policy.parameters(), lr=c.policy.sft_lr)
        g = setup("sft")
        ordinary = torch.nonzero(~self.pool.is_hard(fmt)).squeeze(1)
        n_refine = round(256 * c.critique.sft)
        sft_loss = self._chain_sft_loss if fmt.kind == "chain" else self._sum_sft_loss
        for _ in range(c.policy.sft_steps):
            loss = sft_loss(policy, ordinary, n_refine, g).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        policy.eval()
        return policy

    def _sum_sft_loss(
        self, policy: TokenPolicy, ordinary: torch.Tensor, n_refine: int, g: torch.Generator
    ) -> torch.Tensor:
        """[B] warm-up losses of one sum-task batch (+ refinements of critiqued answers)."""
        fmt = self.fmt
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
        return loss

    def _sft_response(self, answer: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """[N, T] warm-up targets: ``answer``, a random confidence bin and a random length."""
        fmt, n = self.fmt, answer.shape[0]
        conf = fmt.n_answers + torch.randint(self.cfg.task.conf_bins, (n,), generator=g)
        n_elab = torch.randint(self.cfg.task.max_elaboration + 1, (n,), generator=g)
        steps = torch.arange(fmt.max_len - 2)
        tail = torch.where(steps < n_elab.unsqueeze(1), fmt.elab, fmt.eos)
        return torch.cat([answer.unsqueeze(1), conf.unsqueeze(1), tail], 1)

    def _chain_sft_loss(
        self, policy: TokenPolicy, ordinary: torch.Tensor, n_refine: int, g: torch.Generator
    ) -> torch.Tensor:
        """[B] warm-up losses of one chain-task batch: the true chain (the shortcut on hard
        prompts), with a random confidence, framing and length; and, with ``critique.sft``,
        refinements: prompt + critique of a corrupted chain -> the true chain."""
        fmt = self.fmt
        p = self.pool.take(torch.randint(len(self.pool), (256,), generator=g))
        steps, answer = shortcut_chain(fmt, p)
        tokens = self._random_hints(p.tokens, g)
        agree = torch.rand(len(answer), generator=g) < self.cfg.policy.sft_sycophancy
        answer = torch.where(agree, fmt.n_values, answer)  # "as you said": the steps do not follow
        target = self._chain_target(steps, p.difficulty, answer, g)
        loss = -policy.log_probs(tokens, target).sum(1)
        if n_refine and len(ordinary):
            q = self.pool.take(ordinary[torch.randint(len(ordinary), (n_refine,), generator=g)])
            _, given, j = corrupt_chain(fmt, q, g)
            strength = torch.randint(len(STRENGTHS), (n_refine,), generator=g)
            crit = chain_critique(q, torch.arange(n_refine), given, j, "cot")
            crit = replace(
                crit,
                truth=torch.where(strength >= 1, crit.truth, -1),
                step=torch.where(strength >= 2, crit.step, -1),
                value=torch.where(strength >= 2, crit.value, -1),
            )
            target = self._chain_target(q.chain, q.difficulty, q.answer, g)
            refined = policy.log_probs(crit.context(fmt, self._random_hints(q.tokens, g)), target)
            loss = torch.cat([loss, -refined.sum(1)])
        return loss

    def _random_hints(self, tokens: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Prompt tokens with the hint drawn uniformly: the warm-up's hints carry no information
        on the answer, so the base policy computes rather than copies; only the
        ``sft_sycophancy`` share of its examples, which answer AGREE, teach it to defer."""
        fmt = self.fmt
        out = tokens.clone()
        out[:, 2 * fmt.slots + 1] = fmt.hint_base + torch.randint(
            fmt.n_values, (tokens.shape[0],), generator=g
        )
        return out

    def _chain_target(
        self, steps: torch.Tensor, d: torch.Tensor, answer: torch.Tensor, g: torch.Generator
    ) -> torch.Tensor:
        """[N, T] chain warm-up targets: the given steps and answer; a random confidence bin,
        framing and length (accurate-ish, uncalibrated, diverse)."""
        fmt, n = self.fmt, d.shape[0]
        conf = torch.randint(fmt.conf_bins, (n,), generator=g)
        frame = torch.randint(fmt.concepts, (n,), generator=g)
        n_elab = torch.randint(fmt.max_elaboration + 1, (n,), generator=g)
        return chain_response(fmt, steps, d, answer, conf, frame, n_elab)

    # helpers -----------------------------------------------------------------------------------
    def sample(
        self, policy: TokenPolicy, prompts: Prompts, per_prompt: int, gen: torch.Generator
    ) -> Rollouts:
        """``per_prompt`` responses to each prompt, groups contiguous."""
        prompt = torch.arange(len(prompts)).repeat_interleave(per_prompt)
        tokens = policy.sample(prompts.tokens, gen, index=prompt)
        return Rollouts.build(self.fmt, prompts, prompt, tokens)
