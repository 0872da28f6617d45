"""Policy optimization against the reward: rewards, rubric gates, GRPO / sign split / Critique-GRPO steps."""

from __future__ import annotations

import numpy as np
import torch

from recsim.core import faults
from recsim.llm.chain import checked_first_wrong
from recsim.llm.critique import (
    critique_failed,
    critique_grpo_loss,
    directive_advantages,
    mixed_group_advantages,
    select_refinements,
)
from recsim.llm.feedback import Rollouts, rlcr_reward
from recsim.llm.rl import (
    group_advantages,
    kl_penalty,
    policy_loss,
    process_advantages,
    sign_split_advantages,
)
from recsim.llm.state import DomainParts, LlmState
from recsim.mitigations.gates import group_gate
from towers.llm_policy import TokenPolicy, response_mask


class PolicyOptimization(DomainParts):
    """Policy updates, a concern of :class:`recsim.llm.domain.LlmDomain`."""

    def rubric_violation(self, r: Rollouts) -> torch.Tensor:
        """[N] bool: the response breaks the rubric (too long, copies the user's hint, or (chain
        task, ``gate_consistency``) states an answer other than its last step)."""
        mit = self.config.mitigations
        bad = r.length > mit.gate_max_length
        if mit.gate_hint_copy:
            bad = bad | (r.agree > 0)
        if mit.gate_consistency and r.consistent is not None:  # the steps' format: answer = last step
            bad = bad | (r.consistent == 0)
        return bad

    def _first_wrong(self, r: Rollouts) -> torch.Tensor:
        """[N] the first step the process reward finds wrong: the verifier's first wrong verdict
        (with its systematic errors), or the true first wrong step where checks are off."""
        if self.checker is None:
            return r.first_wrong
        return checked_first_wrong(self.checker(r.prompt_tokens, r.tokens))

    def rewards(self, state: LlmState, r: Rollouts) -> torch.Tensor:
        """[N] the reward the policy is optimized against."""
        mit = self.config.mitigations
        if self.cfg.optimization.reward == "binary":
            reward = r.correct
        elif self.cfg.optimization.reward == "rlcr":
            reward = rlcr_reward(r.correct, r.confidence)
        elif self.cfg.optimization.reward == "process":  # the scalar behind the step rewards
            reward = (self._first_wrong(r) == 0).float()
        else:
            reward = self.score(state.reward_model, r)
        if mit.brier_weight > 0:  # proper-scoring term on the stated confidence
            reward = reward - mit.brier_weight * (r.confidence - r.correct) ** 2
        if mit.gate == "dense":  # the rubric as a dense penalty the optimizer can trade off
            reward = reward - mit.dense_penalty * self.rubric_violation(r).float()
        return reward

    def _optimize_policy(self, state: LlmState, round_: int) -> dict[str, float]:
        c = self.cfg
        policy, opt = state.policy, state.policy_opt
        kls, losses, critiqued, refined_ok = [], [], 0, 0.0
        for step in range(c.optimization.steps):
            g = self.gen(round_, f"policy-step-{step}")
            idx = torch.randperm(len(self.pool), generator=g)[: c.optimization.batch_prompts]
            r = self.sample(policy, self.pool.take(idx), c.optimization.group_size, g)
            reward = self.rewards(state, r)
            gate = None
            if self.config.mitigations.gate == "gate":  # rejected groups teach nothing
                gate = group_gate(self.rubric_violation(r), c.optimization.group_size).float()
            policy.train()
            prompts = r.prompt_tokens
            logp = policy.log_probs(prompts, r.tokens)
            with torch.no_grad():
                ref = self.reference.log_probs(r.prompts.tokens, r.tokens, r.prompt)
            mask = response_mask(r.tokens, self.fmt.eos)
            kl_coef = c.optimization.kl_coef if c.optimization.optimizer == "grpo" else 0.0
            if c.critique.kind != "none" and c.critique.use == "refine":
                loss, kl, n_ref, n_ok = self._critique_grpo_loss(state, r, reward, logp, ref, mask, gate, g)
                critiqued, refined_ok = critiqued + n_ref, refined_ok + n_ok
            else:
                adv, n_crit = self._advantages(policy, r, reward, gate, logp, mask)
                critiqued += n_crit
                loss, kl = policy_loss(logp, ref, mask, adv, kl_coef)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            faults.point("train-step")
            policy.eval()
            kls.append(float(kl))
            losses.append(float(loss.detach()))
        stats = {"policy_loss": float(np.mean(losses)), "train_kl_token": float(np.mean(kls))} if kls else {}
        if c.critique.kind != "none" and kls:
            stats["critiqued"] = critiqued / (
                c.optimization.steps * c.optimization.batch_prompts * c.optimization.group_size
            )
            if c.critique.use == "refine":
                stats["refine_success"] = refined_ok / critiqued if critiqued else float("nan")
        return stats

    def _advantages(
        self,
        policy: TokenPolicy,
        r: Rollouts,
        reward: torch.Tensor,
        gate: torch.Tensor | None,
        logp: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, int]:
        """Per-sample (or, with hindsight critiques, per-token) advantages of the rollouts, and how
        many rollouts were critiqued."""
        c = self.cfg
        if c.optimization.reward == "process":  # per-token advantages from the step rewards
            d = r.prompts.difficulty[r.prompt]
            adv = process_advantages(self._first_wrong(r), d, c.optimization.group_size, r.tokens.shape[1])
            return (adv if gate is None else adv * gate.unsqueeze(1)), 0
        if c.optimization.optimizer == "grpo":
            adv = group_advantages(reward, c.optimization.group_size, std=c.optimization.advantage == "std")
        else:  # sign split: positive = correct (binary/rlcr) or above the group median (reward model)
            if c.optimization.reward == "reward_model":
                grouped = reward.view(-1, c.optimization.group_size)  # [N, G]
                positive = (grouped > grouped.median(1, keepdim=True).values).view(-1)
            else:
                positive = r.correct > 0
            adv = sign_split_advantages(positive, c.optimization.optimizer, c.optimization.w_lambda)
        if gate is not None:
            adv = adv * gate
        if c.critique.kind == "none":
            return adv, 0
        # hindsight: the critique's per-token directive signal
        crit = critique_failed(self.fmt, r.prompts, r.prompt, r.tokens, c.critique.kind)
        with torch.no_grad():
            teacher = policy.log_probs(crit.context(self.fmt, r.prompt_tokens[crit.row]), r.tokens[crit.row])
        adv = directive_advantages(adv, crit.row, teacher, logp[crit.row], mask, c.critique.directive_weight)
        return adv, len(crit)

    def _critique_grpo_loss(
        self,
        state: LlmState,
        r: Rollouts,
        reward: torch.Tensor,
        logp: torch.Tensor,
        ref: torch.Tensor,
        mask: torch.Tensor,
        gate: torch.Tensor | None,
        g: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        """Critique-GRPO on one batch: refine the failed responses given their critiques, build the
        mixed groups, and return (loss, KL of the initial tokens, refinements, correct ones)."""
        c, fmt, policy = self.cfg, self.fmt, state.policy
        crit = critique_failed(fmt, r.prompts, r.prompt, r.tokens, c.critique.kind)
        prompts = r.prompt_tokens
        tokens = policy.sample(crit.context(fmt, prompts[crit.row]), g)  # refinements
        refinements = Rollouts.build(fmt, r.prompts, r.prompt[crit.row], tokens)
        ref_reward = self.rewards(state, refinements)
        group = crit.row // c.optimization.group_size
        keep = select_refinements(group, refinements.correct, c.critique.refine_keep)
        adv, ref_adv = mixed_group_advantages(
            reward,
            c.optimization.group_size,
            ref_reward[keep],
            group[keep],
            std=c.optimization.advantage == "std",
        )
        if gate is not None:
            adv, ref_adv = adv * gate, ref_adv * gate[crit.row[keep]]
        kept = tokens[keep]
        ref_logp = policy.log_probs(prompts[crit.row[keep]], kept)  # learned as answers to the prompt alone
        ref_mask = response_mask(kept, fmt.eos)
        loss = critique_grpo_loss(logp, mask, adv, ref_logp, ref_mask, ref_adv, c.critique.refine_gamma)
        kl = kl_penalty(logp, ref, mask)
        loss = loss + c.optimization.kl_coef * kl
        return loss, kl.detach(), len(crit), float(refinements.correct.sum())
