"""What users do with a slate: examination by position and device, clicks, satisfaction.

Click models are registered in :data:`CLICK_MODELS` (``behavior.model`` names one); a new one is
a class with ``clicks`` and ``click_probability`` and one registration line. The built-in two share
one examination curve theta(k, d) = (1 / k) ** eta_d (positions k = 1..K,
eta per device; theta(1, d) = 1, so relevance is P(click | examined at the top)):

- ``pbm``, the position-based model (Richardson et al. 2007; Joachims et al. 2017):
  P(click at k) = theta(k, d) * rel(u, i_k), each position independently.
- ``cascade`` (Craswell et al. 2008, with a device-dependent continuation): the user scans top-down,
  goes on from k-1 to k with probability theta(k, d) / theta(k-1, d), clicks an examined item with
  probability rel, and stops after the first click. An all-irrelevant slate is examined exactly as
  under ``pbm``; above a click, examination ends.
- ``logit`` (position as an additive offset to the click logit, the shallow tower's own
  assumption): P(click at k) = sigmoid(logit(rel_k) + log theta(k, d)); at the top it equals rel,
  as under ``pbm``.
- ``choice`` (one interaction per slate, as the users of Chaney et al. 2018 and T-RECS, who weigh
  true utility by attention to the rank and pick one item): P(choose k) = theta(k, d) rel_k /
  sum_j theta(j, d) rel_j. Every slate yields exactly one click, so ``gold`` is 1 by construction
  and the histories of all recommenders grow at the same rate.

Satisfaction is observed only after a click: sat ~ Bernoulli(sat(u, i)) where clicked.
Everything is vectorized over users: no Python loop over users or positions.
Shapes: B users, K positions, V devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from recsim.core.registry import Registry


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


class ClickModel(Protocol):
    """How a user who examines positions with probability theta clicks. Shapes [B, K]."""

    def clicks(self, exam: torch.Tensor, relevance: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Sampled clicks (bool [B, K]) from uniforms ``u`` [2, B, K] (the round's behaviour draws)."""
        ...

    def click_probability(self, exam: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """Exact marginal P(click at k) [B, K] of each impression (what gold and regret measure)."""
        ...


#: behavior.model -> click model.
CLICK_MODELS: Registry[ClickModel] = Registry("click model")


@dataclass(frozen=True)
class PositionBased:
    """``pbm``: P(click at k) = theta_k rel_k, each position independently (Richardson et al. 2007)."""

    def clicks(self, exam: torch.Tensor, relevance: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u[0] < exam * relevance

    def click_probability(self, exam: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        return exam * relevance


@dataclass(frozen=True)
class Cascade:
    """``cascade``: top-down scan, continuing from k-1 to k w.p. theta_k / theta_{k-1}, stopping
    after the first click (Craswell et al. 2008). P(click at k) = theta_k rel_k prod_{j<k} (1 - rel_j)."""

    def clicks(self, exam: torch.Tensor, relevance: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        attractive = u[0] < relevance  # would click if examined
        cont = exam / torch.cat([exam[:, :1], exam[:, :-1]], dim=1)  # theta_k / theta_{k-1}, 1 at k=1
        reached = torch.cumprod((u[1] < cont).to(relevance.dtype), dim=1)
        no_click_above = torch.cumprod(
            torch.cat([torch.ones_like(relevance[:, :1]), 1 - attractive[:, :-1].to(relevance.dtype)], 1), 1
        )
        return attractive & (reached * no_click_above).bool()

    def click_probability(self, exam: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        p = exam * relevance
        none_above = torch.cumprod(
            torch.cat([torch.ones_like(relevance[:, :1]), 1 - relevance[:, :-1]], 1), 1
        )
        return p * none_above


@dataclass(frozen=True)
class LogitOffset:
    """``logit``: P(click at k) = sigmoid(logit(rel_k) + log theta_k), each position independently:
    the position effect is an additive logit offset, as a shallow tower models it."""

    def clicks(self, exam: torch.Tensor, relevance: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u[0] < self.click_probability(exam, relevance)

    def click_probability(self, exam: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.logit(relevance, eps=1e-6) + exam.log())


@dataclass(frozen=True)
class Choice:
    """``choice``: exactly one item per slate, P(k) = theta_k rel_k / sum_j theta_j rel_j (a
    multinomial choice weighing relevance by attention to the rank; Chaney et al. 2018)."""

    def clicks(self, exam: torch.Tensor, relevance: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p = self.click_probability(exam, relevance)
        pick = (p.cumsum(1) < u[0, :, :1]).sum(1).clamp(max=p.shape[1] - 1)  # [B] inverse CDF
        return torch.nn.functional.one_hot(pick, p.shape[1]).bool()

    def click_probability(self, exam: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        w = exam * relevance
        return w / w.sum(1, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny)


CLICK_MODELS.register("pbm", PositionBased())
CLICK_MODELS.register("cascade", Cascade())
CLICK_MODELS.register("logit", LogitOffset())
CLICK_MODELS.register("choice", Choice())


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
        model: a registered click model (``"pbm"``, ``"cascade"``).
        theta: [V, K] examination curve per device.
        device: [B] long device index of each user.
        relevance: [B, K] true P(click | examined) of the shown items.
        satisfaction: [B, K] true P(satisfied | click) of the shown items.
        gen: generator of the round's behaviour stream.
    """
    exam = theta[device]  # [B, K]
    u = torch.rand((3, *relevance.shape), generator=gen, device=relevance.device, dtype=relevance.dtype)
    click = CLICK_MODELS.get(model).clicks(exam, relevance, u[:2])
    sat = click & (u[2] < satisfaction)
    return Feedback(exam, click, sat, relevance, satisfaction)


def click_probability(model: str, exam: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Exact marginal P(click at k) for each impression under ``model``. exam, relevance [B, K] -> [B, K]."""
    return CLICK_MODELS.get(model).click_probability(exam, relevance)
