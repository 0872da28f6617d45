"""Candidate generation that does not score every item for every user.

A logistic two-tower model (:class:`towers.mf.LogisticMF`: user tower p_u, item tower [q_i, b_i])
is retrained each round on the round's impressions (click labels, so it inherits the log's
position bias, as a production retriever would), and searched through an inverted-file index
(IVF; Jegou et al., TPAMI 2011, as in FAISS's IndexIVFFlat):

    build   k-means (Lloyd) over the item keys -> L lists, each item in its nearest centroid's list
    search  score the L centroids against the query, keep the ``n_probe`` best lists, score only
            their items exactly, keep the top R

so a user costs L + n_probe * N / L dot products instead of N. A share of each user's candidates
(``explore_candidates``) is drawn uniformly from the catalogue instead, the platform's own
exploration; duplicates and unfilled slots are redrawn uniformly.

Shapes: B users, N items, L lists, M the longest list, P probed lists, R retrieved, D key width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl
import torch

from recsim.core.rng import SETUP_ROUND, generator
from recsim.recsys.rankers import Optimizers, RowSparseAdam, column, train_bce
from recsim.recsys.world import World

if TYPE_CHECKING:
    from recsim.config import SimConfig

KMEANS_ITERS = 8
NEAREST_CHUNK = 8192  # keys per chunk of the nearest-centroid search
FILL_CHUNK = 8192  # rows per sort in fill_unique
SEARCH_CHUNK = 1 << 24  # (user, key) scores per search chunk (b * P * M), 64 MB of float32
TRAIN_BATCH = 8192
TRAIN_LR = 0.01


@dataclass(frozen=True)
class IvfIndex:
    """An inverted file over item keys.

    Attributes:
        centroids: [L, D] list centroids.
        lists: [L, M] long item ids of each list, -1 padded.
        list_keys: [L, M, D] the keys of each list's items (0 where padded).
        pad: [L, M] 0 for an item, -inf for padding (added to scores).
        keys: [N, D] the item keys the index was built from.
    """

    centroids: torch.Tensor
    lists: torch.Tensor
    list_keys: torch.Tensor
    pad: torch.Tensor
    keys: torch.Tensor

    @classmethod
    def build(cls, keys: torch.Tensor, n_lists: int, gen: torch.Generator) -> IvfIndex:
        """k-means (Lloyd, ``KMEANS_ITERS`` steps from ``n_lists`` random items) over keys [N, D]."""
        n = keys.shape[0]
        n_lists = min(n_lists, n)
        centroids = keys[torch.randperm(n, generator=gen, device=keys.device)[:n_lists]].clone()
        for _ in range(KMEANS_ITERS):
            assign = cls._nearest(keys, centroids)  # [N]
            sums = torch.zeros_like(centroids).index_add_(0, assign, keys)
            counts = torch.bincount(assign, minlength=n_lists).to(keys.dtype)
            moved = sums / counts.clamp_min(1)[:, None]
            centroids = torch.where(counts[:, None] > 0, moved, centroids)  # empty lists stay put
        assign = cls._nearest(keys, centroids)
        # Lists as a padded matrix: sort items by list, then place each at its rank within the list.
        order = torch.argsort(assign, stable=True)
        counts = torch.bincount(assign, minlength=n_lists)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(n, device=keys.device) - starts[assign[order]]
        lists = torch.full((n_lists, int(counts.max())), -1, dtype=torch.long, device=keys.device)
        lists[assign[order], slot] = order
        return cls.from_lists(centroids, lists, keys)

    @classmethod
    def from_lists(cls, centroids: torch.Tensor, lists: torch.Tensor, keys: torch.Tensor) -> IvfIndex:
        """The index of these centroids, lists and keys (``list_keys`` and ``pad`` follow from
        them: a checkpoint stores only these three)."""
        valid = lists >= 0
        list_keys = keys[lists.clamp_min(0)] * valid[..., None]  # [L, M, D]
        pad = torch.zeros(lists.shape, dtype=keys.dtype, device=keys.device).masked_fill(~valid, -torch.inf)
        return cls(centroids=centroids, lists=lists, list_keys=list_keys, pad=pad, keys=keys)

    @staticmethod
    def _nearest(keys: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """[N] index of each key's nearest centroid in Euclidean distance."""
        # argmin |x - c|^2 = argmax <x, c> - |c|^2 / 2, in row chunks that stay in cache (a whole
        # [N, L] score matrix is 100 MB at 100k items: 3x slower); -|c|^2 / 2 enters as addmm's bias
        bias = -0.5 * (centroids * centroids).sum(1)
        chunks = [
            torch.addmm(bias, keys[s : s + NEAREST_CHUNK], centroids.T).argmax(1)
            for s in range(0, keys.shape[0], NEAREST_CHUNK)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.long, device=keys.device)

    def search(self, queries: torch.Tensor, n_probe: int, n: int) -> torch.Tensor:
        """queries [B, D] -> [B, n] item ids of the highest <query, key> in the probed lists
        (-1 where the probed lists hold fewer than n items).

        Per chunk of users, the (user, probed list) pairs are grouped by list, so each list's keys
        meet all the queries that probe it in one matrix product ([q_l, D] x [D, M]); a loop over
        lists, never over users. Scores land in a [b, P, M] buffer whose top n are kept.
        """
        n_lists, longest = self.lists.shape
        n_probe = min(n_probe, n_lists)
        k = min(n, n_probe * longest)
        out = torch.full((queries.shape[0], n), -1, dtype=torch.long, device=queries.device)
        step = max(1, SEARCH_CHUNK // (n_probe * longest))
        # one score buffer for every chunk: a fresh 64 MB buffer would be paged in again each time
        buffer = torch.empty(
            min(step, len(queries)) * n_probe * longest, dtype=queries.dtype, device=queries.device
        )
        for s in range(0, queries.shape[0], step):  # chunks of users
            q = queries[s : s + step]  # [b, D]
            b = len(q)
            probe = (q @ self.centroids.T).topk(n_probe, dim=1).indices  # [b, P]
            flat = probe.reshape(-1)  # [b*P] list of each (user, probe) pair; pair j is user j // P
            order = torch.argsort(flat, stable=True)
            counts = torch.bincount(flat, minlength=n_lists).tolist()
            scores = buffer[: b * n_probe * longest].view(b * n_probe, longest)  # every row written below
            start = 0
            for lst, c in enumerate(counts):  # one matrix product per probed list
                if c:
                    pairs = order[start : start + c]
                    found = q.index_select(0, pairs // n_probe) @ self.list_keys[lst].T + self.pad[lst]
                    scores.index_copy_(0, pairs, found)
                    start += c
            top = scores.view(b, -1).topk(k, dim=1)  # over [b, P*M]
            # the winners' item ids: (probed list, slot) of each, not the [b, P*M] id matrix
            lists = probe.gather(1, top.indices // longest)
            items = self.lists[lists, top.indices % longest]
            out[s : s + step, :k] = items.masked_fill(top.values == -torch.inf, -1)
        return out


def fill_unique(
    candidates: torch.Tensor, n_available: int, gen: torch.Generator, copy: bool = True
) -> torch.Tensor:
    """Redraw, uniformly from ``[0, n_available)``, every -1 and every later repeat within a row
    (the first occurrence of an id is kept, so retrieved candidates win over exploration ones).

    candidates [B, C] long -> [B, C] with C distinct valid ids per row (C <= n_available); with
    ``copy`` False, ``candidates`` itself is filled and returned (the caller's own tensor).
    Vectorized: each pass marks the repeats of every row (sorting ``FILL_CHUNK`` rows at a time)
    and redraws them all at once (row-major order); a pass after the first checks only the rows
    that had a redraw, since the others are done. The expected number of passes is small since a
    redraw collides with probability < C / n_available.
    """
    cands = candidates.clone() if copy else candidates
    rows = None  # the rows still to check (None: all)
    for _ in range(1000):
        part = cands if rows is None else cands.index_select(0, rows)
        bad = _unusable(part)
        n_bad = int(bad.count_nonzero())  # 25x faster here than a bool sum() of [100,000, 200]
        if n_bad == 0:
            return cands
        part[bad] = torch.randint(n_available, (n_bad,), generator=gen, device=gen.device)
        redrawn = bad.any(1)
        if rows is None:
            rows = torch.nonzero(redrawn).squeeze(1)
        else:
            cands.index_copy_(0, rows, part)
            rows = rows[redrawn]
    raise RuntimeError(f"could not draw {cands.shape[1]} distinct candidates from {n_available} items")


def _unusable(part: torch.Tensor) -> torch.Tensor:
    """[R, C] long -> [R, C] bool: True at every -1 and every repeat of an id earlier in its row.

    Rows are sorted ``FILL_CHUNK`` at a time (a row's marks do not depend on the others): the
    sort's [chunk, C] values and indices stay in the allocator's reused memory, where whole-batch
    ones (at 100,000 x 200 candidates, 160 MB each) are fresh pages the kernel maps in and zeroes
    on every call."""
    bad = torch.empty(part.shape, dtype=torch.bool, device=part.device)
    for s in range(0, part.shape[0], FILL_CHUNK):  # chunks of rows
        p, b = part[s : s + FILL_CHUNK], bad[s : s + FILL_CHUNK]
        sorted_, idx = p.sort(dim=1, stable=True)  # the first of equal ids stays in place
        b.zero_()  # the scatter below leaves each row's smallest id (idx[:, 0]) unwritten
        b.scatter_(1, idx[:, 1:], sorted_[:, 1:] == sorted_[:, :-1])
        b |= p < 0
    return bad


class TwoTowerRetriever:
    """Two-tower retrieval retrained each round, searched through an IVF index."""

    def __init__(self, config: SimConfig, world: World) -> None:
        from towers.mf import LogisticMF

        pc = self.pc = config.policy
        self.config = config
        dev = world.user_factors.device
        gen = generator(config.seed, SETUP_ROUND, "retriever-init")  # drawn on the CPU, then moved
        self.model_ = LogisticMF(world.n_users, world.n_items_total, pc.retriever_dim, gen, sparse=True).to(
            dev
        )
        m = self.model_
        self.opt_ = Optimizers(
            [
                RowSparseAdam([m.user.weight, m.item.weight, m.item_bias.weight], lr=TRAIN_LR),
                torch.optim.Adam([m.bias], lr=TRAIN_LR),
            ]
        )
        self.index_ = self._index(world, 0)

    def _index(self, world: World, round_: int) -> IvfIndex:
        with torch.inference_mode():
            keys = self.model_.item_vectors(world.n_available(round_))
            gen = generator(self.config.seed, round_, "retriever-index", keys.device)
            return IvfIndex.build(keys.clone(), self.pc.ivf_lists, gen)

    def candidates(
        self,
        world: World,
        users: torch.Tensor,
        round_: int,
        gen: torch.Generator,
        split: Callable[..., torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """users [B] -> [B, C]: R = C - explore_candidates retrieved, the rest uniform.

        ``split(fn, users)`` runs the search on shares of the users (one per rank) and gathers it.
        """
        pc = self.pc
        n_avail = world.n_available(round_)
        n_retrieved = pc.n_candidates - pc.explore_candidates

        def search(u: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return self.index_.search(self.model_.user_vectors(u), pc.ivf_probe, n_retrieved)

        found = search(users) if split is None else split(search, users)  # [B, R]
        explore = torch.randint(
            n_avail, (len(users), pc.explore_candidates), generator=gen, device=gen.device
        )
        return fill_unique(torch.cat([found, explore], dim=1), n_avail, gen, copy=False)

    def fit(self, logs: pl.DataFrame, world: World, round_: int) -> dict[str, float]:
        """One epoch of BCE on the round's impressions (warm start), then the next round's index."""
        dev = world.user_factors.device
        users = column(logs, "user", torch.long).to(dev)
        items = column(logs, "item", torch.long).to(dev)
        clicks = column(logs, "click", torch.float32).to(dev)
        gen = generator(self.config.seed, round_, "retriever-fit", dev)
        stats = train_bce(
            self.model_, self.opt_, (users, items[:, None]), clicks[:, None], 1, TRAIN_BATCH, gen
        )
        self.index_ = self._index(world, round_ + 1)
        return {"retriever_loss": stats["train_loss"]}

    def state_dict(self) -> dict[str, Any]:
        index = {k: getattr(self.index_, k) for k in ("centroids", "lists", "keys")}
        return {"model": self.model_.state_dict(), "opt": self.opt_.state_dict(), "index": index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model_.load_state_dict(state["model"])
        self.opt_.load_state_dict(state["opt"])
        dev = self.model_.user.weight.device
        index = state["index"]
        self.index_ = IvfIndex.from_lists(*(index[k].to(dev) for k in ("centroids", "lists", "keys")))

    def recall(self, world: World, users: torch.Tensor, round_: int) -> float:
        """Share of each user's exact top-R items (by the retriever's own score over every available
        item) that the index returns: the price of not scoring every item. users [B] (a panel)."""
        r = self.pc.n_candidates - self.pc.explore_candidates
        with torch.inference_mode():
            q = self.model_.user_vectors(users)
            exact = (q @ self.index_.keys.T).topk(r, dim=1).indices  # [B, R]
            found = self.index_.search(q, self.pc.ivf_probe, r)
        hit = (exact[:, :, None] == found[:, None, :]).any(-1)  # [B, R]
        return float(hit.float().mean())
