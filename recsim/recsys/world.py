"""Users, items and the latent truth of the recommender domain.

The truth is never materialized as a users x items matrix: relevance and satisfaction are computed
on demand for the (user, item) pairs asked for, from unit-norm latent factors:

    rel(u, i) = sigmoid(a * <x_u, y_i> + pop_i + b)          true P(click | examined)
    sat(u, i) = sigmoid(a * <x_u, z_i> + b_s)                 true P(satisfied | click)
    z_i       = normalize(rho * y_i + sqrt(1 - rho^2) * y'_i)  satisfaction appeal

with a = ``affinity_scale``, pop_i ~ N(0, ``popularity_scale``^2) a popularity prior that moves
clicks but not satisfaction, and rho = ``satisfaction_correlation``. Users and items are drawn
around ``n_clusters`` shared centres, so groups of like-minded users and item categories exist
(an item's category is its cluster). Items that join later (``new_items_per_round``) are drawn at
set-up with a birth round, so the catalogue grows deterministically: items born by round r are
the prefix ``[0, n_available(r))``.

Shapes: U users, N items (all ever born), D factors, B users asked, C items asked per user.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from recsim.core.rng import SETUP_ROUND, generator

if TYPE_CHECKING:
    from recsim.config import SimConfig

PAIR_CHUNK = 1 << 18  # (user, item) pairs per chunk of relevance / satisfaction


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _clustered(
    n: int, centres: torch.Tensor, spread: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors around random centres -> (factors [n, D], cluster [n])."""
    n_clusters, dim = centres.shape
    cluster = torch.randint(n_clusters, (n,), generator=g)
    noise = torch.randn(n, dim, generator=g) / dim**0.5
    return _unit(centres[cluster] + spread * noise), cluster


@dataclass(frozen=True)
class World:
    """The ground truth at one round. Frozen: :meth:`drift` returns a new world.

    Attributes:
        user_factors: [U, D] unit click-taste vectors x_u (they drift with consumption).
        user_cluster: [U] long, the cluster a user was drawn around.
        user_device: [U] long, index into ``device_names``.
        item_factors: [N, D] unit click-appeal vectors y_i.
        item_sat_factors: [N, D] unit satisfaction-appeal vectors z_i.
        item_popularity: [N] log-popularity prior pop_i (click logit offset).
        item_category: [N] long, the item's cluster.
        item_birth: [N] long, round at which the item joins the catalogue (non-decreasing).
        satisfaction_scale: a_s, the affinity weight of the satisfaction logit (None: a, as drawn
            worlds have it; fitted worlds fit their own).
        user_activity: [U] how often each user comes back (fitted worlds): the loop samples its
            active users with probability proportional to it; None: uniformly.
    """

    user_factors: torch.Tensor
    user_cluster: torch.Tensor
    user_device: torch.Tensor
    item_factors: torch.Tensor
    item_sat_factors: torch.Tensor
    item_popularity: torch.Tensor
    item_category: torch.Tensor
    item_birth: torch.Tensor
    device_names: tuple[str, ...]
    affinity_scale: float
    base_logit: float
    satisfaction_logit: float
    drift_rate: float
    satisfaction_scale: float | None = None
    user_activity: torch.Tensor | None = None

    @classmethod
    def create(cls, config: SimConfig) -> World:
        """Draw the world of ``config`` from the stream (seed, setup, "world"), or load the fitted
        world of ``world.source`` (:func:`recsim.recsys.worldfit.world_fields`)."""
        w = config.world
        if w.source is not None:
            from recsim.recsys.worldfit import world_fields

            return cls(**world_fields(config))
        g = generator(config.seed, SETUP_ROUND, "world")
        n_total = w.n_items + w.new_items_per_round * max(config.loop.rounds - 1, 0)
        centres = _unit(torch.randn(w.n_clusters, w.dim, generator=g))
        user_factors, user_cluster = _clustered(w.n_users, centres, w.cluster_spread, g)
        item_factors, item_category = _clustered(n_total, centres, w.cluster_spread, g)
        # Satisfaction appeal shares a cosine of rho with click appeal.
        other, _ = _clustered(n_total, centres, w.cluster_spread, g)
        other = _unit(other - (other * item_factors).sum(-1, keepdim=True) * item_factors)
        rho = w.satisfaction_correlation
        item_sat = _unit(rho * item_factors + (1 - rho**2) ** 0.5 * other)
        popularity = w.popularity_scale * torch.randn(n_total, generator=g)
        names = tuple(w.devices)
        shares = torch.tensor([w.devices[n] for n in names], dtype=torch.float64)
        device = torch.multinomial(shares, w.n_users, replacement=True, generator=g)
        birth = torch.zeros(n_total, dtype=torch.long)
        if w.new_items_per_round:
            later = torch.arange(n_total - w.n_items) // w.new_items_per_round + 1
            birth[w.n_items :] = later
        dev = torch.device(config.device)
        return cls(
            user_factors=user_factors.to(dev),
            user_cluster=user_cluster.to(dev),
            user_device=device.to(dev),
            item_factors=item_factors.to(dev),
            item_sat_factors=item_sat.to(dev),
            item_popularity=popularity.to(dev),
            item_category=item_category.to(dev),
            item_birth=birth.to(dev),
            device_names=names,
            affinity_scale=w.affinity_scale,
            base_logit=w.base_logit,
            satisfaction_logit=w.satisfaction_logit,
            drift_rate=w.drift_rate,
        )

    @property
    def n_users(self) -> int:
        return self.user_factors.shape[0]

    @property
    def n_items_total(self) -> int:
        return self.item_factors.shape[0]

    @property
    def n_categories(self) -> int:
        return int(self.item_category.max()) + 1

    def n_available(self, round_: int) -> int:
        """Items in the catalogue at ``round_`` (they are the prefix of the item index)."""
        return int((self.item_birth <= round_).sum())

    def relevance(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """True P(click | examined). users [B], items [B, C] -> [B, C]."""
        return self._pairs(
            users, items, self.item_factors, self.item_popularity, self.base_logit, self.affinity_scale
        )

    def satisfaction(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """True P(satisfied | clicked). users [B], items [B, C] -> [B, C]."""
        scale = self.affinity_scale if self.satisfaction_scale is None else self.satisfaction_scale
        return self._pairs(users, items, self.item_sat_factors, None, self.satisfaction_logit, scale)

    def _pairs(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        factors: torch.Tensor,
        offset: torch.Tensor | None,
        base: float,
        scale: float,
    ) -> torch.Tensor:
        """sigmoid(scale <x_u, f_i> + offset_i + base) for users [B], items [B, C] -> [B, C], in chunks
        of users so that the gathered [b, C, D] factors stay small whatever B and C. Where every
        row of ``items`` is the same row (:func:`shared_row`: all items, the panel), a matrix
        product instead of a gather (equal up to float rounding)."""
        out = torch.empty(items.shape, dtype=factors.dtype, device=factors.device)
        row = shared_row(items)
        if row is not None:  # every user scores the same items: one [B, D] x [D, C] product
            step = max(1, PAIR_CHUNK // max(row.shape[0], 1))
            f = factors[row].T.contiguous()
            extra = offset[row] + base if offset is not None else base
            for s in range(0, items.shape[0], step):
                affinity = self.user_factors[users[s : s + step]] @ f
                out[s : s + step] = torch.sigmoid(scale * affinity + extra)
            return out
        n_cand, dim = items.shape[1], factors.shape[1]
        step = max(1, PAIR_CHUNK // max(n_cand, 1))
        # The chunk's item factors are gathered with index_select into one buffer reused by every
        # chunk: ``factors[it]`` (the advanced-indexing kernel, a fresh [b, C, D] each chunk) took
        # 3-5x as long at 100,000 x 200 pairs. The product is the one einsum("bd,bcd->bc") runs,
        # [b, 1, D] x [b, D, C], so the values are its values bit for bit.
        buffer = torch.empty(min(step, len(items)) * n_cand, dim, dtype=factors.dtype, device=factors.device)
        for s in range(0, items.shape[0], step):  # chunks of users
            it = items[s : s + step]
            flat = it.reshape(-1)
            gathered = torch.index_select(factors, 0, flat, out=buffer[: len(flat)]).view(*it.shape, dim)
            user = self.user_factors.index_select(0, users[s : s + step]).unsqueeze(1)  # [b, 1, D]
            affinity = torch.bmm(user, gathered.transpose(1, 2)).squeeze(1)  # [b, C]
            logit = scale * affinity
            if offset is not None:
                logit = logit + offset.index_select(0, flat).view(it.shape) + base
            else:
                logit = logit + base
            out[s : s + step] = torch.sigmoid(logit)
        return out

    def drift(self, users: torch.Tensor, items: torch.Tensor, clicks: torch.Tensor) -> World:
        """Move each clicker's taste toward the mean appeal of what they clicked.

        x_u <- normalize((1 - r) x_u + r * mean_{i clicked by u} y_i), r = ``drift_rate``; users
        without a click keep their taste. users [B], items [B, K], clicks [B, K] bool.
        """
        if self.drift_rate == 0:
            return self
        weights = clicks.to(self.item_factors.dtype)  # [B, K]
        n_clicks = weights.sum(1, keepdim=True)  # [B, 1]
        pulled = torch.einsum("bk,bkd->bd", weights, self.item_factors[items]) / n_clicks.clamp_min(1)
        moved = _unit((1 - self.drift_rate) * self.user_factors[users] + self.drift_rate * pulled)
        keep = n_clicks == 0
        factors = self.user_factors.clone()
        factors[users] = torch.where(keep, self.user_factors[users], moved)
        return replace(self, user_factors=factors)


def shared_row(items: torch.Tensor) -> torch.Tensor | None:
    """The one row of ``items`` [B, C] when it is a row expanded over B (stride 0: every user
    scores the same candidates, as :func:`recsim.recsys.policy.sample_candidates` gives for all
    items and the metrics panel does); None otherwise."""
    if items.dim() == 2 and items.shape[0] > 1 and items.stride(0) == 0:
        return items[0]
    return None
