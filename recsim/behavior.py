"""What users do with a slate: examination by position and device, clicks, satisfaction.

Two click models share one examination curve theta(k, d) = (1 / k) ** eta_d (positions k = 1..K,
eta per device; theta(1, d) = 1, so relevance is P(click | examined at the top)):

- ``pbm``, the position-based model (Richardson et al. 2007; Joachims et al. 2017):
  P(click at k) = theta(k, d) * rel(u, i_k), each position independently.
- ``cascade`` (Craswell et al. 2008, with a device-dependent continuation): the user scans top-down,
  goes on from k-1 to k with probability theta(k, d) / theta(k-1, d), clicks an examined item with
  probability rel, and stops after the first click. An all-irrelevant slate is examined exactly as
  under ``pbm``; above a click, examination ends.

Satisfaction is observed only after a click: sat ~ Bernoulli(sat(u, i)) where clicked.
Everything is vectorized over users: no Python loop over users or positions.
Shapes: B users, K positions, V devices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def examination_curve(eta: torch.Tensor, slate_size: int) -> torch.Tensor:
    """theta(k, d) = (1 / k) ** eta_d. eta [V] -> [V, K]."""
    k = torch.arange(1, slate_size + 1, dtype=eta.dtype, device=eta.device)
    return k.reciprocal().unsqueeze(0) ** eta.unsqueeze(1)


@dataclass(frozen=True)
class Feedback:
    """What the platform observes, and the hidden truth beside it. All [B, K].

    Attributes:
        examination: true theta(k, d) of each impression (the position-bias propensity).
        click: observed clicks (bool).
        satisfaction: observed satisfaction (bool; False where there was no click).
        true_relevance: rel(u, i_k), the true P(click | examined).
        true_satisfaction: sat(u, i_k), the true P(satisfied | click).
    """

    examination: torch.Tensor
    click: torch.Tensor
    satisfaction: torch.Tensor
    true_relevance: torch.Tensor
    true_satisfaction: torch.Tensor


def simulate(
    model: str,
    theta: torch.Tensor,
    device: torch.Tensor,
    relevance: torch.Tensor,
    satisfaction: torch.Tensor,
    gen: torch.Generator,
) -> Feedback:
    """Sample clicks and satisfaction for B slates.

    Args:
        model: ``"pbm"`` or ``"cascade"``.
        theta: [V, K] examination curve per device.
        device: [B] long device index of each user.
        relevance: [B, K] true P(click | examined) of the shown items.
        satisfaction: [B, K] true P(satisfied | click) of the shown items.
        gen: generator of the round's behaviour stream.
    """
    exam = theta[device]  # [B, K]
    u = torch.rand((3, *relevance.shape), generator=gen, device=relevance.device, dtype=relevance.dtype)
    if model == "pbm":
        click = u[0] < exam * relevance
    elif model == "cascade":
        attractive = u[0] < relevance  # would click if examined
        cont = exam / torch.cat([exam[:, :1], exam[:, :-1]], dim=1)  # theta_k / theta_{k-1}, 1 at k=1
        reached = torch.cumprod((u[1] < cont).to(relevance.dtype), dim=1)
        no_click_above = torch.cumprod(
            torch.cat([torch.ones_like(relevance[:, :1]), 1 - attractive[:, :-1].to(relevance.dtype)], 1), 1
        )
        click = attractive & (reached * no_click_above).bool()
    else:
        raise ValueError(f"behavior model must be 'pbm' or 'cascade', got {model!r}")
    sat = click & (u[2] < satisfaction)
    return Feedback(exam, click, sat, relevance, satisfaction)


def click_probability(model: str, exam: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Exact marginal P(click at k) for each impression. exam, relevance [B, K] -> [B, K].

    pbm: theta_k rel_k. cascade: theta_k rel_k prod_{j<k} (1 - rel_j).
    """
    p = exam * relevance
    if model == "cascade":
        none_above = torch.cumprod(
            torch.cat([torch.ones_like(relevance[:, :1]), 1 - relevance[:, :-1]], 1), 1
        )
        p = p * none_above
    return p
