"""The reward model: scores, accuracy against gold pairs, and its refit on the policy's own pairs."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from recsim.core.batches import minibatches
from recsim.llm.feedback import Rollouts
from recsim.llm.state import DomainParts, LlmState
from recsim.mitigations.invariance import invariance_penalty
from towers.reward_model import RewardModel, bradley_terry_loss

#: The log columns a fit reads (with the chain task's ``concept_match`` and ``disfavoured``).
FIT_COLUMNS = ("round", "pair", "won", "prompt_tokens", "response", "length", "answer", "hint")


def fit_columns(frame: pl.DataFrame) -> list[str]:
    """The columns of ``frame`` that a reward-model fit reads: its inputs, all of them."""
    return [*FIT_COLUMNS, *(c for c in ("concept_match", "disfavoured") if c in frame.columns)]


class RewardFit(DomainParts):
    """Reward-model fitting and scoring, a concern of :class:`recsim.llm.domain.LlmDomain`."""

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

    def _fit_reward_model(
        self,
        state: LlmState,
        frame: pl.DataFrame,
        gen: torch.Generator,
        split: torch.Generator,
        warm: bool = False,
    ) -> tuple[dict[str, float], list[dict[str, float]]]:
        """Fit the reward model on the logged pairs of ``frame`` (Bradley-Terry, plus the invariance
        penalty where it is on) until a held-out share of the pairs stops improving.

        ``heldout_share`` of the pairs (a permutation from ``split``) are held out; each epoch
        passes once over the rest in minibatches of ``batch_size`` (order and recurrent depth from
        ``gen``), then scores the held-out pairs at the model's own budget. The fit ends after
        ``epochs`` epochs, or once ``patience`` epochs (``refit_patience`` for a ``warm`` fit, one
        that starts from an earlier fit's weights) have not lowered the held-out loss by more
        than 1e-4, and returns to the weights of the epoch with the lowest one (early stopping, as
        the world fit); without a split it keeps the last epoch. Returns the fit's statistics
        (``rm_loss``: the best epoch's training loss; ``rm_heldout_loss`` and
        ``rm_heldout_accuracy`` against the labels, of the returned weights; ``rm_epochs``:
        epochs trained; ``rm_best_epoch``; ``rm_steps``: Adam steps) and its curve, one row per
        epoch (``train_loss``, ``train_accuracy``, ``heldout_loss``, ``heldout_accuracy``,
        ``best``)."""
        pairs = (
            frame.filter(pl.col("pair") >= 0)
            .select(fit_columns(frame))
            .sort("round", "pair", pl.col("won"), descending=[False, False, True])
        )
        t = lambda col: torch.from_numpy(np.stack(pairs[col].to_numpy())).long()  # noqa: E731
        prompts, responses = t("prompt_tokens"), t("response")
        win, lose = torch.arange(0, len(pairs), 2), torch.arange(1, len(pairs), 2)  # winner first per pair
        lengths = torch.from_numpy(pairs["length"].to_numpy().astype("int64"))
        agree = torch.from_numpy((pairs["answer"] == pairs["hint"]).to_numpy().astype("int64"))
        extra = [  # the chain task's concept and user attribute
            torch.from_numpy(pairs[col].to_numpy().astype("int64"))
            for col in ("concept_match", "disfavoured")
            if col in pairs.columns
        ]
        rc, mit = self.cfg.reward_model, self.config.mitigations
        n_held = int(len(win) * rc.heldout_share)
        if n_held:
            order = torch.randperm(len(win), generator=split)
            held, train = order[:n_held], order[n_held:]
        else:  # every pair trains, in its logged order
            held, train = torch.arange(0), torch.arange(len(win))
        rm, opt = state.reward_model, state.rm_opt

        def heldout() -> tuple[float, float]:
            """Bradley-Terry loss and accuracy of the held-out pairs at the model's own budget."""
            with torch.inference_mode():
                sw = rm(prompts[win[held]], responses[win[held]])
                sl = rm(prompts[lose[held]], responses[lose[held]])
            return float(bradley_terry_loss(sw, sl)), float((sw > sl).float().mean())

        best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        curve: list[dict[str, float]] = []
        steps = 0
        for epoch in range(rc.epochs):
            rm.train()
            total, right, count = 0.0, 0.0, 0
            for b in minibatches(len(train), rc.batch_size, gen):
                b = train[b]
                # recurrent-depth training: each minibatch at a depth drawn from 1..rm_passes
                m = int(torch.randint(1, rc.passes + 1, (1,), generator=gen)) if rm.passes > 1 else 1
                rw = rm(prompts[win[b]], responses[win[b]], passes=m, gen=gen)
                rl = rm(prompts[lose[b]], responses[lose[b]], passes=m, gen=gen)
                loss = bradley_terry_loss(rw, rl)
                if mit.invariance_weight > 0:
                    loss = loss + mit.invariance_weight * self._invariance(
                        rw,
                        rl,
                        lengths[win[b]],
                        lengths[lose[b]],
                        agree[win[b]],
                        agree[lose[b]],
                        [(v[win[b]], v[lose[b]]) for v in extra],
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                total += float(loss.detach()) * len(b)
                right += float((rw > rl).float().sum())
                count += len(b)
            rm.eval()
            row = {
                "epoch": epoch,
                "train_loss": total / max(count, 1),
                "train_accuracy": right / max(count, 1),
            }
            if n_held:
                row["heldout_loss"], row["heldout_accuracy"] = heldout()
            curve.append(row)
            score = row.get("heldout_loss", -epoch)  # no split: the last epoch is the best
            if best is None or score < best[0] - 1e-4:
                best = (score, epoch, {k: v.detach().clone() for k, v in rm.state_dict().items()})
            elif epoch - best[1] >= (rc.refit_patience if warm else rc.patience):
                break
        assert best is not None
        rm.load_state_dict(best[2])
        rm.eval()
        chosen = curve[best[1]]
        stats = {
            "rm_loss": chosen["train_loss"],
            "rm_epochs": float(len(curve)),
            "rm_best_epoch": float(best[1]),
            "rm_steps": float(steps),
        }
        if n_held:  # the restored model's, which are the best epoch's
            stats["rm_heldout_loss"], stats["rm_heldout_accuracy"] = heldout()
        return stats, [{**r, "best": r["epoch"] == best[1]} for r in curve]

    def _invariance(self, rw, rl, len_w, len_l, agree_w, agree_l, extra=()) -> torch.Tensor:  # noqa: ANN001
        """MMD invariance of reward scores across length buckets and hint agreement (and, on the
        chain task, ``extra`` (winner, loser) variables: concept match, the user's attribute);
        conditional: within winners and within losers."""
        mit = self.config.mitigations
        scores = torch.cat([rw, rl])
        lengths = torch.cat([len_w, len_l])
        buckets = (lengths * mit.invariance_bins // (self.cfg.task.max_elaboration + 1)).clamp(
            max=mit.invariance_bins - 1
        )
        labels = (
            torch.cat([torch.ones_like(len_w), torch.zeros_like(len_l)])
            if mit.invariance_conditional
            else None
        )
        penalty = invariance_penalty(scores, buckets, labels) + invariance_penalty(
            scores, torch.cat([agree_w, agree_l]), labels
        )
        for w, lo in extra:
            penalty = penalty + invariance_penalty(scores, torch.cat([w, lo]), labels)
        return penalty
