"""Logistic matrix factorization: the simplest trainable click model.

    logit(u, i) = <p_u, q_i> + b_i + b_0,     P(click) = sigmoid(logit)

Trained with binary cross-entropy on logged impressions. It has no notion of position: trained on
position-biased clicks it learns P(click | shown where it was shown), the naive estimate.
"""

from __future__ import annotations

import torch
from torch import nn


class LogisticMF(nn.Module):
    """Shapes: users [B] long, items [B, C] long -> logits [B, C]."""

    def __init__(
        self, n_users: int, n_items: int, dim: int, gen: torch.Generator, sparse: bool = False
    ) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim, sparse=sparse)
        self.item = nn.Embedding(n_items, dim, sparse=sparse)
        self.item_bias = nn.Embedding(n_items, 1, sparse=sparse)
        self.bias = nn.Parameter(torch.zeros(1))
        nn.init.normal_(self.user.weight, std=0.1, generator=gen)
        nn.init.normal_(self.item.weight, std=0.1, generator=gen)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users [B], items [B, C] -> logits [B, C]. Where ``items`` is one row expanded over B
        (stride 0: every user scores the same items), one [B, D] x [D, C] product instead of the
        [B, C, D] gather (equal up to float rounding)."""
        p = self.user(users)  # [B, D]
        if items.dim() == 2 and items.shape[0] > 1 and items.stride(0) == 0:
            row = items[0]
            return p @ self.item(row).T + self.item_bias(row).squeeze(-1) + self.bias
        q = self.item(items)  # [B, C, D]
        return torch.einsum("bd,bcd->bc", p, q) + self.item_bias(items).squeeze(-1) + self.bias

    @torch.no_grad()
    def bce_backward(
        self, users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor, with_loss: bool = True
    ) -> torch.Tensor | None:
        """Mean binary cross-entropy of ``forward(users, items)`` ([B], [B, 1]) against ``labels``
        [B, 1] (None without ``with_loss``: the gradient does not need it), with its gradient added
        into every parameter's ``.grad`` (zeros where it is None).

        The gradient in closed form, d loss / d logit = (sigmoid(logit) - y) / B, scattered to the
        rows the batch touched: the same operations autograd runs for this model, in the same
        order, so the same numbers (``tests/test_speed.py`` checks it), without building the graph.
        """
        # module attribute lookups cost a microsecond each: once per call
        user, item, item_bias, bias = self.user.weight, self.item.weight, self.item_bias.weight, self.bias
        if bias.grad is None:  # after zero_grad(set_to_none=True): every grad is None
            for param in (user, item, item_bias, bias):
                param.grad = torch.zeros_like(param)
        idx = items.squeeze(1)
        p, q = user.index_select(0, users), item.index_select(0, idx)
        dot = torch.bmm(p.unsqueeze(1), q.unsqueeze(2)).squeeze(2)  # what forward's einsum runs
        logits = dot + item_bias.index_select(0, idx) + bias
        g = (torch.sigmoid(logits) - labels) / labels.numel()
        user.grad.index_add_(0, users, g * q)
        item.grad.index_add_(0, idx, g * p)
        item_bias.grad.index_add_(0, idx, g)
        bias.grad.add_(g.sum().reshape(1))
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels) if with_loss else None

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """users [B] -> [B, D + 1] queries [p_u, 1] for inner-product search."""
        p = self.user.weight[users]
        return torch.cat([p, torch.ones(len(users), 1, dtype=p.dtype, device=p.device)], dim=1)

    def item_vectors(self, n_items: int) -> torch.Tensor:
        """[N, D + 1] keys [q_i, b_i] of the first ``n_items`` items: <query, key> = logit - b_0."""
        return torch.cat([self.item.weight[:n_items], self.item_bias.weight[:n_items]], dim=1)
