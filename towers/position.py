"""Position-bias modules: the shallow (position x device) tower and gradient reversal.

Shallow tower (Zhao et al., RecSys 2019): the crossed feature (position, device) is embedded and
mapped to one scalar that is added to the click logit in training; the position feature is dropped
(replaced by "missing") with probability 10% in training and is missing at serving, so the served
score does not depend on position. Cell 0 is "missing"; cell 1 + d K + (k - 1) is position k on
device d.

Gradient reversal (Ganin & Lempitsky 2015): identity forward, gradient multiplied by -lambda
backward, so that a representation is trained to defeat an adversary (here, one that predicts the
position from the click representation; Zhang et al., KDD 2023).

Shapes: B examples, K positions, V devices.
"""

from __future__ import annotations

import torch
from torch import nn


def position_cells(position: torch.Tensor, device: torch.Tensor, slate_size: int) -> torch.Tensor:
    """1-based position [B] and device index [B] -> crossed cell index [B] (0 is reserved: missing)."""
    return 1 + device * slate_size + (position - 1)


class ShallowTower(nn.Module):
    """(position x device) embedding -> scalar bias. cells [B] long -> [B].

    The shallowest tower: a one-dimensional embedding of the crossed cell, i.e. one learned logit
    offset per (position, device) and one for "missing" (zero at init: no bias assumed).
    """

    def __init__(self, slate_size: int, n_devices: int, gen: torch.Generator) -> None:
        super().__init__()
        self.slate_size, self.n_devices = slate_size, n_devices
        self.embed = nn.Embedding(1 + slate_size * n_devices, 1)
        nn.init.zeros_(self.embed.weight)

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        """cells [B] -> bias logit [B]."""
        return self.embed(cells).squeeze(-1)

    def curve(self) -> torch.Tensor:
        """[V, K] the tower's output for every (device, position) cell."""
        dev = self.embed.weight.device
        k = torch.arange(1, self.slate_size + 1, device=dev).repeat(self.n_devices)
        d = torch.arange(self.n_devices, device=dev).repeat_interleave(self.slate_size)
        return self(position_cells(k, d, self.slate_size)).view(self.n_devices, self.slate_size)


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: ANN001
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; gradient times -scale backward."""
    return _Reverse.apply(x, scale)
