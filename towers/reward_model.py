"""A learned reward model: a GRU over prompt + response tokens -> one scalar score.

Trained with the Bradley-Terry loss on preference pairs, -log sigmoid(r(y_w) - r(y_l)).
Shapes: N sequences, P prompt tokens, T response tokens, H hidden.
"""

from __future__ import annotations

import torch
from torch import nn


class RewardModel(nn.Module):
    """r(prompt, response). prompts [N, P], responses [N, T] -> [N]."""

    def __init__(self, prompt_vocab: int, vocab: int, hidden: int, gen: torch.Generator) -> None:
        super().__init__()
        self.offset = prompt_vocab  # response tokens follow the prompt vocabulary
        self.embed = nn.Embedding(prompt_vocab + vocab, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p, generator=gen)
            else:
                nn.init.zeros_(p)

    def forward(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """prompts [N, P], responses [N, T] (EOS-padded) -> scores [N]."""
        seq = torch.cat([prompts, responses + self.offset], 1)  # [N, P + T]
        out, _ = self.gru(self.embed(seq))
        return self.head(out[:, -1]).squeeze(-1)


def bradley_terry_loss(winner: torch.Tensor, loser: torch.Tensor) -> torch.Tensor:
    """Mean -log sigmoid(r_w - r_l) (Bradley & Terry 1952; Christiano et al. 2017)."""
    return -nn.functional.logsigmoid(winner - loser).mean()
