"""One minibatch of multi-task ranker training: the typed batch record and the loss module."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from recsim.mitigations.config import MitigationConfig
from recsim.mitigations.invariance import invariance_penalty


@dataclass(frozen=True)
class TrainBatch:
    """Training rows of the multi-task rankers, with their features as of serving time. All [M]
    unless noted.

    Attributes:
        users, devices, items, category: ids.
        history: [M, L] the user's recently clicked items (-1 = empty).
        dense: [M, 2] item age (scaled) and log1p of past exposure.
        cells: (position, device) cell ids of the position channel (0 = missing).
        positions: 1-based slate positions.
        clicks, satisfied: observed labels (float; satisfied is 0 where there was no click).
        ips_weights: inverse-propensity weights (``position="ips"``) or None.
        sample_weight: per-row click-loss weights (sign split, slate rubric) or None.
    """

    users: torch.Tensor
    devices: torch.Tensor
    history: torch.Tensor
    items: torch.Tensor
    category: torch.Tensor
    dense: torch.Tensor
    cells: torch.Tensor
    positions: torch.Tensor
    clicks: torch.Tensor
    satisfied: torch.Tensor
    ips_weights: torch.Tensor | None = None
    sample_weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.users)

    def take(self, idx: torch.Tensor) -> TrainBatch:
        """The rows ``idx`` of every column (None stays None); ``index_select``, the same values as
        ``t[idx]`` at a quarter of its time."""
        return TrainBatch(
            **{
                f.name: (None if (t := getattr(self, f.name)) is None else t.index_select(0, idx))
                for f in fields(self)
            }
        )


class BatchLoss(nn.Module):
    """The training loss of one minibatch, as a module (what DistributedModelParallel wraps).

    Inputs: a :class:`TrainBatch`, and under ``--distributed`` the number of clicked rows of the
    global batch divided by the number of ranks. Returns (loss, click loss).
    The invariance penalty and slate gate are computed on each rank's share of the batch.
    """

    def __init__(self, model: nn.Module, mitigations: MitigationConfig) -> None:
        super().__init__()
        self.model = model
        self.mit = mitigations

    def served_logit(
        self, logits: torch.Tensor, base: torch.Tensor, cells: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """[M] the learned relevance logit as served (``base``: the shared layer's user + item
        input): the click head f(x) without the position channel (shallow-tower modes and PAL serve
        f plus a constant, ``none``/``ips`` have no position input), or, for position as a
        feature, f(x, position 1 of the user's device), which serving uses.

        The invariance penalty holds this score's distribution equal across the positions the rows
        were shown at (Wang et al. 2025 constrain the learned reward, not the bias channel): a
        relevance estimate that still depends on where the log showed an item has absorbed the
        position bias the tower is there to take. Conditioned on the click
        (``invariance_conditional``), it keeps what the click explains. The served score has no
        position input, so the penalty acts only through which items the log showed where; on a
        ranker's own logs that is its earlier score, and the penalty removes relevance with it
        (measured in docs/mitigations.md)."""
        if self.model.spec.position != "feature":
            return logits[:, 0]
        top = cells - (positions - 1)  # the same device's position-1 cell (cells are 1-based)
        top = torch.where(cells > 0, top, cells)  # a missing cell stays missing
        return self.model(base + self.model.position_part(top))[0][:, 0]

    def forward(
        self, batch: TrainBatch, clicked_rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model, mit, b = self.model, self.mit, batch
        users, devices, history, items, category = b.users, b.devices, b.history, b.items, b.category
        dense, cells, positions, clicks, satisfied = b.dense, b.cells, b.positions, b.clicks, b.satisfied
        weights, sample_weight = b.ips_weights, b.sample_weight
        base = model.user_part(users, devices, history) + model.item_part(items, category, dense)
        pre = base + model.position_part(cells)
        logits, _, mixed = model(pre)
        click_loss, p_click = model.training_click(
            logits, mixed, cells, positions, clicks, weights, sample_weight
        )
        loss = click_loss
        if mit.invariance_weight > 0:
            labels = clicks if mit.invariance_conditional else None
            served = self.served_logit(logits, base, cells, positions)
            loss = loss + mit.invariance_weight * invariance_penalty(served, positions, labels)
        if mit.brier_weight > 0:  # a proper scoring term on the click probability
            loss = loss + mit.brier_weight * ((p_click - clicks) ** 2).mean()
        if model.spec.n_tasks > 1:
            # Satisfaction is observed only after a click: its loss covers clicked rows only.
            sat_bce = nn.functional.binary_cross_entropy_with_logits(
                logits[:, 1], satisfied, reduction="none"
            )
            # clicked_rows: the global batch's clicks per rank under --distributed, so that the
            # ranks' averaged gradients are those of the whole batch's mean.
            denominator = clicks.sum() if clicked_rows is None else clicked_rows
            loss = loss + (sat_bce * clicks).sum() / denominator.clamp_min(1)
        return loss, click_loss
