"""The LLM-reward domain on the shared loop.

Per round (see :func:`recsim.core.loop.run_arm`):
1. act: the current policy samples G responses for a batch of training prompts (best-of-n: n
   samples per evaluation prompt, the reward model picks one; n = 2^round).
2. feedback: the labeler (or the reward model itself, or the gold judge for an anchor share)
   prefers one of each pair (g, g + 1) of a group; the simulator also knows correctness.
3. log: one row per response, with its pair and whether it won.
4. fit: the reward model retrains on the pairs of its window, all drawn from the policy's own
   samples (the selection bias); then the policy takes ``policy_steps`` updates against the reward.
5. measure: on fixed evaluation prompts: gold, proxy, gap, accuracy, pass@k, calibration,
   diversity, length, sycophancy, kl_ref, spurious_share; on the chain task also the steps'
   accuracy and the reward's sensitivity to each hacking mode (:func:`.evaluation.chain_metrics`).

The task (``llm.task.kind``) is the multi-step chain (:mod:`recsim.llm.chain`) or the one-token
sum (:mod:`recsim.llm.tasks`); :mod:`recsim.llm.formats` puts both behind one interface.

gold and proxy share units: the win probability of the policy's response over a reference-policy
response to the same prompt, judged by the gold judge (gold) or by the reward model (proxy);
both are 0.5 while the policy equals the reference.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import torch

from recsim.core.rng import SETUP_ROUND, generator
from recsim.io.cache import SharedCache, content_digest
from recsim.io.logs import LogStore
from recsim.llm.chain import check_steps
from recsim.llm.feedback import Rollouts, preference_logit
from recsim.llm.formats import draw_prompts, make_format, new_policy
from towers.reward_model import RewardModel

if TYPE_CHECKING:
    from recsim.config import SimConfig
from recsim.llm.base_policy import BasePolicy
from recsim.llm.evaluation import Evaluation, reward_shares
from recsim.llm.policy_opt import PolicyOptimization
from recsim.llm.reward_fit import RewardFit, fit_columns
from recsim.llm.state import Batch, Labels, LlmState, gold_pairs
from recsim.mitigations import describe

__all__ = ["Batch", "Labels", "LlmDomain", "LlmState", "gold_pairs", "reward_shares"]


class LlmDomain(BasePolicy, RewardFit, PolicyOptimization, Evaluation):
    """LLM-reward feedback loop of one arm. Its concerns live in their own modules: the base
    policy (:mod:`.base_policy`), the reward model's fit (:mod:`.reward_fit`), policy optimization
    (:mod:`.policy_opt`) and evaluation (:mod:`.evaluation`); this class wires the loop's steps."""

    name = "llm"
    table_names = ("rm_budget", "rm_fit")
    finite_keys = ("rm_loss", "policy_loss")

    def __init__(self, config: SimConfig, dist: Any = None, cache: SharedCache | None = None) -> None:
        self.config = config
        c = self.cfg = config.llm
        self.fmt = make_format(c)
        setup = lambda stream: generator(config.seed, SETUP_ROUND, stream)  # noqa: E731
        self.pool = draw_prompts(
            self.fmt, c.task.n_prompts, c.task.hint_wrong, setup("prompts"), c.task.hard_share
        )
        self.eval = draw_prompts(
            self.fmt, c.task.n_eval_prompts, c.task.hint_wrong, setup("eval-prompts"), c.task.hard_share
        )
        key = (  # everything the supervised warm-up depends on
            config.seed,
            self.fmt,
            c.task.hint_wrong,
            c.policy.hidden,
            c.policy.sft_steps,
            c.policy.sft_lr,
            c.task.n_prompts,
            c.task.hard_share,
            c.critique.sft,
            c.policy.sft_sycophancy,
            torch.get_num_threads(),  # its float sums are split by thread
        )
        # Arms of one seed with the same warm-up settings share the base policy: trained once per
        # process, and once per study where the runner gives a cache folder.
        self.cache = cache or SharedCache()
        base = self.cache.get("base-policy", key, lambda: self._base_policy(setup).state_dict())
        # The verifier (chain task): the reward model's step checks and the process rewards'
        # credit; its systematic errors are hashed with this seed's draw.
        self.checker: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        if self.fmt.kind == "chain" and c.reward_model.checks:
            salt = int(torch.randint(2**62, (1,), generator=setup("checker")))
            self.checker = partial(check_steps, self.fmt, error=c.reward_model.check_error, salt=salt)
        self.reference = new_policy(self.fmt, c.policy.hidden, setup("x"))
        self.reference.load_state_dict(base)
        self.reference.requires_grad_(False).eval()
        # Reference responses for gold and proxy: fixed draws of the frozen reference policy.
        self.ref_one = self.sample(self.reference, self.eval, 1, setup("reference-1"))
        self.ref_many = self.sample(
            self.reference, self.eval, c.evaluation.pass_k_samples, setup("reference-k")
        )
        # Held-out preference pairs (the evaluation ceiling): reference responses (2i, 2i + 1) to
        # one evaluation prompt that differ in correctness; gold prefers the correct one.
        self.heldout = gold_pairs(self.ref_many, c.evaluation.pass_k_samples)
        budgets = sorted({*(2**i for i in range(c.reward_model.passes.bit_length())), c.reward_model.passes})
        self.budgets = [(m, 1) for m in budgets] + (
            [(c.reward_model.passes, c.reward_model.votes)] if c.reward_model.votes > 1 else []
        )

    def gen(self, round_: int, stream: str) -> torch.Generator:
        return generator(self.config.seed, round_, stream)

    def initial_state(self) -> LlmState:
        c, fmt = self.cfg, self.fmt
        policy = copy.deepcopy(self.reference).requires_grad_(True)
        rm = RewardModel(
            fmt.prompt_vocab,
            fmt.vocab,
            c.policy.hidden,
            self.gen(SETUP_ROUND, "rm-init"),
            passes=c.reward_model.passes,
            votes=c.reward_model.votes,
            vote_dropout=c.reward_model.vote_dropout,
            meta_judge=c.reward_model.meta_judge,
            checker=self.checker,
        )
        return LlmState(
            policy=policy,
            reward_model=rm,
            policy_opt=torch.optim.Adam(policy.parameters(), lr=c.optimization.lr),
            rm_opt=torch.optim.Adam(rm.parameters(), lr=c.reward_model.lr),
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

    # 1. act ----------------------------------------------------------------------------------------
    def act(self, state: LlmState, round_: int) -> Batch:
        c = self.cfg
        rollouts = self._label_samples(state.policy, round_)
        if c.optimization.optimizer != "best_of_n":
            return Batch(rollouts)
        n = 2**round_
        cand = self.sample(state.policy, self.eval, n, self.gen(round_, "best-of-n"))
        # The reward model as it was when it decided (fitted on the earlier rounds' pairs).
        best = self.score(state.reward_model, cand).view(-1, n).argmax(1) + torch.arange(len(self.eval)) * n
        served = Rollouts.build(self.fmt, self.eval, cand.prompt[best], cand.tokens[best])
        return Batch(rollouts, served, n)

    def _label_samples(self, policy: torch.nn.Module, round_: int) -> Rollouts:
        """G samples of ``policy`` for each of the round's ``label_prompts`` training prompts
        (round 0: ``initial_prompts``, where set)."""
        c = self.cfg
        n = c.labeler.label_prompts
        if round_ == 0 and c.labeler.initial_prompts is not None:
            n = c.labeler.initial_prompts
        idx = torch.randperm(len(self.pool), generator=self.gen(round_, "prompts"))[:n]
        return self.sample(policy, self.pool.take(idx), c.optimization.group_size, self.gen(round_, "sample"))

    def logged(self, state: LlmState, round_: int) -> tuple[Batch, Labels] | None:
        """With ``loop.feedback`` "open": the base (reference) policy's samples for the round's
        prompts, labeled as the policy's would be, so the reward model retrains on a fixed logger's
        samples instead of the current policy's own; None in the closed loop. The logger draws from
        the learner's own streams (``prompts``, ``sample``, ``labels``): in round 0, where the policy
        is the reference, both loops log the same pairs, and with ``reward_model.refit`` off the
        two loops are identical."""
        if self.config.loop.feedback == "closed":
            return None
        batch = Batch(self._label_samples(self.reference, round_))
        return batch, self.feedback(state, batch, round_)

    def feedback(self, state: LlmState, batch: Batch, round_: int) -> Labels:
        c, r = self.cfg, batch.rollouts
        n = r.tokens.shape[0] - r.tokens.shape[0] % 2
        a, b = torch.arange(0, n, 2), torch.arange(1, n, 2)
        g = self.gen(round_, "labels")
        u = torch.rand(len(a), generator=g)
        anchored = torch.zeros(len(a), dtype=torch.bool)
        if c.reward_model.mode == "self":
            with torch.inference_mode():
                s = state.reward_model(r.prompt_tokens, r.tokens)
            p_a = torch.sigmoid(s[a] - s[b])
        else:
            p_a = torch.sigmoid(preference_logit(c, r, a, b))
            if c.reward_model.mode == "anchored":
                anchored = torch.rand(len(a), generator=g) < c.reward_model.anchor_share
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
        frame = pl.DataFrame(
            {
                "prompt_tokens": r.prompt_tokens.to(torch.int16).numpy(),
                "response": r.tokens.to(torch.int16).numpy(),
                "answer": r.answer.numpy(),
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
        if r.first_wrong is None:
            return frame
        return frame.with_columns(  # the chain task: what the simulator knows of each chain
            first_wrong=pl.Series(r.first_wrong.to(torch.int16).numpy()),
            step_accuracy=pl.Series(r.step_accuracy.numpy()),
            concept_match=pl.Series(r.concept_match.bool().numpy()),
            disfavoured=pl.Series(r.disfavoured.bool().numpy()),
        )

    # 4. fit ------------------------------------------------------------------------------------
    def fit(self, state: LlmState, logs: LogStore, arm: str, round_: int) -> LlmState:
        c = self.cfg
        stats: dict[str, float] = {}
        curve = None
        if c.reward_model.refit or round_ == 0:
            window = c.reward_model.window or round_ + 1
            frame = logs.read(arm, max(0, round_ - window + 1), round_)
            fit = lambda: self._fit_reward_model(  # noqa: E731
                state, frame, self.gen(round_, "rm-fit"), self.gen(round_, "rm-split"), warm=round_ > 0
            )
            fitted, rows = self._first_fit(state, frame, fit) if round_ == 0 else fit()
            stats.update(fitted)
            curve = pl.DataFrame(rows).with_columns(pl.lit(round_, pl.Int64).alias("round"))
        if c.optimization.optimizer not in ("best_of_n", "none"):
            stats.update(self._optimize_policy(state, round_))
        return replace(state, train=stats, fit_curve=curve)

    def _first_fit(
        self, state: LlmState, frame: pl.DataFrame, fit: Callable[[], tuple[dict[str, float], list]]
    ) -> tuple[dict[str, float], list]:
        """Round 0's fit, shared by arms of one seed whose fit has the same inputs.

        The fit is a pure function of its pairs, the reward model's initial weights, its settings
        and the seed's ``rm-fit`` / ``rm-split`` streams, so its key is a digest of exactly those
        (and torch's thread count): arms that log the same base-policy pairs (an optimizer's arms
        against one reward model, open and closed loops) fit once per study, and the others read the
        fitted weights, the optimizer's state, the statistics and the curve. An arm whose labels,
        mitigations or model differ has another key and fits its own."""
        key = (
            "rm-first-fit",
            self.config.seed,
            content_digest(frame.filter(pl.col("pair") >= 0).select(fit_columns(frame))),
            content_digest(state.reward_model.state_dict()),
            self.cfg.reward_model,
            self.config.mitigations,
            self.cfg.task.max_elaboration,
            torch.get_num_threads(),
        )

        def compute() -> dict[str, Any]:
            stats, rows = fit()
            return copy.deepcopy(  # not the live tensors, which later rounds may change in place
                {
                    "reward_model": state.reward_model.state_dict(),
                    "rm_opt": state.rm_opt.state_dict(),
                    "stats": stats,
                    "rows": rows,
                }
            )

        shared = self.cache.get("rm-first-fit", key, compute)
        # Every arm, the one that computed it included, takes the shared copy's values.
        state.reward_model.load_state_dict(shared["reward_model"])
        state.reward_model.eval()
        state.rm_opt.load_state_dict(copy.deepcopy(shared["rm_opt"]))
        return dict(shared["stats"]), [dict(r) for r in shared["rows"]]

    def evolve(self, state: LlmState, batch: Batch, labels: Labels, round_: int) -> LlmState:
        return state  # the tasks do not change

    def tables(self, state: LlmState, round_: int) -> dict[str, pl.DataFrame]:
        tables = {"rm_budget": state.budget} if state.budget is not None else {}
        if state.fit_curve is not None:
            tables["rm_fit"] = state.fit_curve  # the round's fit, per epoch
        return tables

    @classmethod
    def tags(cls, config: Any) -> dict[str, str]:
        """MLflow tags: the mitigations on (critiques, reward-model budget), and the length bias."""
        mitigation, bias = describe(config)
        return {"mitigation": mitigation, "bias": bias}

    @classmethod
    def memory_bytes(cls, config: Any) -> int:
        """Lower bound: the prompt pool and a round's samples (tokens as int64), small models."""
        c = config.llm
        prompts = (c.task.n_prompts + c.task.n_eval_prompts) * make_format(c).prompt_tokens * 8
        samples = (
            (max(c.labeler.label_prompts, c.labeler.initial_prompts or 0) + c.optimization.batch_prompts)
            * c.optimization.group_size
            * 64
        )
        return prompts + samples + c.task.n_eval_prompts * c.evaluation.pass_k_samples * 64

    @classmethod
    def figures(cls, tables: dict[str, pl.DataFrame], out: Path) -> list[Path]:
        """None: the reward-model budget table is read in notebooks."""
        return []
