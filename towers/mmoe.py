"""Multi-task networks: MMoE, one-gate MoE and shared-bottom, over a shared hidden layer.

MMoE (Ma et al., KDD 2018; as used in Zhao et al., RecSys 2019, "Recommending What Video to Watch
Next"): on top of one shared hidden layer h, E expert MLPs f_i, one softmax gate per task,

    g_t(h) = softmax(W_t h)                 [E]
    y_t    = tower_t( sum_i g_t,i(h) f_i(h) )

Gate dropout (Zhao et al.): in training each expert's gate weight is zeroed with probability p,
then the weights are renormalized (a row whose experts are all dropped keeps its full gate).
``omoe`` shares one gate across tasks; ``shared_bottom`` replaces experts and gates by one MLP whose
width is chosen so that its parameter count matches the MMoE's experts and gates.

Experts are computed as one matrix product ([B, H] x [H, E*X]) and towers as batched products.

Shapes: B examples, H shared hidden units, E experts, X expert width, T tasks, Y tower width.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Arch = Literal["mmoe", "omoe", "shared_bottom"]


def _init_linear(weight: torch.Tensor, bias: torch.Tensor | None, gen: torch.Generator) -> None:
    """Kaiming-uniform weights (fan-in) and zero bias, drawn from ``gen``."""
    fan_in = weight.shape[-2] if weight.dim() == 3 else weight.shape[1]
    bound = (6.0 / fan_in) ** 0.5 / 2**0.5
    nn.init.uniform_(weight, -bound, bound, generator=gen)
    if bias is not None:
        nn.init.zeros_(bias)


def shared_bottom_width(hidden: int, n_experts: int, expert_dim: int, n_tasks: int, tower_dim: int) -> int:
    """Width S of a shared-bottom layer with as many parameters as E experts of width X plus T gates.

    MMoE: E X (H + 1) + T E (H + 1) + T (X Y + Y);  shared-bottom: S (H + 1) + T (S Y + Y).
    """
    mmoe = (
        n_experts * expert_dim * (hidden + 1)
        + n_tasks * n_experts * (hidden + 1)
        + n_tasks * expert_dim * tower_dim
    )
    return max(1, round(mmoe / (hidden + 1 + n_tasks * tower_dim)))


class MultiTaskNet(nn.Module):
    """Experts, gates and task towers on top of a shared hidden layer.

    ``forward(pre)`` takes the pre-activation of the shared hidden layer (the caller's first linear
    layer, so that user-side and item-side parts can be computed once and broadcast; with
    ``hidden_activation=False`` the experts read ``pre`` as is, as in Ma et al.'s setup) and returns
    (task logits [B, T], gate weights [B, T, E] or None, the towers' inputs [B, T, X]).
    """

    def __init__(
        self,
        hidden: int,
        n_tasks: int,
        gen: torch.Generator,
        arch: Arch = "mmoe",
        n_experts: int = 8,
        expert_dim: int = 32,
        tower_dim: int = 16,
        gate_dropout: float = 0.0,
        hidden_activation: bool = True,
        bottom_width: int | None = None,
        train_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.hidden_activation = hidden_activation
        self.train_dtype = train_dtype  # bfloat16: the first layer's products in training (see forward)
        self.arch, self.n_tasks, self.gate_dropout = arch, n_tasks, gate_dropout
        self.rng: torch.Generator | None = None  # set by the trainer; needed for gate dropout
        if arch == "shared_bottom":
            self.n_experts = 1
            matched = shared_bottom_width(hidden, n_experts, expert_dim, n_tasks, tower_dim)
            self.expert_dim = bottom_width or matched
        else:
            self.n_experts, self.expert_dim = n_experts, expert_dim
        e, x = self.n_experts, self.expert_dim
        self.n_gates = {"mmoe": n_tasks, "omoe": 1, "shared_bottom": 0}[arch]
        # Every expert's layer and every gate side by side: one [H, E*X + G*E] product per batch.
        self.in_w = nn.Parameter(torch.empty(hidden, e * x + self.n_gates * e))
        self.in_b = nn.Parameter(torch.zeros(e * x + self.n_gates * e))
        _init_linear(self.in_w[:, : e * x].T, None, gen)
        nn.init.normal_(self.in_w[:, e * x :], std=0.01, generator=gen)
        self.tower_w1 = nn.Parameter(torch.empty(n_tasks, x, tower_dim))
        self.tower_b1 = nn.Parameter(torch.zeros(n_tasks, 1, tower_dim))
        self.tower_w2 = nn.Parameter(torch.empty(n_tasks, tower_dim, 1))
        self.tower_b2 = nn.Parameter(torch.zeros(n_tasks, 1, 1))
        _init_linear(self.tower_w1, None, gen)
        _init_linear(self.tower_w2, None, gen)

    def gates(self, logits: torch.Tensor) -> torch.Tensor:
        """Gate logits [B, G*E] -> softmax weights [B, T, E] (after gate dropout in training).

        The softmax is written out, exp(l - max l) / sum with the max held constant (softmax does
        not depend on it), one vectorized pass over all rows: ``torch.softmax`` over a last dim of
        E (8) is slow on the CPU (forward 0.61 ms for 4,096 x 2 groups here, against 0.12 ms; the
        backward passes cost about the same). Equal to it up to float rounding (1 ulp). Computed
        and returned in float32 whatever the input's type (bfloat16 serving too).
        """
        b = logits.shape[0]
        wide = logits.view(b, -1, self.n_experts).float()
        shifted = wide - wide.detach().amax(-1, keepdim=True)
        if torch.is_grad_enabled():
            exp = shifted.exp()
            weights = exp / exp.sum(-1, keepdim=True)
        else:  # a new tensor: ours to overwrite
            exp = shifted.exp_()
            weights = exp.div_(exp.sum(-1, keepdim=True))
        weights = weights.expand(b, self.n_tasks, self.n_experts)
        if self.training and self.gate_dropout > 0:
            if self.rng is None:
                raise RuntimeError("gate dropout in training needs a generator: set MultiTaskNet.rng")
            keep = torch.rand(weights.shape, generator=self.rng, device=logits.device) >= self.gate_dropout
            kept = weights * keep
            total = kept.sum(-1, keepdim=True)
            weights = torch.where(total > 0, kept / total.clamp_min(1e-12), weights)
        return weights

    def forward(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """pre [B, H] -> (logits [B, T], gates [B, T, E] | None, tower inputs [B, T, X]).

        With ``train_dtype`` (bfloat16) and in training mode, the experts' and the gates' products
        run in that type, forward and backward: ``h`` and the weights rounded to it, the products
        accumulated in float32 and rounded to it, then widened to float32 (what ``torch.autocast``
        does to a linear layer). The weights, their gradients, the optimizer and every other op stay
        float32. In eval mode the products are float32 whatever ``train_dtype``."""
        h = torch.relu(pre) if self.hidden_activation else pre  # the shared hidden layer (or raw input)
        b = h.shape[0]
        ex = self.n_experts * self.expert_dim
        # The experts' and the gates' columns as two products: with gradients, slices of one
        # [B, E*X + G*E] product would each get a zero-filled full-width gradient buffer in backward.
        weight, bias = self.in_w, self.in_b
        if self.training and self.train_dtype is not None:  # the two products in train_dtype
            h, weight, bias = h.to(self.train_dtype), weight.to(self.train_dtype), bias.to(self.train_dtype)
        out = torch.addmm(bias[:ex], h, weight[:, :ex]).float()  # [B, E*X] (float(): no-op in float32)
        # without gradients the product is ours to overwrite (the same values, one pass less)
        relu = torch.relu if torch.is_grad_enabled() else torch.relu_
        experts = relu(out).view(b, self.n_experts, self.expert_dim)  # [B, E, X]
        if self.arch == "shared_bottom":
            gates = None
            mixed = experts.expand(b, self.n_tasks, self.expert_dim)  # [B, T, X]
        else:  # gates() computes in float32
            gates = self.gates(torch.addmm(bias[ex:], h, weight[:, ex:]))  # [B, T, E]
            mixed = torch.bmm(gates, experts)  # [B, T, X]
        return self._towers(mixed, relu), gates, mixed

    def _towers(self, mixed: torch.Tensor, relu) -> torch.Tensor:  # noqa: ANN001
        """Tower inputs [B, T, X] -> task logits [B, T]."""
        z = relu(torch.baddbmm(self.tower_b1, mixed.transpose(0, 1), self.tower_w1))  # [T, B, Y]
        return torch.baddbmm(self.tower_b2, z, self.tower_w2).squeeze(-1).T  # [B, T]

    def serving_weights(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
        """The first layer split into its experts' and its gates' columns, each contiguous and cast
        to ``dtype`` (bfloat16 serving): (expert weight [H, E*X], expert bias, gate weight
        [H, G*E], gate bias), for :meth:`serve`. Taken once per scoring call, not once per chunk."""
        ex = self.n_experts * self.expert_dim
        parts = (self.in_w[:, :ex], self.in_b[:ex], self.in_w[:, ex:], self.in_b[ex:])
        return tuple(p.detach().to(dtype or p.dtype).contiguous() for p in parts)

    def serve(self, pre: torch.Tensor, weights: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Task logits [B, T] of ``forward(pre)`` without gradients, for scoring; ``pre`` (float32)
        is overwritten (the hidden layer's ReLU runs in place).

        The same two products as ``forward`` (the experts' and the gates' columns of the first
        layer), from contiguous copies of the weights (``weights`` from :meth:`serving_weights`),
        with every ReLU in place.

        - float32 weights: each output column sums the same products in the same order, so the
          values are forward's, bit for bit (``tests/test_speed.py`` checks it).
        - bfloat16 weights: only the two products run in bfloat16 (``h`` cast once; on CPUs with
          AMX the [B, 128] x [128, 256] product is 6x faster than in float32). Their outputs are
          widened to float32, and the ReLU, the softmax, the mixing and the towers run in float32:
          in bfloat16 they would be slower here (a batched product of 2 x 8 by 8 x 32 matrices takes
          twice as long) and less exact.
        """
        w_e, b_e, w_g, b_g = weights
        h = pre.relu_() if self.hidden_activation else pre
        b = h.shape[0]
        h = h.to(w_e.dtype)  # a no-op in float32
        experts = torch.addmm(b_e, h, w_e).float().relu_().view(b, self.n_experts, self.expert_dim)
        if self.arch == "shared_bottom":
            mixed = experts.expand(b, self.n_tasks, self.expert_dim)
        else:  # gates() computes in float32
            mixed = torch.bmm(self.gates(torch.addmm(b_g, h, w_g)), experts)
        return self._towers(mixed, torch.relu_)

    def macs_per_example(self, hidden: int) -> int:
        """Multiply-accumulates of one forward pass from the layer shapes (shared layer excluded)."""
        e, x, t = self.n_experts, self.expert_dim, self.n_tasks
        y = self.tower_w1.shape[-1]
        gates = hidden * self.n_gates * e
        mix = 0 if self.arch == "shared_bottom" else t * e * x
        return hidden * e * x + gates + mix + t * (x * y + y)
