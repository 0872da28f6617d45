"""A learned reward model: a GRU over prompt + response tokens -> one scalar score, with an
adjustable test-time compute budget.

Budget (m passes, k judgments): the first pass reads the sequence with the GRU; each further pass
applies one weight-tied refinement block - the state attends over the token states, and an MLP
updates it residually (output layer zero at init, so extra passes start as the identity) - before
the score head. Trained at depths drawn from 1..m, the model can be run at any depth up to m
(recurrent-depth training). k > 1 judgments: each sees a random subset of the token states in its
passes; the k scores are averaged, or weighted by a learned meta-judge (a softmax over a score of
each judgment's final state). m = 1, k = 1 is exactly the ordinary reward model.

Checks (a ``checker``: prompts, responses -> [N, C] verdicts, 0 none, 1 wrong, 2 right): pass j
(j = 1..m) reads the verdict of check j, as a learned embedding added to the state (zero at init)
- the first pass after the GRU, each further one before its refinement block. A budget of m
passes checks m steps: where chains are longer than that, more passes see more of them, and the
score can use them only if it was trained at those depths.

Trained with the Bradley-Terry loss on preference pairs, -log sigmoid(r(y_w) - r(y_l)).
Shapes: N sequences, S = P + T tokens, H hidden, k judgments.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def _init(module: nn.Module, gen: torch.Generator) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p, generator=gen)
        else:
            nn.init.zeros_(p)


class RefinementBlock(nn.Module):
    """h <- h + MLP([h, attention(h, token states)]); one weight-tied reasoning pass."""

    def __init__(self, hidden: int, gen: torch.Generator) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden))
        _init(self, gen)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.mlp[2].weight)  # extra passes start as the identity

    def forward(
        self, h: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor | None
    ):
        """h [N, H]; keys, values [N, S, H] (projected once); visible [N, S] bool or None."""
        x = self.norm(h)
        logits = torch.einsum("nh,nsh->ns", self.query(x), keys) / math.sqrt(h.shape[1])
        if visible is not None:
            logits = logits.masked_fill(~visible, float("-inf"))
        context = torch.einsum("ns,nsh->nh", torch.softmax(logits, 1), values)
        return h + self.mlp(torch.cat([x, context], 1))


class RewardModel(nn.Module):
    """r(prompt, response). prompts [N, P], responses [N, T] -> [N]."""

    def __init__(
        self,
        prompt_vocab: int,
        vocab: int,
        hidden: int,
        gen: torch.Generator,
        passes: int = 1,
        votes: int = 1,
        vote_dropout: float = 0.25,
        meta_judge: bool = False,
        checker: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if passes < 1 or votes < 1 or (votes > 1 and passes == 1):
            raise ValueError(
                f"need passes >= 1, votes >= 1, and passes > 1 for votes > 1; got {passes}, {votes}"
            )
        self.offset = prompt_vocab  # response tokens follow the prompt vocabulary
        self.embed = nn.Embedding(prompt_vocab + vocab, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        _init(self, gen)  # the ordinary model's parameters, drawn first
        self.passes, self.votes, self.vote_dropout = passes, votes, vote_dropout
        self.block = RefinementBlock(hidden, gen) if passes > 1 else None
        self.meta = nn.Linear(hidden, 1) if meta_judge and votes > 1 else None
        if self.meta is not None:
            _init(self.meta, gen)
        self.checker = checker
        self.verdict = nn.Embedding(3, hidden) if checker is not None else None
        if self.verdict is not None:
            nn.init.zeros_(self.verdict.weight)  # the checks start unread
        # judgments drawn at scoring time come from this seed: the same call scores the same
        self.vote_seed = int(torch.randint(2**62, (1,), generator=gen)) if passes > 1 else 0

    def forward(
        self,
        prompts: torch.Tensor,
        responses: torch.Tensor,
        passes: int | None = None,
        votes: int | None = None,
        gen: torch.Generator | None = None,
    ) -> torch.Tensor:
        """prompts [N, P], responses [N, T] (EOS-padded) -> scores [N], at ``passes`` (<= the
        model's) and ``votes`` (default: the model's budget). ``gen`` draws the judgments' views
        (default: a generator seeded with ``vote_seed``)."""
        m = self.passes if passes is None else passes
        k = (self.votes if m > 1 else 1) if votes is None else votes
        if not 1 <= m <= self.passes or k < 1 or (k > 1 and m == 1):
            raise ValueError(f"budget (passes={m}, votes={k}) outside this model's (passes <= {self.passes})")
        seq = torch.cat([prompts, responses + self.offset], 1)  # [N, S]
        out, _ = self.gru(self.embed(seq))
        h = out[:, -1]  # [N, H], the state after the last token
        verdicts = self.checker(prompts, responses) if self.checker is not None else None  # [N, C]
        if verdicts is not None:
            h = h + self.verdict(verdicts[:, 0])  # pass 1 reads check 1
        if m == 1:
            return self.head(h).squeeze(-1)
        n, s, _ = out.shape
        visible = None
        if k > 1 or (self.training and self.vote_dropout > 0):
            if gen is None:
                gen = torch.Generator(device=out.device).manual_seed(self.vote_seed)
            visible = torch.rand(n * k, s, generator=gen, device=out.device) >= self.vote_dropout
            visible[:, -1] = True  # every judgment sees the end of the response
        if k > 1:
            out, h = out.repeat_interleave(k, 0), h.repeat_interleave(k, 0)
            verdicts = verdicts.repeat_interleave(k, 0) if verdicts is not None else None
        keys, values = self.block.key(out), self.block.value(out)
        for j in range(1, m):
            if verdicts is not None and j < verdicts.shape[1]:
                h = h + self.verdict(verdicts[:, j])  # pass j + 1 reads check j + 1
            h = self.block(h, keys, values, visible)
        scores = self.head(h).squeeze(-1)
        if k == 1:
            return scores
        scores = scores.view(n, k)
        if self.meta is None:
            return scores.mean(1)
        weights = torch.softmax(self.meta(h).view(n, k), 1)
        return (weights * scores).sum(1)


def bradley_terry_loss(winner: torch.Tensor, loser: torch.Tensor) -> torch.Tensor:
    """Mean -log sigmoid(r_w - r_l) (Bradley & Terry 1952; Christiano et al. 2017)."""
    return -nn.functional.logsigmoid(winner - loser).mean()
