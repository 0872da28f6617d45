"""The LLM-reward domain on the shared loop.

Per round (see :func:`recsim.loop.run_arm`):
1. act: the current policy samples G responses for a batch of training prompts (best-of-n: n
   samples per evaluation prompt, the reward model picks one; n = 2^round).
2. feedback: the labeler (or the reward model itself, or the gold judge for an anchor share)
   prefers one of each pair (g, g + 1) of a group; the simulator also knows correctness.
3. log: one row per response, with its pair and whether it won.
4. fit: the reward model retrains on the pairs of its window, all drawn from the policy's own
   samples (the selection bias); then the policy takes ``policy_steps`` updates against the reward.
5. measure: on fixed evaluation prompts: gold, proxy, gap, accuracy, pass@k, calibration,
   diversity, length, sycophancy, kl_ref, spurious_share.

gold and proxy share units: the win probability of the policy's response over a reference-policy
response to the same prompt, judged by the gold judge (gold) or by the reward model (proxy);
both are 0.5 while the policy equals the reference.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl
import torch

from recsim import faults, metrics
from recsim.config import SimConfig
from recsim.llm.critique import (
    STRENGTHS,
    critique,
    critique_failed,
    critique_grpo_loss,
    directive_advantages,
    mixed_group_advantages,
    select_refinements,
)
from recsim.llm.feedback import Rollouts, preference_logit, rlcr_reward
from recsim.llm.rl import group_advantages, kl_penalty, pass_at_k, policy_loss, sign_split_advantages
from recsim.llm.tasks import Format, Prompts, make_prompts, shortcut_answer, step_masks
from recsim.logs import LogStore
from recsim.mitigations.gates import group_gate
from recsim.mitigations.invariance import invariance_penalty
from recsim.rng import SETUP_ROUND, generator
from towers.llm_policy import TokenPolicy, response_mask
from towers.reward_model import RewardModel, bradley_terry_loss

PASS_K = (1, 2, 4, 8, 16, 32, 64)
# The supervised base policy of the last configuration seen (a pure function of its key): arms of
# one scenario that share a seed and the task settings reuse it instead of training it again.
_BASE_POLICIES: dict[tuple, dict[str, torch.Tensor]] = {}


@dataclass(frozen=True)
class Batch:
    """The round's samples for the labeler (``rollouts``, groups of G per training prompt) and, for
    best-of-n, the reward model's pick among n samples per evaluation prompt (``served``)."""

    rollouts: Rollouts
    served: Rollouts | None = None
    n: int = 1


@dataclass(frozen=True)
class Labels:
    """Pairs (winner, loser) as indices into the batch's rollouts, and who labeled them."""

    winner: torch.Tensor
    loser: torch.Tensor
    anchored: torch.Tensor


@dataclass(frozen=True)
class LlmState:
    """policy and reward model are updated in place by ``fit``; ``train`` holds fit statistics;
    ``budget`` the reward model's accuracy at each test-time budget (the round's table)."""

    policy: TokenPolicy
    reward_model: RewardModel
    policy_opt: torch.optim.Optimizer
    rm_opt: torch.optim.Optimizer
    train: dict[str, float] | None = None
    budget: pl.DataFrame | None = None


def gold_pairs(r: Rollouts, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(winner, loser) indices [M]: responses (2i, 2i + 1) within each group of ``group``
    (contiguous) that differ in correctness; the correct one wins by gold."""
    a = torch.arange(r.tokens.shape[0])
    pos = a % group
    a = a[(pos % 2 == 0) & (pos < group - 1)]
    b = a + 1
    differ = r.correct[a] != r.correct[b]
    a, b = a[differ], b[differ]
    a_wins = r.correct[a] > r.correct[b]
    return torch.where(a_wins, a, b), torch.where(a_wins, b, a)


class LlmDomain:
    """LLM-reward feedback loop of one arm."""

    name = "llm"

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        c = self.cfg = config.llm
        self.fmt = Format(
            c.prompt_len,
            c.n_answers,
            c.conf_bins,
            c.max_elaboration,
            c.max_difficulty,
            hard=c.hard_share > 0,
            critiques=c.critique != "none" or c.critique_sft > 0,
        )
        setup = lambda stream: generator(config.seed, SETUP_ROUND, stream)  # noqa: E731
        self.pool = make_prompts(self.fmt, c.n_prompts, c.hint_wrong, setup("prompts"), c.hard_share)
        self.eval = make_prompts(
            self.fmt, c.n_eval_prompts, c.hint_wrong, setup("eval-prompts"), c.hard_share
        )
        key = (
            config.seed,
            self.fmt,
            c.hint_wrong,
            c.hidden,
            c.sft_steps,
            c.sft_lr,
            c.n_prompts,
            c.hard_share,
            c.critique_sft,
        )
        if key not in _BASE_POLICIES:  # arms of one scenario share the base policy: train it once
            _BASE_POLICIES.clear()
            _BASE_POLICIES[key] = self._base_policy(setup).state_dict()
        self.reference = TokenPolicy(
            self.fmt.prompt_vocab, self.fmt.vocab, step_masks(self.fmt), c.hidden, setup("x")
        )
        self.reference.load_state_dict(_BASE_POLICIES[key])
        self.reference.requires_grad_(False).eval()
        # Reference responses for gold and proxy: fixed draws of the frozen reference policy.
        self.ref_one = self.sample(self.reference, self.eval, 1, setup("reference-1"))
        self.ref_many = self.sample(self.reference, self.eval, c.pass_k_samples, setup("reference-k"))
        # Held-out preference pairs (the evaluation ceiling): reference responses (2i, 2i + 1) to
        # one evaluation prompt that differ in correctness; gold prefers the correct one.
        self.heldout = gold_pairs(self.ref_many, c.pass_k_samples)
        budgets = sorted({*(2**i for i in range(c.rm_passes.bit_length())), c.rm_passes})
        self.budgets = [(m, 1) for m in budgets] + ([(c.rm_passes, c.rm_votes)] if c.rm_votes > 1 else [])

    def gen(self, round_: int, stream: str) -> torch.Generator:
        return generator(self.config.seed, round_, stream)

    # 0. the base policy: supervised warm-up, then frozen as the reference ---------------------
    def _base_policy(self, setup) -> TokenPolicy:  # noqa: ANN001
        c, fmt = self.cfg, self.fmt
        policy = TokenPolicy(fmt.prompt_vocab, fmt.vocab, step_masks(fmt), c.hidden, setup("policy-init"))
        opt = torch.optim.Adam(policy.parameters(), lr=c.sft_lr)
        g = setup("sft")
        ordinary = torch.nonzero(~self.pool.is_hard(fmt)).squeeze(1)
        n_refine = round(256 * c.critique_sft)
        for _ in range(c.sft_steps):
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
        conf = fmt.n_answers + torch.randint(self.cfg.conf_bins, (n,), generator=g)
        n_elab = torch.randint(self.cfg.max_elaboration + 1, (n,), generator=g)
        steps = torch.arange(fmt.max_len - 2)
        tail = torch.where(steps < n_elab.unsqueeze(1), fmt.elab, fmt.eos)
        return torch.cat([answer.unsqueeze(1), conf.unsqueeze(1), tail], 1)

    def initial_state(self) -> LlmState:
        c, fmt = self.cfg, self.fmt
        policy = copy.deepcopy(self.reference).requires_grad_(True)
        rm = RewardModel(
            fmt.prompt_vocab,
            fmt.vocab,
            c.hidden,
            self.gen(SETUP_ROUND, "rm-init"),
            passes=c.rm_passes,
            votes=c.rm_votes,
            vote_dropout=c.rm_vote_dropout,
            meta_judge=c.rm_meta_judge,
        )
        return LlmState(
            policy=policy,
            reward_model=rm,
            policy_opt=torch.optim.Adam(policy.parameters(), lr=c.policy_lr),
            rm_opt=torch.optim.Adam(rm.parameters(), lr=c.rm_lr),
        )

    def checkpoint(self, state: LlmState) -> dict[str, Any]:
        """Policy, reward model and both optimizers (the prompts and reference are set-up draws)."""
        return {
            "policy": state.policy.state_dict(),
            "reward_model": state.reward_model.state_dict(),
            "policy_opt": state.policy_opt.state_dict(),
            "rm_opt": state.rm_opt.state_dict(),
            "train": state.train,
        }

    def restore(self, payload: dict[str, Any]) -> LlmState:
        state = self.initial_state()
        state.policy.load_state_dict(payload["policy"])
        state.reward_model.load_state_dict(payload["reward_model"])
        state.policy_opt.load_state_dict(payload["policy_opt"])
        state.rm_opt.load_state_dict(payload["rm_opt"])
        return replace(state, train=payload["train"])

    # helpers -----------------------------------------------------------------------------------
    def sample(
        self, policy: TokenPolicy, prompts: Prompts, per_prompt: int, gen: torch.Generator
    ) -> Rollouts:
        """``per_prompt`` responses to each prompt, groups contiguous."""
        prompt = torch.arange(len(prompts)).repeat_interleave(per_prompt)
        tokens = policy.sample(prompts.tokens[prompt], gen)
        return Rollouts.build(self.fmt, prompts, prompt, tokens)

    def score(
        self, rm: RewardModel, r: Rollouts, passes: int | None = None, votes: int | None = None
    ) -> torch.Tensor:
        """Reward-model scores [N] (at the model's budget, or ``passes`` / ``votes``)."""
        with torch.inference_mode():
            return rm(r.prompt_tokens, r.tokens, passes=passes, votes=votes)

    def rm_accuracy(
        self,
        rm: RewardModel,
        r: Rollouts,
        pairs: tuple[torch.Tensor, torch.Tensor],
        passes: int | None = None,
        votes: int | None = None,
    ) -> float:
        """Share of gold ``pairs`` (winner, loser) of ``r`` that the reward model orders right."""
        winner, loser = pairs
        if len(winner) == 0:
            return float("nan")
        idx = torch.cat([winner, loser])
        prompts, tokens = r.prompt_tokens[idx], r.tokens[idx]
        with torch.inference_mode():
            s = rm(prompts, tokens, passes=passes, votes=votes)
        return float((s[: len(winner)] > s[len(winner) :]).float().mean())

    # 1. act ----------------------------------------------------------------------------------------
    def act(self, state: LlmState, round_: int) -> Batch:
        c = self.cfg
        idx = torch.randperm(len(self.pool), generator=self.gen(round_, "prompts"))[: c.label_prompts]
        rollouts = self.sample(state.policy, self.pool.take(idx), c.group_size, self.gen(round_, "sample"))
        if c.optimizer != "best_of_n":
            return Batch(rollouts)
        n = 2**round_
        cand = self.sample(state.policy, self.eval, n, self.gen(round_, "best-of-n"))
        # The reward model as it was when it decided (fitted on the earlier rounds' pairs).
        best = self.score(state.reward_model, cand).view(-1, n).argmax(1) + torch.arange(len(self.eval)) * n
        served = Rollouts.build(self.fmt, self.eval, cand.prompt[best], cand.tokens[best])
        return Batch(rollouts, served, n)

    def feedback(self, state: LlmState, batch: Batch, round_: int) -> Labels:
        c, r = self.cfg, batch.rollouts
        n = r.tokens.shape[0] - r.tokens.shape[0] % 2
        a, b = torch.arange(0, n, 2), torch.arange(1, n, 2)
        g = self.gen(round_, "labels")
        u = torch.rand(len(a), generator=g)
        anchored = torch.zeros(len(a), dtype=torch.bool)
        if c.rm_mode == "self":
            with torch.inference_mode():
                s = state.reward_model(r.prompt_tokens, r.tokens)
            p_a = torch.sigmoid(s[a] - s[b])
        else:
            p_a = torch.sigmoid(preference_logit(c, r, a, b))
            if c.rm_mode == "anchored":
                anchored = torch.rand(len(a), generator=g) < c.anchor_share
                p_a = torch.where(anchored, torch.sigmoid(preference_logit(c, r, a, b, gold_only=True)), p_a)
        a_wins = u < p_a
        return Labels(torch.where(a_wins, a, b), torch.where(a_wins, b, a), anchored)

    # 3. log ------------------------------------------------------------------------------------
    def log_frame(self, state: LlmState, batch: Batch, labels: Labels) -> pl.DataFrame:
        r = batch.rollouts
        n = r.tokens.shape[0]
        pair = torch.full((n,), -1, dtype=torch.long)
        won = torch.zeros(n, dtype=torch.bool)
        anchored = torch.zeros(n, dtype=torch.bool)
        k = torch.arange(len(labels.winner))
        pair[labels.winner], pair[labels.loser] = k, k
        won[labels.winner] = True
        anchored[labels.winner], anchored[labels.loser] = labels.anchored, labels.anchored
        return pl.DataFrame(
            {
                "prompt_tokens": r.prompt_tokens.to(torch.int16).numpy(),
                "response": r.tokens.to(torch.int16).numpy(),
                "answer": r.tokens[:, 0].numpy(),
                "true_answer": r.prompts.answer[r.prompt].numpy(),
                "hint": r.prompts.hint[r.prompt].numpy(),
                "difficulty": r.prompts.difficulty[r.prompt].numpy(),
                "correct": r.correct.bool().numpy(),
                "confidence": r.confidence.numpy(),
                "length": r.length.to(torch.int16).numpy(),
                "pair": pair.numpy(),
                "won": won.numpy(),
                "anchored": anchored.numpy(),
                "best_of": pl.Series([batch.n] * n, dtype=pl.Int32),
            }
        )

    # 4. fit ------------------------------------------------------------------------------------
    def fit(self, state: LlmState, logs: LogStore, arm: str, round_: int) -> LlmState:
        c = self.cfg
        stats: dict[str, float] = {}
        if c.rm_refit or round_ == 0:
            window = c.rm_window or round_ + 1
            frame = logs.read(arm, max(0, round_ - window + 1), round_)
            stats["rm_loss"] = self._fit_reward_model(state, frame, self.gen(round_, "rm-fit"))
        if c.optimizer not in ("best_of_n", "none"):
            stats.update(self._optimize_policy(state, round_))
        return replace(state, train=stats)

    def _fit_reward_model(self, state: LlmState, frame: pl.DataFrame, gen: torch.Generator) -> float:
        pairs = frame.filter(pl.col("pair") >= 0).sort(
            "round", "pair", pl.col("won"), descending=[False, False, True]
        )
        t = lambda col: torch.from_numpy(np.stack(pairs[col].to_numpy())).long()  # noqa: E731
        prompts, responses = t("prompt_tokens"), t("response")
        win, lose = torch.arange(0, len(pairs), 2), torch.arange(1, len(pairs), 2)  # winner first per pair
        mit = self.config.mitigations
        lengths = torch.from_numpy(pairs["length"].to_numpy().astype("int64"))
        agree = torch.from_numpy((pairs["answer"] == pairs["hint"]).to_numpy().astype("int64"))
        rm, opt = state.reward_model, state.rm_opt
        rm.train()
        total, count = 0.0, 0
        for _ in range(self.cfg.rm_epochs):
            order = torch.randperm(len(win), generator=gen)
            for s in range(0, len(order), 256):
                b = order[s : s + 256]
                # recurrent-depth training: each minibatch at a depth drawn from 1..rm_passes
                m = int(torch.randint(1, self.cfg.rm_passes + 1, (1,), generator=gen)) if rm.passes > 1 else 1
                rw = rm(prompts[win[b]], responses[win[b]], passes=m, gen=gen)
                rl = rm(prompts[lose[b]], responses[lose[b]], passes=m, gen=gen)
                loss = bradley_terry_loss(rw, rl)
                if mit.invariance_weight > 0:
                    loss = loss + mit.invariance_weight * self._invariance(
                        rw, rl, lengths[win[b]], lengths[lose[b]], agree[win[b]], agree[lose[b]]
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()) * len(b), count + len(b)
        rm.eval()
        return total / max(count, 1)

    def _invariance(self, rw, rl, len_w, len_l, agree_w, agree_l) -> torch.Tensor:  # noqa: ANN001
        """MMD invariance of reward scores across length buckets and hint agreement; conditional:
        within winners and within losers."""
        mit = self.config.mitigations
        scores = torch.cat([rw, rl])
        lengths = torch.cat([len_w, len_l])
        buckets = (lengths * mit.invariance_bins // (self.cfg.max_elaboration + 1)).clamp(
            max=mit.invariance_bins - 1
        )
        labels = (
            torch.cat([torch.ones_like(len_w), torch.zeros_like(len_l)])
            if mit.invariance_conditional
            else None
        )
        return invariance_penalty(scores, buckets, labels) + invariance_penalty(
            scores, torch.cat([agree_w, agree_l]), labels
        )

    def rubric_violation(self, r: Rollouts) -> torch.Tensor:
        """[N] bool: the response breaks the rubric (too long, or copies the user's hint)."""
        mit = self.config.mitigations
        bad = r.length > mit.gate_max_length
        if mit.gate_hint_copy:
            bad = bad | (r.agree > 0)
        return bad

    def rewards(self, state: LlmState, r: Rollouts) -> torch.Tensor:
        """[N] the reward the policy is optimized against."""
        mit = self.config.mitigations
        if self.cfg.reward == "binary":
            reward = r.correct
        elif self.cfg.reward == "rlcr":
            reward = rlcr_reward(r.correct, r.confidence)
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
        for step in range(c.policy_steps):
            g = self.gen(round_, f"policy-step-{step}")
            idx = torch.randperm(len(self.pool), generator=g)[: c.batch_prompts]
            r = self.sample(policy, self.pool.take(idx), c.group_size, g)
            reward = self.rewards(state, r)
            gate = None
            if self.config.mitigations.gate == "gate":  # rejected groups teach nothing
                gate = group_gate(self.rubric_violation(r), c.group_size).float()
            policy.train()
            prompts = r.prompt_tokens
            logp = policy.log_probs(prompts, r.tokens)
            with torch.no_grad():
                ref = self.reference.log_probs(prompts, r.tokens)
            mask = response_mask(r.tokens, self.fmt.eos)
            kl_coef = c.kl_coef if c.optimizer == "grpo" else 0.0
            if c.critique != "none" and c.critique_use == "refine":
                loss, kl, n_ref, n_ok = self._critique_grpo_loss(state, r, reward, logp, ref, mask, gate, g)
                critiqued, refined_ok = critiqued + n_ref, refined_ok + n_ok
            else:
                if c.optimizer == "grpo":
                    adv = group_advantages(reward, c.group_size, std=c.advantage == "std")
                else:  # sign split: positive = correct (binary/rlcr) or above the group median (reward model)
                    if c.reward == "reward_model":
                        grouped = reward.view(-1, c.group_size)  # [N, G]
                        positive = (grouped > grouped.median(1, keepdim=True).values).view(-1)
                    else:
                        positive = r.correct > 0
                    adv = sign_split_advantages(positive, c.optimizer, c.w_lambda)
                if gate is not None:
                    adv = adv * gate
                if c.critique != "none":  # hindsight: the critique's per-token directive signal
                    crit = critique_failed(self.fmt, r.prompts, r.prompt, r.tokens, c.critique)
                    with torch.no_grad():
                        teacher = policy.log_probs(
                            crit.context(self.fmt, prompts[crit.row]), r.tokens[crit.row]
                        )
                    adv = directive_advantages(
                        adv, crit.row, teacher, logp[crit.row], mask, c.directive_weight
                    )
                    critiqued += len(crit)
                loss, kl = policy_loss(logp, ref, mask, adv, kl_coef)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            faults.point("train-step")
            policy.eval()
            kls.append(float(kl))
            losses.append(float(loss.detach()))
        stats = {"policy_loss": float(np.mean(losses)), "train_kl_token": float(np.mean(kls))} if kls else {}
        if c.critique != "none" and kls:
            stats["critiqued"] = critiqued / (c.policy_steps * c.batch_prompts * c.group_size)
            if c.critique_use == "refine":
                stats["refine_success"] = refined_ok / critiqued if critiqued else float("nan")
        return stats

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
        crit = critique_failed(fmt, r.prompts, r.prompt, r.tokens, c.critique)
        prompts = r.prompt_tokens
        tokens = policy.sample(crit.context(fmt, prompts[crit.row]), g)  # refinements
        refinements = Rollouts.build(fmt, r.prompts, r.prompt[crit.row], tokens)
        ref_reward = self.rewards(state, refinements)
        group = crit.row // c.group_size
        keep = select_refinements(group, refinements.correct, c.refine_keep)
        adv, ref_adv = mixed_group_advantages(
            reward, c.group_size, ref_reward[keep], group[keep], std=c.advantage == "std"
        )
        if gate is not None:
            adv, ref_adv = adv * gate, ref_adv * gate[crit.row[keep]]
        kept = tokens[keep]
        ref_logp = policy.log_probs(prompts[crit.row[keep]], kept)  # learned as answers to the prompt alone
        ref_mask = response_mask(kept, fmt.eos)
        loss = critique_grpo_loss(logp, mask, adv, ref_logp, ref_mask, ref_adv, c.refine_gamma)
        kl = kl_penalty(logp, ref, mask)
        loss = loss + c.kl_coef * kl
        return loss, kl.detach(), len(crit), float(refinements.correct.sum())

    # 5. measure --------------------------------------------------------------------------------
    def measure(
        self, state: LlmState, batch: Batch, labels: Labels, round_: int
    ) -> tuple[dict[str, float], LlmState]:
        c = self.cfg
        g = self.gen(round_, "eval")
        k_max = c.pass_k_samples
        many = self.sample(state.policy, self.eval, k_max, g)  # [P * K]
        if batch.served is not None:
            served = batch.served  # the reward model's pick among n, one per evaluation prompt
            ref = self.ref_one
            kl = float(np.log(batch.n) - (batch.n - 1) / batch.n)
        else:
            served = many  # every sample of the policy, K per evaluation prompt
            ref = self.ref_many  # paired by prompt
            with torch.inference_mode():
                kl = float(
                    (
                        state.policy.log_probs(many.prompt_tokens, many.tokens)
                        - self.reference.log_probs(many.prompt_tokens, many.tokens)
                    )
                    .sum(1)
                    .mean()
                )
        rm = state.reward_model
        s_served, s_ref = self.score(rm, served), self.score(rm, ref)
        gold = torch.sigmoid(c.gold_weight * (served.correct - ref.correct))
        row: dict[str, float] = {
            "gold": float(gold.mean()),
            "proxy": float(torch.sigmoid(s_served - s_ref).mean()),
            "accuracy": float(served.correct.mean()),
            "kl_ref": kl,
            "sqrt_kl": float(np.sqrt(max(kl, 0.0))),
            "length": float(served.length.mean()),
            "ece": metrics.ece(served.confidence, served.correct, c.conf_bins),
            "brier": metrics.brier(served.confidence, served.correct),
            "sycophancy": float(served.agree[self.eval.hint_wrong[served.prompt]].mean()),
            "spurious_share": reward_spurious_share(s_served, served),
            "reward_accuracy": float(
                ((s_served > s_ref) == (served.correct > ref.correct))
                .float()[served.correct != ref.correct]
                .mean()
            ),
        }
        row["gap"] = row["proxy"] - row["gold"]
        # Diversity and pass@k of the policy itself (K samples per evaluation prompt).
        correct = many.correct.view(len(self.eval), k_max)
        n_ok = correct.sum(1)
        for k in PASS_K:
            if k <= k_max:
                row[f"pass_at_{k}"] = float(pass_at_k(k_max, n_ok, k).mean())
        answers = many.tokens[:, 0].view(len(self.eval), k_max)
        counts = torch.nn.functional.one_hot(answers, c.n_answers).sum(1).double()  # [P, A]
        p = counts / k_max
        row["entropy"] = float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())
        _, distinct = torch.unique(
            torch.cat([many.prompt.unsqueeze(1), many.tokens], 1), dim=0, return_counts=True
        )
        row["gini"] = metrics.gini(distinct.double())
        row["coverage"] = float(len(distinct) / len(many.prompt))
        # The hard subset: hard prompts where there are any, else the hardest difficulty.
        hardest = self.eval.is_hard(self.fmt) if self.fmt.hard else self.eval.difficulty == c.max_difficulty
        hard = hardest[served.prompt]  # [N] served from the hard subset
        row["accuracy_hard"] = float(served.correct[hard].mean()) if hard.any() else float("nan")
        if self.fmt.hard:
            for k in PASS_K:
                if k <= k_max:
                    row[f"hard_pass_at_{k}"] = float(pass_at_k(k_max, n_ok[hardest], k).mean())
        row.update(self._unsolved(batch.rollouts))
        # The reward model against gold: on the policy's current samples and the held-out pairs,
        # at its own budget (the row) and at every budget up to it (the round's table).
        current = gold_pairs(many, k_max)
        curve = [
            {
                "round": round_,
                "passes": m,
                "votes": k,
                "rm_accuracy": self.rm_accuracy(rm, many, current, m, k),
                "rm_accuracy_heldout": self.rm_accuracy(rm, self.ref_many, self.heldout, m, k),
            }
            for m, k in self.budgets
        ]
        row["rm_accuracy"] = curve[-1]["rm_accuracy"]
        row["rm_accuracy_heldout"] = curve[-1]["rm_accuracy_heldout"]
        row.update(state.train or {})
        return row, replace(state, budget=pl.DataFrame(curve))

    def _unsolved(self, r: Rollouts) -> dict[str, float]:
        """unsolved_share (and _hard): share of the round's training prompts with no success in k
        samples, 1 - pass@k estimated from their G samples (the zero-success indicator at k = G)."""
        g = self.cfg.group_size
        k = self.cfg.unsolved_k or g
        n_ok = r.correct.view(-1, g).sum(1)
        unsolved = 1 - pass_at_k(g, n_ok, k)
        row = {"unsolved_share": float(unsolved.mean())}
        if self.fmt.hard:
            hard = r.prompts.is_hard(self.fmt)[r.prompt.view(-1, g)[:, 0]]
            row["unsolved_share_hard"] = float(unsolved[hard].mean()) if hard.any() else float("nan")
        return row

    def evolve(self, state: LlmState, batch: Batch, labels: Labels, round_: int) -> LlmState:
        return state  # the tasks do not change

    def tables(self, state: LlmState, round_: int) -> dict[str, pl.DataFrame]:
        return {"rm_budget": state.budget} if state.budget is not None else {}


def _solve_psd(a: list[list[float]], b: list[float]) -> list[float]:
    """Solve (A + eps I) c = b for a small positive semi-definite A by Cholesky, in Python floats
    (deterministic). eps = 1e-12 trace(A) keeps a constant feature (a zero row and column) at
    coefficient 0 instead of making the system singular."""
    n = len(b)
    eps = 1e-12 * max(sum(a[i][i] for i in range(n)), 1e-300)
    low = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            acc = a[i][j] + (eps if i == j else 0.0) - sum(low[i][k] * low[j][k] for k in range(j))
            low[i][j] = math.sqrt(max(acc, 1e-300)) if i == j else acc / low[j][j]
    z = [0.0] * n
    for i in range(n):  # L z = b
        z[i] = (b[i] - sum(low[i][k] * z[k] for k in range(i))) / low[i][i]
    c = [0.0] * n
    for i in reversed(range(n)):  # L^T c = z
        c[i] = (z[i] - sum(low[k][i] * c[k] for k in range(i + 1, n))) / low[i][i]
    return c


def reward_spurious_share(scores: torch.Tensor, r: Rollouts) -> float:
    """Share of reward-score variance carried by spurious features rather than correctness.

    Least squares of the scores on [1, correct, length, agrees-with-hint, stated confidence];
    with b = the fitted contribution of (length, agreement, confidence) and g = that of
    correctness, spurious_share = Var(b) / (Var(b) + Var(g)) (the same split as the
    recommender's position vs relevance parts, :func:`recsim.metrics.spurious_share`).
    """
    x = torch.stack([r.correct, r.length, r.agree, r.confidence], 1).double()
    x = x - x.mean(0)
    y = scores.double() - scores.double().mean()
    # Normal equations with torch's own reductions, solved in plain floats: LAPACK's least
    # squares (even on the 4 x 4 system) gave results that differ in the last bits from call to
    # call in a busy process, and a run must reproduce itself exactly.
    gram = (x.unsqueeze(2) * x.unsqueeze(1)).sum(0)  # [4, 4]
    rhs = (x * y.unsqueeze(1)).sum(0)  # [4]
    coef = torch.tensor(_solve_psd(gram.tolist(), rhs.tolist()), dtype=torch.float64)
    return metrics.spurious_share(x[:, 0] * coef[0], x[:, 1:] @ coef[1:])
