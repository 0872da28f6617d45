"""The recommender domain's round metrics, as a registry: one entry per group of columns.

Each entry is ``fn(view, row) -> {name: value}``: ``view`` (a :class:`RoundView`) holds the round's
slates, feedback and the fitted learner, and computes shared intermediates once (the panel's
scores); ``row`` holds the columns of the entries before it (``gap`` reads ``proxy`` and
``gold``). Columns of ``metrics.parquet`` follow the registration order. The formulas and papers
of the metric functions are in :mod:`recsim.core.metrics`; a new metric is one function and one
``@METRICS.register``-style line (see EXTENDING.md).
Shapes: B users of the round, K slate size, P panel users, N_r items the panel scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch

from recsim.core import metrics
from recsim.core.errors import check_finite
from recsim.core.registry import Registry
from recsim.core.rng import generator
from recsim.recsys import behavior
from recsim.recsys.behavior import Feedback
from recsim.recsys.policy import Slates

if TYPE_CHECKING:
    from recsim.recsys.domain import RecsysDomain, RecsysState


@dataclass(frozen=True)
class RoundView:
    """One round as the metrics see it (after the learner's fit)."""

    domain: RecsysDomain
    state: RecsysState
    slates: Slates
    fb: Feedback
    round_: int

    @property
    def k(self) -> int:
        return self.domain.config.policy.slate_size

    def expected_clicks(self, relevance: torch.Tensor) -> torch.Tensor:
        """[B] expected clicks per slate if the shown items had ``relevance`` [B, K]."""
        model = self.domain.config.behavior.model
        return behavior.click_probability(model, self.fb.examination, relevance).sum(1)

    @cached_property
    def panel_items(self) -> torch.Tensor:
        """[P, N_r] the items the panel scores: every available item, or the fixed sample."""
        dom = self.domain
        n_avail = self.state.world.n_available(self.round_)
        pool = torch.arange(n_avail, device=dom.device) if dom.panel_items is None else dom.panel_items
        return pool.expand(len(dom.panel), len(pool))

    @cached_property
    def consumed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The panel's interactions so far, this round's included, as sorted distinct keys
        ``panel index * N_total + item`` (CPU): (under this learner, under the ideal recommender).

        A click is an interaction. The ideal recommender (Chaney et al. 2018) shows each panel
        user active this round the top-K of the items the panel scores by true relevance; its
        clicks are drawn from the same click model (stream ``ideal-panel``), so the two histories
        differ only by what was recommended. During the start-up rounds (random slates for every
        learner) the ideal history is the learner's own, as in the paper's start-up period."""
        dom, slates = self.domain, self.slates
        n_total = self.state.world.n_items_total
        where = dom.panel_index[slates.users]  # [B] panel index or -1
        rows = torch.nonzero(where >= 0).squeeze(1)
        clicked = self.fb.click[rows]  # [b, K]
        p = where[rows].unsqueeze(1).expand_as(clicked)
        mine = (p * n_total + slates.items[rows])[clicked].cpu()
        active = where[rows].cpu()
        before = self.state.consumed or (torch.empty(0, dtype=torch.long),) * 2
        if self.round_ < dom.config.policy.startup_rounds:
            ideal = mine  # the start-up rounds' random slates are shared: the histories part after
        else:
            truth = self.panel_truth[active]  # [b, N_r]
            items = self.panel_items.cpu()[active]
            if not dom.config.policy.repeat_consumption:  # the ideal too shows no item clicked before
                seen = torch.isin(active.unsqueeze(1) * n_total + items, before[1])
                truth = truth.masked_fill(seen, float("-inf"))
            picked = truth.topk(self.k, dim=1).indices  # [b, K] of the items the panel scores
            ideal_items = items.gather(1, picked)
            relevance = self.panel_truth[active].gather(1, picked)
            device = self.state.world.user_device[dom.panel][active.to(dom.device)]
            fb = behavior.simulate(
                dom.config.behavior.model,
                dom.theta.cpu(),
                device.cpu(),
                relevance,
                torch.zeros_like(relevance),
                generator(dom.config.seed, self.round_, "ideal-panel"),  # CPU: the metrics' device
            )
            ideal = (active.unsqueeze(1) * n_total + ideal_items)[fb.click]
        return (
            torch.unique(torch.cat([before[0], mine])),
            torch.unique(torch.cat([before[1], ideal])),
        )

    @cached_property
    def panel_truth(self) -> torch.Tensor:
        """[P, N_r] the true relevance of the items the panel scores (CPU)."""
        return self.state.world.relevance(self.domain.panel, self.panel_items).cpu()

    @cached_property
    def panel_value(self) -> torch.Tensor:
        """[P, N_r] the true value of the objective the learner serves, per panel pair (CPU):
        w_c rel + w_s rel sat, with (w_c, w_s) the learner's ``objective`` (its serving score
        w_c P(click) + w_s P(click) P(satisfied) with the truth in place of its predictions), and
        (1, 0) for a learner that serves click relevance alone (MF, popularity, the oracle)."""
        w_click, w_sat = getattr(self.state.ranker, "objective", (1.0, 0.0))
        if w_sat == 0:
            return self.panel_truth
        sat = self.state.world.satisfaction(self.domain.panel, self.panel_items).cpu()
        return self.panel_truth * (w_click + w_sat * sat)

    @cached_property
    def panel_scores(self) -> torch.Tensor:
        """[P, N_r] the learner's scores for the panel after this round's fit (served next round)."""
        dom, world = self.domain, self.state.world
        scores = self.state.ranker.score(world, dom.panel, self.panel_items, self.round_ + 1).float().cpu()
        check_finite("panel scores", scores)
        return scores


#: metric group -> fn(view, row) -> columns. The order of registration is the column order.
METRICS: Registry[Any] = Registry("metric")


@METRICS("served")
def served(v: RoundView) -> dict[str, float]:
    """gold, gold_satisfaction, proxy, clicks, regret: expected clicks per slate of the served
    slates under the click model, by the truth and by the learner's own belief."""
    world, slates, fb = v.state.world, v.slates, v.fb
    p_click = v.expected_clicks(fb.true_relevance)
    # Oracle slates from the same candidates: true relevance, sorted (theta decreasing in k).
    best = world.relevance(slates.users, slates.candidates).topk(v.k, dim=1).values
    model = v.domain.config.behavior.model
    return {
        "gold": float(p_click.mean()),
        "gold_satisfaction": float(
            (behavior.click_probability(model, fb.examination, fb.true_relevance) * fb.true_satisfaction)
            .sum(1)
            .mean()
        ),
        "proxy": float(v.expected_clicks(slates.predicted).mean()),
        "clicks": float(fb.click.sum(1).double().mean()),
        "regret": float(v.expected_clicks(best).mean() - p_click.mean()),
    }


@METRICS("exposure")
def exposure(v: RoundView) -> dict[str, float]:
    """gini, entropy, coverage of item exposure (impressions per available item) this round."""
    n_avail = v.state.world.n_available(v.round_)
    counts = torch.bincount(v.slates.items.reshape(-1), minlength=n_avail).double().cpu()
    return {
        "gini": metrics.gini(counts),
        "entropy": metrics.entropy(counts),
        "coverage": metrics.coverage(counts),
    }


@METRICS("calibration")
def calibration(v: RoundView) -> dict[str, float]:
    """ece, brier of the learner's P(click | examined) against the true relevance of served items."""
    predicted, relevance = v.slates.predicted.cpu(), v.fb.true_relevance.cpu()  # metrics run on the CPU
    return {
        "ece": metrics.ece(predicted, relevance, v.domain.config.metrics.ece_bins),
        "brier": metrics.brier(predicted, relevance),
    }


@METRICS("gap")
def gap(v: RoundView, row: dict[str, float]) -> dict[str, float]:
    """gap = proxy - gold (expected clicks per slate)."""
    return {"gap": row["proxy"] - row["gold"]}


@METRICS("panel")
def panel(v: RoundView) -> dict[str, float]:
    """ndcg_truth (gains: the true value of the objective the learner serves, :attr:`RoundView.
    panel_value`), ndcg_click (gains: true click relevance, whatever the learner serves),
    rank_stability on the panel's scores of every available item (or the fixed sample);
    homogenization (Chaney et al. 2018): the mean Jaccard index of the item sets the panel
    users have interacted with so far, between nearest neighbours by true taste (``jaccard``),
    minus the same under the ideal recommender; homogenization_topk and jaccard_topk: the same on
    this round's top-K lists, against the oracle's lists."""
    dom, world, k = v.domain, v.state.world, v.k
    items, scores = v.panel_items, v.panel_scores
    n_pool = items.shape[1]
    truth = v.panel_truth
    top = scores.topk(k, dim=1).indices
    ideal = truth.topk(k, dim=1).indices  # the oracle's top-K
    partner = metrics.nearest_neighbours(world.user_factors[dom.panel].cpu())
    jaccard = metrics.mean_jaccard(top, partner, n_pool)
    mine, by_ideal = v.consumed
    n_total = world.n_items_total
    consumed = metrics.mean_jaccard_keys(mine, partner, n_total)
    prev = v.state.panel_scores
    return {
        "ndcg_truth": metrics.ndcg_at_k(v.panel_value, scores, k),
        "ndcg_click": metrics.ndcg_at_k(truth, scores, k),
        "jaccard": consumed,
        "homogenization": consumed - metrics.mean_jaccard_keys(by_ideal, partner, n_total),
        "jaccard_topk": jaccard,
        "homogenization_topk": jaccard - metrics.mean_jaccard(ideal, partner, n_pool),
        "rank_stability": (
            metrics.rank_stability(prev, scores[:, : prev.shape[1]]) if prev is not None else float("nan")
        ),
    }


@METRICS("retrieval")
def retrieval(v: RoundView) -> dict[str, float]:
    """retrieval_recall, with two-tower retrieval: share of the panel's exact top-R the index returns."""
    retriever = v.state.retriever
    if retriever is None:
        return {}
    return {"retrieval_recall": retriever.recall(v.state.world, v.domain.panel, v.round_ + 1)}


@METRICS("spurious")
def spurious(v: RoundView) -> dict[str, float]:
    """spurious_share and truth_share of the served score (:func:`recsim.core.metrics.score_shares`):
    the panel's serving scores of every available item, fitted on the true relevance and on how
    often and where the loop showed each item so far (log1p impressions, mean position; K + 1 if
    never shown)."""
    shown = v.state.shown
    if shown is None:
        return {}
    items = v.panel_items
    truth = v.panel_truth.double().reshape(-1)
    count, position_sum = shown.cpu()[:, items.reshape(-1).cpu()]
    mean_position = torch.where(count > 0, position_sum / count.clamp_min(1), float(v.k + 1))
    spurious_share, truth_share = metrics.score_shares(
        v.panel_scores.reshape(-1), truth, [count.log1p(), mean_position]
    )
    return {"spurious_share": spurious_share, "truth_share": truth_share}


@METRICS("position")
def position(v: RoundView) -> dict[str, float]:
    """position_curve_error and position_share (:func:`recsim.core.metrics.variance_share` of the
    position part of the training-time click score), for learners that have a position channel."""
    out: dict[str, float] = {}
    ranker, slates = v.state.ranker, v.slates
    curve_fn = getattr(ranker, "learned_position_curve", None)
    curve = curve_fn() if curve_fn is not None else None
    if curve is not None:
        out["position_curve_error"] = metrics.position_curve_error(curve, v.domain.true_position_curve())
    split_fn = getattr(ranker, "position_components", None)
    if split_fn is not None:
        positions = torch.arange(1, slates.items.shape[1] + 1, device=v.domain.device).expand_as(slates.items)
        parts = split_fn(v.state.world, slates.users, slates.items, positions)
        out["position_share"] = metrics.variance_share(*parts) if parts is not None else 0.0
    return out


def measure(view: RoundView) -> dict[str, float]:
    """Every registered metric group, in order (an entry of two parameters also reads the row)."""
    import inspect

    row: dict[str, float] = {}
    for _, fn in METRICS.items():
        takes_row = len(inspect.signature(fn).parameters) > 1
        row.update(fn(view, row) if takes_row else fn(view))
    return row
