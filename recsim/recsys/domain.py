"""The recommender domain on the shared loop: act -> feedback -> log -> fit -> measure -> evolve.

Each step is a method of :class:`RecsysDomain` that takes the round's state and returns new
records; the world and the ranker live in :class:`RecsysState`. Random draws take generators of
(seed, round, stream) with one stream per step, so arms that share a seed share the world, the
active users and the candidate sets, and differ only where their decisions differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch

from recsim.core.rng import SETUP_ROUND, generator
from recsim.io.logs import LogStore
from recsim.mitigations import describe
from recsim.recsys import behavior
from recsim.recsys.behavior import Feedback
from recsim.recsys.config import ranker_section
from recsim.recsys.distributed import Dist
from recsim.recsys.measures import RoundView, measure
from recsim.recsys.policy import Scored, Slates, build_slates, exploration_bucket, sample_candidates
from recsim.recsys.rankers import Ranker, make_ranker
from recsim.recsys.retrieval import TwoTowerRetriever
from recsim.recsys.world import World, shared_row

if TYPE_CHECKING:
    from recsim.config import SimConfig


@dataclass(frozen=True)
class RecsysState:
    """State carried from round to round.

    Attributes:
        world: the ground truth now (user tastes drift).
        ranker: the learner (its fitted parameters are updated in place by ``fit``).
        retriever: the candidate generator with ``policy.retrieval="two_tower"`` (retrained in
            place by ``fit``), else None (uniform candidates).
        panel_scores: [P, N_r] the learner's scores of every available item for the panel after
            the last fit (for rank_stability); None before the first measurement.
        train: statistics of the last fit.
        shown: [2, N_total] float64 per item, accumulated over the rounds so far: impressions and
            the sum of the positions it was shown at (what the loop itself did to each
            item: the spurious variables of ``spurious_share``); None before the first round.
        consumed: the panel's interactions so far under this learner and under the ideal
            recommender, as keys ``panel index * N_total + item`` (for ``homogenization``).
        clicked: with ``policy.repeat_consumption=False``, every user's clicks so far as sorted
            distinct keys ``user * N_total + item`` (those pairs are not shown again); else None.
        logger: with ``loop.feedback`` "open", the fixed logger (``policy.logger``, fitted on its
            own logs); with "random", a random ranker whose slates are all random; else None.
    """

    world: World
    ranker: Ranker
    retriever: TwoTowerRetriever | None = None
    panel_scores: torch.Tensor | None = None
    train: dict[str, float] | None = None
    shown: torch.Tensor | None = None
    consumed: tuple[torch.Tensor, torch.Tensor] | None = None
    clicked: torch.Tensor | None = None
    logger: Ranker | None = None


class RecsysDomain:
    """Recommender feedback loop of one arm."""

    name = "recsys"
    table_names = ("position_curves",)
    finite_keys = ("train_loss",)

    def __init__(self, config: SimConfig, dist: Dist | None = None, cache: Any = None) -> None:
        # ``cache`` (the study's shared set-ups) is not used: a world is drawn in milliseconds.
        self.config = config
        self.dist = dist
        self.world0 = World.create(config)
        self.device = torch.device(config.device)
        eta = torch.tensor([config.behavior.eta[d] for d in self.world0.device_names])
        self.theta = behavior.examination_curve(eta, config.policy.slate_size).to(self.device)  # [V, K]
        setup = lambda stream: generator(config.seed, SETUP_ROUND, stream)  # noqa: E731
        # Set-up draws use CPU generators (as the world does), so every device sees the same ones.
        self.panel = torch.randperm(self.world0.n_users, generator=setup("panel"))[
            : config.metrics.panel_users
        ]
        self.panel = self.panel.to(self.device)
        # user id -> panel index, or -1 (for the panel's interaction histories)
        self.panel_index = torch.full((self.world0.n_users,), -1, dtype=torch.long)
        self.panel_index[self.panel.cpu()] = torch.arange(len(self.panel))
        self.panel_index = self.panel_index.to(self.device)
        self.bucket = exploration_bucket(
            self.world0.n_users, config.policy.exploration_share, setup("bucket")
        ).to(self.device)
        n_items = config.metrics.panel_items
        # The panel's items: every available item (None), or a fixed sample of the first catalogue.
        self.panel_items = None
        if n_items is not None:
            sample = torch.randperm(self.world0.n_available(0), generator=setup("panel-items"))[:n_items]
            self.panel_items = sample.sort().values.to(self.device)

    def gen(self, round_: int, stream: str) -> torch.Generator:
        return generator(self.config.seed, round_, stream, self.device)

    # 0. initial state ------------------------------------------------------------------------
    def initial_state(self) -> RecsysState:
        cfg, world = self.config, self.world0
        retriever = TwoTowerRetriever(cfg, world) if cfg.policy.retrieval == "two_tower" else None
        logger = None
        if cfg.loop.feedback != "closed":
            name = cfg.policy.logger if cfg.loop.feedback == "open" else "random"
            ranker = {"name": name, "window": cfg.ranker.window}
            logger = make_ranker(cfg.model_copy(update={"ranker": ranker_section(ranker)}), world, self.dist)
        return RecsysState(
            world=world, ranker=make_ranker(cfg, world, self.dist), retriever=retriever, logger=logger
        )

    def _split(
        self, fn: Callable[..., torch.Tensor], users: torch.Tensor, *rows: torch.Tensor
    ) -> torch.Tensor:
        """``fn(users, *rows)`` row by row of users: here, or under ``--distributed`` each rank on
        its own users, gathered."""
        return fn(users, *rows) if self.dist is None else self.dist.split(fn, users, *rows)

    # checkpoints: the state entering the next round ------------------------------------------
    def checkpoint(self, state: RecsysState) -> dict[str, Any]:
        """What changes between rounds: user tastes (drift), the learner, the retriever."""
        return {
            "world": {"user_factors": state.world.user_factors},
            "ranker": state.ranker.state_dict(),
            "retriever": None if state.retriever is None else state.retriever.state_dict(),
            "panel_scores": state.panel_scores,
            "train": state.train,
            "shown": state.shown,
            "consumed": state.consumed,
            "clicked": state.clicked,
            "logger": None if state.logger is None else state.logger.state_dict(),
        }

    def restore(self, payload: dict[str, Any]) -> RecsysState:
        """The state a :meth:`checkpoint` payload describes (loaded onto this arm's device)."""
        state = self.initial_state()
        state.ranker.load_state_dict(payload["ranker"])
        if state.logger is not None:
            state.logger.load_state_dict(payload["logger"])
        if state.retriever is not None:
            state.retriever.load_state_dict(payload["retriever"])
        world = replace(state.world, user_factors=payload["world"]["user_factors"].to(self.device))
        panel = payload["panel_scores"]
        shown = payload.get("shown")
        shown = None if shown is None else shown.to(self.device)
        consumed = payload.get("consumed")
        clicked = payload.get("clicked")
        return replace(
            state,
            world=world,
            panel_scores=panel,
            train=payload["train"],
            shown=shown,
            consumed=consumed,
            clicked=None if clicked is None else clicked.to(self.device),
        )

    # 1. act: the learner decides which items each active user sees ---------------------------
    def act(self, state: RecsysState, round_: int) -> Slates:
        return self._act(state, round_, state.ranker, "policy")

    def logged(self, state: RecsysState, round_: int) -> tuple[Slates, Feedback] | None:
        """With ``loop.feedback`` "open" or "random": the fixed logger's slates for the same users
        and candidates as the learner's (streams ``active`` and ``candidates``), their order and
        random slates drawn from stream ``logger-policy`` and the users' response from
        ``logger-behavior``; None in the closed loop. Every arm of a seed sees the same."""
        if state.logger is None:
            return None
        slates = self._act(state, round_, state.logger, "logger-policy")
        return slates, self.feedback(state, slates, round_, "logger-behavior")

    def _act(self, state: RecsysState, round_: int, ranker: Ranker, stream: str) -> Slates:
        """Slates of ``ranker`` (the learner, or the open loop's logger) for the round's users."""
        cfg, world = self.config, state.world
        learner = ranker is state.ranker
        n_active = cfg.loop.active_users or world.n_users
        if world.user_activity is not None and n_active < world.n_users:  # a fitted world's activity
            users = torch.multinomial(world.user_activity, n_active, generator=self.gen(round_, "active"))
        else:
            users = torch.randperm(world.n_users, generator=self.gen(round_, "active"), device=self.device)
        users = users[:n_active].sort().values
        if state.retriever is not None:
            cands = state.retriever.candidates(
                world, users, round_, self.gen(round_, "candidates"), split=self._split
            )
        else:
            cands = sample_candidates(
                n_active, world.n_available(round_), cfg.policy.n_candidates, self.gen(round_, "candidates")
            )  # [B, C]

        # one pass for the scores and the predictions of the shown items, where the ranker has it
        fused = self.dist is None and hasattr(ranker, "score_and_predict")

        def score(u: torch.Tensor, c: torch.Tensor) -> Scored:
            if fused:
                return ranker.score_and_predict(world, u, c, round_)
            return self._split(lambda u_, c_: ranker.score(world, u_, c_, round_), u, c), None

        def predict(u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            return self._split(lambda u_, i_: ranker.predict_proba(world, u_, i_), u, i)

        forced = self.bucket[users] | (round_ < cfg.policy.startup_rounds)
        if not learner and cfg.loop.feedback == "random":
            forced = torch.ones_like(forced)
        p_random = torch.where(forced, 1.0, cfg.policy.epsilon)  # [B]
        # every slate random (the start-up rounds): no candidate is ranked, only the shown are scored
        scores, predicted_at = (None, None)
        if not bool(forced.all()):
            scores, predicted_at = (
                self._scores(state, users, cands, score) if learner else score(users, cands)
            )  # [B, C]
        allowed = None
        if not cfg.policy.repeat_consumption and state.clicked is not None:
            keys = users.unsqueeze(1) * world.n_items_total + cands  # [B, C]
            allowed = ~torch.isin(keys, state.clicked)
        return build_slates(
            users,
            world.user_device[users],
            cands,
            scores,
            cfg.policy.slate_size,
            p_random,
            self.gen(round_, stream),
            predict,
            allowed,
            score_shown=score,
            predicted_at=predicted_at,
        )

    def _scores(
        self,
        state: RecsysState,
        users: torch.Tensor,
        cands: torch.Tensor,
        score: Callable[[torch.Tensor, torch.Tensor], Scored],
    ) -> Scored:
        """[B, C] the ranker's scores of every user's candidates, and where ``score`` gives one, the
        ``predicted_at`` of :func:`build_slates`.

        Where every user's candidates are every available item and the metrics panel scores them
        all, the panel's users are not scored again: their rows are ``state.panel_scores``, which
        the last measurement computed after the last fit for this round, the same items and the
        same model. Only for a ranker whose scores depend on its fit alone (``scores_from_fit``:
        not on the drifting truth, nor on a random draw) and in a single process. A user's score
        does not depend on which other users share its batch, so the scores are those of scoring
        everyone (``tests/test_speed.py`` compares whole runs' logs). The shown items'
        predictions then come from ``predict``, every user's in one call, as without the
        panel's rows: taken from the two passes instead, a few differed in the last bit.
        """
        prev, row = state.panel_scores, shared_row(cands)
        reusable = (
            getattr(state.ranker, "scores_from_fit", False)
            and self.dist is None
            and self.panel_items is None
            and prev is not None
            and row is not None
            and prev.shape[1] == len(row)
            and bool((row == torch.arange(len(row), device=row.device)).all())
        )
        where = self.panel_index[users]
        panel = where >= 0
        n_rest = int((~panel).sum())
        if not reusable or not bool(panel.any()) or n_rest == 1:  # one row alone is not a shared row
            return score(users, cands)
        out = torch.empty(cands.shape, dtype=prev.dtype, device=self.device)
        out[panel] = prev.to(self.device).index_select(0, where[panel])
        if not n_rest:
            return out, None
        out[~panel] = score(users[~panel], row.expand(n_rest, len(row)))[0]
        return out, None  # the shown items' predictions from ``predict``, all in one pass

    # 2. feedback: users examine, click, and (after a click) are satisfied or not -------------
    def feedback(self, state: RecsysState, slates: Slates, round_: int, stream: str = "behavior") -> Feedback:
        world = state.world
        rel = world.relevance(slates.users, slates.items)  # [B, K]
        sat = world.satisfaction(slates.users, slates.items)  # [B, K]
        return behavior.simulate(
            self.config.behavior.model, self.theta, slates.device, rel, sat, self.gen(round_, stream)
        )

    # 3. log: the round as an impression table (schema in recsim.io.logs) -------------------------
    def log_frame(self, state: RecsysState, slates: Slates, fb: Feedback) -> pl.DataFrame:
        n_users, k = slates.items.shape
        names = pl.Series(state.world.device_names)
        flat = lambda t: t.reshape(-1).cpu().numpy()  # noqa: E731  [B, K] -> [B*K]
        return pl.DataFrame(
            {
                "user": slates.users.repeat_interleave(k).cpu().numpy(),
                "item": flat(slates.items),
                "position": torch.arange(1, k + 1, dtype=torch.int16).repeat(n_users).numpy(),
                "device": names.gather(slates.device.repeat_interleave(k).cpu().numpy()),
                "score": flat(slates.scores.float()),
                "propensity": flat(slates.propensity.float()),
                "examination": flat(fb.examination.float()),
                "click": flat(fb.click),
                "satisfaction": flat(fb.satisfaction),
                "true_relevance": flat(fb.true_relevance.float()),
                "true_satisfaction": flat(fb.true_satisfaction.float()),
                "exploration": slates.exploration.repeat_interleave(k).cpu().numpy(),
            }
        ).with_columns(
            satisfaction=pl.when(pl.col("click")).then(pl.col("satisfaction")),
            **(self._candidate_columns(state, slates) if self.config.policy.log_candidates else {}),
        )

    def _candidate_columns(self, state: RecsysState, slates: Slates) -> dict[str, pl.Series]:
        """The slates' candidates [B, C] and their true relevance, as list columns on each slate's
        position-1 row (null on the others: a null index gathers a null, so no row is copied K
        times)."""
        n_users, k = slates.items.shape
        rows = np.arange(n_users * k)
        slate = pl.Series(rows // k).set(pl.Series(rows % k != 0), None)  # [B*K] slate, or null
        rel = state.world.relevance(slates.users, slates.candidates)  # [B, C]
        return {
            "candidates": pl.Series(slates.candidates.cpu().numpy()).arr.to_list().gather(slate),
            "candidate_relevance": pl.Series(rel.float().cpu().numpy()).arr.to_list().gather(slate),
        }

    # 4. fit: the learner retrains on the logs its own slates produced -------------------------
    def fit(self, state: RecsysState, logs: LogStore, arm: str, round_: int) -> RecsysState:
        window = self.config.ranker.window or round_ + 1
        frame = logs.read(arm, max(0, round_ - window + 1), round_)  # this rank's users' rows
        latest = logs.latest(arm, round_)  # the round's every row (features, retrieval)
        # Under --distributed, multi-task rankers train on this rank's rows (the only trainable
        # rankers allowed there); their features follow every row of the round.
        extra = {"latest": latest} if self.dist is not None and self.config.ranker.multitask else {}
        train = state.ranker.fit(frame, state.world, round_, **extra)
        if state.logger is not None:  # the open loop's logger fits on its own logs, as the learner
            state.logger.fit(frame, state.world, round_)
        if state.retriever is not None:
            train = {**train, **state.retriever.fit(latest, state.world, round_)}
        return replace(state, train=train)

    # 5. measure: the truth the platform cannot see ---------------------------------------------
    def measure(
        self, state: RecsysState, slates: Slates, fb: Feedback, round_: int, logged: Slates | None = None
    ) -> tuple[dict[str, float], RecsysState]:
        """Every registered metric (:mod:`recsim.recsys.measures`) of the learner's ``slates``,
        then the fit's statistics. ``logged``: in the open loop, the logger's slates, which are
        what the loop showed each item (``spurious_share``'s variables)."""
        state = replace(state, shown=self._count_shown(state, slates if logged is None else logged))
        view = RoundView(self, state, slates, fb, round_)
        row = measure(view)
        row.update(state.train or {})
        return row, replace(state, panel_scores=view.panel_scores, consumed=view.consumed)

    def _count_shown(self, state: RecsysState, slates: Slates) -> torch.Tensor:
        """[2, N_total] the items' impressions and position sums, with this round's."""
        n = state.world.n_items_total
        items = slates.items.reshape(-1)
        positions = torch.arange(1, slates.items.shape[1] + 1, device=items.device).expand_as(slates.items)
        now = torch.stack(
            [
                torch.bincount(items, minlength=n).double(),
                torch.bincount(items, weights=positions.reshape(-1).double(), minlength=n),
            ]
        )
        return now if state.shown is None else state.shown + now

    def true_position_curve(self) -> torch.Tensor:
        """[V, K] true log theta(k, d) - log theta(1, d) = -eta_d log k."""
        return self.theta.log() - self.theta[:, :1].log()

    def tables(self, state: RecsysState, round_: int) -> dict[str, pl.DataFrame]:
        """Per-round tables beside the metrics: the learned vs true position curve, if any."""
        curve_fn = getattr(state.ranker, "learned_position_curve", None)
        curve = curve_fn() if curve_fn is not None else None
        if curve is None:
            return {}
        n_dev, k = curve.shape
        return {
            "position_curves": pl.DataFrame(
                {
                    "round": pl.Series([round_] * (n_dev * k), dtype=pl.Int32),
                    "device": [d for d in state.world.device_names for _ in range(k)],
                    "position": pl.Series(list(range(1, k + 1)) * n_dev, dtype=pl.Int16),
                    "learned": curve.reshape(-1).float().numpy(),
                    "true": self.true_position_curve().reshape(-1).float().numpy(),
                }
            )
        }

    @classmethod
    def tags(cls, config: Any) -> dict[str, str]:
        """MLflow tags: the mitigations on, and the position bias (eta per device)."""
        mitigation, bias = describe(config)
        return {"mitigation": mitigation, "bias": bias}

    @classmethod
    def memory_bytes(cls, config: Any) -> int:
        """Lower bound, float32: the world's factors (users x D, items x 2D), the learner's
        tables with two Adam moments (users and items x dim, and the retriever's), a round's
        candidate scores (B x C) and log rows, the panel's scores (P x N)."""
        w, rc, p = config.world, config.ranker, config.policy
        items = w.n_items + w.new_items_per_round * config.loop.rounds
        users = w.n_users
        active = config.loop.active_users or users
        world = 4 * (users * w.dim + 2 * items * w.dim)
        dim = getattr(rc, "dim", 0)
        learner = 3 * 4 * (users + items) * dim
        retriever = 3 * 4 * (users + items) * p.retriever_dim if p.retrieval == "two_tower" else 0
        candidates = p.n_candidates or items
        round_ = active * candidates * 12 + active * p.slate_size * 64
        panel_items = config.metrics.panel_items or items
        return world + learner + retriever + round_ + 2 * 4 * config.metrics.panel_users * panel_items

    @classmethod
    def figures(cls, tables: dict[str, pl.DataFrame], out: Path) -> list[Path]:
        """The learned vs true position curves, where a learner has a position channel."""
        if "position_curves" not in tables:
            return []
        from recsim.io.plots import plot_position_curves

        return [plot_position_curves(tables["position_curves"], out / "position_curves.png")]

    # 7. evolve: the world reacts to what users consumed (interest drift) ----------------------
    def evolve(self, state: RecsysState, slates: Slates, fb: Feedback, round_: int) -> RecsysState:
        clicked = state.clicked
        if not self.config.policy.repeat_consumption:
            now = (slates.users.unsqueeze(1) * state.world.n_items_total + slates.items)[fb.click]
            clicked = now.unique() if clicked is None else torch.unique(torch.cat([clicked, now]))
        return replace(state, world=state.world.drift(slates.users, slates.items, fb.click), clicked=clicked)
