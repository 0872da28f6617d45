"""Multi-task rankers (MMoE, shared-bottom, single-task) retrained on their own logs.

The ranker keeps, as fitted state, what its features need from the past: each user's last L
clicked items (the history bag) and each item's exposure count. Both are snapshotted at the start
of every round in the training window, so a training row sees its features as they were when it
was served (no leak of the round's own clicks into its history).

Training per round: Adam over the window's impressions in shuffled minibatches; click loss by
position mode (see :mod:`towers.ranking`) plus the satisfaction loss on clicked impressions.
Scoring runs under ``torch.inference_mode()``, users in chunks, user and item parts computed once.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import torch
from torch import nn

from recsim import faults
from recsim.config import MitigationConfig, SimConfig
from recsim.distributed import ADAGRAD_EPS, Dist, ShardedTrainer, private_copy
from recsim.mitigations.gates import slate_gate_weights
from recsim.mitigations.invariance import invariance_penalty
from recsim.mitigations.sign_split import sign_split_weights
from recsim.rankers import Optimizers
from recsim.rankers import column as _col
from recsim.rng import SETUP_ROUND, generator
from recsim.world import World

SCORE_CHUNK = 4096  # (user, candidate) pairs per scoring chunk: small enough to stay in cache


def append_history(history: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Append clicked ``items`` (in order) to each user's history bag, keeping the last L.

    history [U, L] long, -1 = empty, oldest first; users, items [M] the new clicks in time order.
    Vectorized: new clicks are scattered into a [U, M_max] block, then the last L valid entries of
    [old | new] are kept with a stable sort.
    """
    if users.numel() == 0:
        return history
    n_users, length = history.shape
    order = torch.argsort(users, stable=True)
    users, items = users[order], items[order]
    counts = torch.bincount(users, minlength=n_users)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(users.numel(), device=users.device) - starts[users]  # rank within its user
    new = torch.full((n_users, int(counts.max())), -1, dtype=history.dtype, device=history.device)
    new[users, slot] = items
    both = torch.cat([history, new], dim=1)  # [U, L + M]
    valid = both >= 0
    # Stable sort puts invalid slots first, valid ones after in their original order.
    keys = valid.to(torch.int8)
    idx = torch.sort(keys, dim=1, stable=True).indices
    return both.gather(1, idx)[:, -length:]


class MultiTaskRanker:
    """MMoE / shared-bottom / single-task ranker with one of the position-handling modes."""

    def __init__(self, config: SimConfig, world: World, dist: Dist | None = None) -> None:
        from towers.ranking import RankingModel, RankingSpec

        rc = self.rc = config.ranker
        self.config = config
        self.slate_size = config.policy.slate_size
        self.device_names = world.device_names
        arch = {"mmoe": "mmoe", "shared_bottom": "shared_bottom", "single_task": "shared_bottom"}[rc.name]
        self.spec = RankingSpec(
            n_users=world.n_users,
            n_items=world.n_items_total,
            n_categories=world.n_categories,
            n_devices=len(world.device_names),
            slate_size=self.slate_size,
            arch=arch,
            n_tasks=1 if rc.name == "single_task" else 2,
            embed_dim=rc.dim,
            hidden=rc.hidden,
            n_experts=rc.experts,
            expert_dim=rc.expert_dim,
            tower_dim=rc.tower_dim,
            gate_dropout=rc.gate_dropout if arch == "mmoe" else 0.0,
            position=rc.position,
            position_dropout=rc.position_dropout,
            observation_dropout=rc.observation_dropout,
            reversal_weight=rc.reversal_weight,
            sparse=rc.sparse_embeddings,
        )
        # Weights are drawn on the CPU (same on every device), then moved.
        self._make = lambda round_: RankingModel(self.spec, generator(config.seed, round_, "ranker-init")).to(
            self.device
        )
        self.dist = dist
        self.device = torch.device(config.device)
        self.model_ = self._make(SETUP_ROUND)
        self.loss_ = BatchLoss(self.model_, config.mitigations)
        self.opt_ = self._optimizer()
        self.trainer_: ShardedTrainer | None = None
        dev = self.device
        self.history_ = torch.full((world.n_users, rc.history_len), -1, dtype=torch.long, device=dev)
        self.exposure_ = torch.zeros(world.n_items_total, device=dev)
        self.snapshots_: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        n_cells = len(world.device_names) * self.slate_size
        self.explore_clicks_ = torch.zeros(n_cells, device=dev)
        self.explore_shows_ = torch.zeros(n_cells, device=dev)
        self.last_batch_: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        """Everything fitted: weights, optimizer states, the feature state and its snapshots."""
        return {
            "model": self.model_.state_dict(),
            "opt": self.opt_.state_dict(),
            "history": self.history_,
            "exposure": self.exposure_,
            "snapshots": [[r, h, e] for r, (h, e) in sorted(self.snapshots_.items())],
            "explore_clicks": self.explore_clicks_,
            "explore_shows": self.explore_shows_,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = self.device
        for name in ("history", "exposure", "explore_clicks", "explore_shows"):
            want = getattr(self, f"{name}_").shape
            if state[name].shape != want:
                raise ValueError(f"{name} has shape {tuple(state[name].shape)}, expected {tuple(want)}")
        self.model_.load_state_dict(state["model"])
        self.opt_.load_state_dict(state["opt"])
        self.history_, self.exposure_ = state["history"].to(dev), state["exposure"].to(dev)
        self.snapshots_ = {int(r): (h.to(dev), e.to(dev)) for r, h, e in state["snapshots"]}
        self.explore_clicks_ = state["explore_clicks"].to(dev)
        self.explore_shows_ = state["explore_shows"].to(dev)

    def _optimizer(self) -> Optimizers:
        """Adam over the dense parameters (the position channel at ``position_lr``); with
        ``sparse_embeddings`` the tables get Adagrad on their sparse gradients (rows seen only)."""
        m, rc = self.model_, self.rc
        position = [
            p for mod in (m.tower, m.pos_proj, m.adversary) if mod is not None for p in mod.parameters()
        ]
        sparse = m.embedding_parameters() if rc.sparse_embeddings else []
        ids = {id(p) for p in position + sparse}
        rest = [p for p in m.parameters() if id(p) not in ids]
        groups = [{"params": rest}] + ([{"params": position, "lr": rc.position_lr}] if position else [])
        opts = [torch.optim.Adam(groups, lr=rc.learning_rate, weight_decay=rc.weight_decay)]
        if sparse:
            opts.append(torch.optim.Adagrad(sparse, lr=rc.embedding_lr, eps=ADAGRAD_EPS))
        return Optimizers(opts)

    # -- features ----------------------------------------------------------------------------------
    def _item_dense(
        self, world: World, items: torch.Tensor, round_: int, exposure: torch.Tensor
    ) -> torch.Tensor:
        """[N] items -> [N, 2]: item age in rounds (scaled), log1p of past exposure count."""
        age = (round_ - world.item_birth[items]).clamp_min(0).float() / 10.0
        return torch.stack([age, torch.log1p(exposure[items])], dim=1)

    def _item_parts(self, world: World, round_: int, exposure: torch.Tensor) -> torch.Tensor:
        """[N_total, H] item side of the shared layer for serving at ``round_`` given the items'
        past exposure counts [N_total]."""
        items = torch.arange(world.n_items_total, device=self.device)
        dense = self._item_dense(world, items, round_, exposure)
        return self.model_.item_part(items, world.item_category, dense)

    # -- serving -----------------------------------------------------------------------------------
    def _served_logits(
        self, world: World, users: torch.Tensor, items: torch.Tensor, round_: int, at_top: bool
    ) -> torch.Tensor:
        """[B], [B, C] -> [B, C, T] task logits as served: position missing (``at_top`` False) or
        at position 1 of the user's device (``at_top`` True)."""
        from towers.position import position_cells

        model, spec = self.model_, self.spec
        model.eval()
        with torch.inference_mode():
            device = world.user_device[users]
            up = model.user_part(users, device, self.history_[users])  # [B, H]
            ip = self._item_parts(world, round_, self.exposure_)  # [N, H]
            top_cells = position_cells(torch.ones_like(device), device, self.slate_size)  # [B]
            pos = model.position_part(top_cells)  # [B, H] or 0
            bias = torch.zeros(len(users), device=self.device)
            if spec.position in ("shallow_tower", "obs_dropout", "grad_reversal"):
                bias = model.bias(top_cells) if at_top else model.bias(torch.zeros_like(top_cells))
            n_users, n_cand = items.shape
            out = torch.empty(n_users, n_cand, spec.n_tasks, device=self.device)
            step = max(1, SCORE_CHUNK // max(n_cand, 1))
            for s in range(0, n_users, step):  # chunks of users, not a per-user loop
                pre = up[s : s + step, None] + ip[items[s : s + step]]  # [b, C, H]
                if not isinstance(pos, float):
                    pre = pre + pos[s : s + step, None]
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.rc.serve_bf16):
                    logits, _, _ = model(pre.reshape(-1, spec.hidden))
                logits = logits.float()
                logits = logits.view(-1, n_cand, spec.n_tasks)
                logits[..., 0] += bias[s : s + step, None]
                out[s : s + step] = logits
            return out

    def score(self, world: World, users: torch.Tensor, items: torch.Tensor, round_: int) -> torch.Tensor:
        """[B, C] serving score = w_c p_click + w_s p_click p_sat (p_sat = 1 for single-task)."""
        logits = self._served_logits(world, users, items, round_, at_top=False)
        p_click = torch.sigmoid(logits[..., 0])
        if self.spec.n_tasks == 1:
            return p_click
        return self.rc.click_weight * p_click + self.rc.satisfaction_weight * p_click * torch.sigmoid(
            logits[..., 1]
        )

    def predict_proba(self, world: World, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, C] predicted P(click | examined at position 1) (relevance estimate)."""
        round_ = max(self.snapshots_, default=-1) + 1
        return torch.sigmoid(self._served_logits(world, users, items, round_, at_top=True)[..., 0])

    # -- what the position channel learned -------------------------------------------------------
    def learned_position_curve(self) -> torch.Tensor | None:
        """[V, K] learned log-examination offsets relative to position 1: the bias tower's (tower
        modes), log theta_hat of the estimated propensities (ips with ``ips_source="estimated"``),
        else None."""
        if self.spec.position == "ips" and self.rc.ips_source == "estimated":
            return self.estimated_examination().log()
        return self.model_.examination_curve()

    def position_components(
        self, world: World, users: torch.Tensor, items: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Split the training-time click score of impressions into (relevance part, position part).

        users [B], items [B, K], positions [B, K] (1-based) -> two [B, K] tensors, or None when the
        model has no position input (none, ips). The impressions are those of the last fitted round,
        scored by the fitted model with the features they were served with. Tower modes:
        (f, g(cell)); pal: (log sigmoid f, log sigmoid g(cell)); feature: (f(x, position 1),
        f(x, cell) - f(x, position 1)).
        """
        from towers.position import position_cells

        mode, model = self.spec.position, self.model_
        if mode in ("none", "ips"):
            return None
        model.eval()
        with torch.inference_mode():
            n_users, k = items.shape
            served = max(self.snapshots_)
            history, exposure = self.snapshots_[served]
            ip_all = self._item_parts(world, served, exposure)  # [N, H]
            parts = torch.empty(2, n_users, k, device=self.device)
            step = max(1, SCORE_CHUNK // k)
            for s in range(0, n_users, step):  # chunks of users
                u, it, pos = users[s : s + step], items[s : s + step], positions[s : s + step]
                b = len(u)
                device = world.user_device[u][:, None].expand(b, k)
                up = model.user_part(u, device[:, 0], history[u])[:, None]  # [b, 1, H]
                pre = (up + ip_all[it]).reshape(-1, self.spec.hidden)  # [b*K, H]
                cells = position_cells(pos, device, self.slate_size).reshape(-1)
                top = position_cells(torch.ones_like(pos), device, self.slate_size).reshape(-1)
                f_top = model(pre + model.position_part(top))[0][:, 0].view(b, k)
                if mode == "feature":
                    f_cell = model(pre + model.position_part(cells))[0][:, 0].view(b, k)
                    parts[0, s : s + step], parts[1, s : s + step] = f_top, f_cell - f_top
                    continue
                g = model.bias(cells).view(b, k)
                if mode == "pal":
                    f_top, g = torch.nn.functional.logsigmoid(f_top), torch.nn.functional.logsigmoid(g)
                parts[0, s : s + step], parts[1, s : s + step] = f_top, g
            return parts[0], parts[1]

    # -- training ----------------------------------------------------------------------------------
    def _ips_weights(
        self, frame: pl.DataFrame, positions: torch.Tensor, devices: torch.Tensor
    ) -> torch.Tensor:
        """[M] inverse-propensity weights 1 / theta, clipped at ``ips_clip``."""
        if self.rc.ips_source == "logged":
            theta = self._col(frame, "examination", torch.float32)
        else:
            theta = self.estimated_examination().reshape(-1)[devices * self.slate_size + positions - 1]
        return (1.0 / theta.clamp_min(1e-6)).clamp(max=self.rc.ips_clip)

    def estimated_examination(self) -> torch.Tensor:
        """[V, K] theta_hat(k, d) = CTR(k, d) / CTR(1, d) on random slates seen so far (1 where unseen)."""
        ctr = (self.explore_clicks_ / self.explore_shows_.clamp_min(1)).view(-1, self.slate_size)
        rel = ctr / ctr[:, :1].clamp_min(1e-6)
        return torch.where(ctr[:, :1] > 0, rel.clamp(1e-3, 1.0), torch.ones_like(rel))

    def _update_state(self, frame: pl.DataFrame, round_: int) -> None:
        """Snapshot the features of ``round_``, then add its clicks and exposures."""
        self.snapshots_[round_] = (self.history_.clone(), self.exposure_.clone())
        now = frame.filter(pl.col("round") == round_).sort("user", "position")
        items = self._col(now, "item", torch.long)
        self.exposure_ += torch.bincount(items, minlength=len(self.exposure_)).float()
        clicked = now.filter(pl.col("click"))
        self.history_ = append_history(
            self.history_, self._col(clicked, "user", torch.long), self._col(clicked, "item", torch.long)
        )
        explore = now.filter(pl.col("exploration"))
        if explore.height:
            cells = (
                self._device_index(explore) * self.slate_size + self._col(explore, "position", torch.long) - 1
            )
            self.explore_shows_ += torch.bincount(cells, minlength=len(self.explore_shows_)).float()
            self.explore_clicks_ += torch.bincount(
                cells, weights=self._col(explore, "click", torch.float32), minlength=len(self.explore_clicks_)
            )

    def _col(self, frame: pl.DataFrame, name: str, dtype: torch.dtype) -> torch.Tensor:
        """A log column as a tensor on the ranker's device."""
        return _col(frame, name, dtype).to(self.device)

    def _device_index(self, frame: pl.DataFrame) -> torch.Tensor:
        codes = frame["device"].cast(pl.Enum(list(self.device_names))).to_physical().to_numpy()
        return torch.from_numpy(codes.astype("int64")).to(self.device)

    def fit(
        self, logs: pl.DataFrame, world: World, round_: int, latest: pl.DataFrame | None = None
    ) -> dict[str, float]:
        """Retrain on ``logs`` (the window's rows); ``latest``, the round's every row when ``logs``
        hold only this rank's users, updates the history and exposure features."""
        from towers.position import position_cells

        rc = self.rc
        self._update_state(logs if latest is None else latest, round_)
        first = int(logs["round"].min())
        self.snapshots_ = {r: s for r, s in self.snapshots_.items() if r >= first}
        if not rc.warm_start:
            self.model_ = self._make(round_)
            self.loss_ = BatchLoss(self.model_, self.config.mitigations)
            self.opt_ = self._optimizer()
        # Training rows with their features as of serving time.
        rounds = self._col(logs, "round", torch.long)
        users = self._col(logs, "user", torch.long)
        items = self._col(logs, "item", torch.long)
        positions = self._col(logs, "position", torch.long)
        devices = self._device_index(logs)
        clicks = self._col(logs, "click", torch.float32)
        satisfied = torch.from_numpy(logs["satisfaction"].fill_null(False).to_numpy(writable=True))
        satisfied = satisfied.float().to(self.device)
        history = torch.empty(len(users), rc.history_len, dtype=torch.long, device=self.device)
        exposure = torch.empty(len(users), device=self.device)
        for r, (hist, expo) in self.snapshots_.items():  # one vectorized gather per round of the window
            rows = rounds == r
            history[rows] = hist[users[rows]]
            exposure[rows] = expo[items[rows]]
        age = (rounds - world.item_birth[items]).clamp_min(0).float() / 10.0
        dense = torch.stack([age, torch.log1p(exposure)], dim=1)
        category = world.item_category[items]
        cells = position_cells(positions, devices, self.slate_size)
        weights = self._ips_weights(logs, positions, devices) if rc.position == "ips" else None
        sample_weight = self._sample_weights(logs, clicks, category)
        return self._train(
            (users, devices, history, items, category, dense, cells, positions, clicks, satisfied, weights),
            generator(self.config.seed, round_, "ranker-fit", self.device),
            sample_weight,
        )

    def _sample_weights(
        self, logs: pl.DataFrame, clicks: torch.Tensor, category: torch.Tensor
    ) -> torch.Tensor | None:
        """Per-row click-loss weights from the sign split and the slate rubric (None: all 1)."""
        mit = self.config.mitigations
        weight = None
        if mit.sign_split != "none":
            weight = sign_split_weights(clicks > 0, mit.sign_split, mit.w_lambda)
        if mit.gate != "none":
            slate = (
                torch.from_numpy(
                    logs.select(pl.struct("round", "user").rank("dense"))
                    .to_series()
                    .to_numpy()
                    .astype("int64")
                )
                - 1
            ).to(self.device)  # one id per (round, user) slate
            gate = slate_gate_weights(slate, category, mit.diversity_floor, mit.gate, mit.dense_penalty)
            weight = gate if weight is None else weight * gate
        return weight

    def _train(
        self, data: tuple, gen: torch.Generator, sample_weight: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Adam over shuffled minibatches; ``sample_weight`` [n] weights each row's click loss.

        Under ``--distributed`` each rank steps through its own rows with ``batch / N`` per step
        (the same number of steps on every rank, its rows reused cyclically where it has fewer),
        through the sharded model; the trained weights are then copied into the serving model.
        """
        rc = self.rc
        rows = (*data, sample_weight)
        n = len(data[0])
        ctx = self.dist
        batch = rc.batch if ctx is None else max(1, rc.batch // ctx.world_size)
        steps = -(-n // batch)
        if ctx is not None:
            if n == 0:
                raise ValueError(
                    f"rank {ctx.rank} has no training rows: too few users for {ctx.world_size} ranks"
                )
            steps = ctx.max_int(steps)
        trainer = self._trainer()
        model = trainer.model if trainer is not None else self.model_
        loss_fn = trainer.step if trainer is not None else self._step
        model.train()
        model.rng = model.net.rng = gen
        totals = [0.0, 0.0, 0.0]  # loss * rows, click loss * rows, rows
        for _ in range(rc.epochs):
            totals = [0.0, 0.0, 0.0]
            order = torch.randperm(n, generator=gen, device=gen.device)
            if ctx is not None:  # equal full batches on every rank: fewer rows are reused cyclically
                order = order.repeat(-(-steps * batch // n))[: steps * batch]
            for s in range(steps):
                b = order[s * batch : (s + 1) * batch]
                batch_rows = [None if t is None else t[b] for t in rows]
                if ctx is not None and self.spec.n_tasks > 1:
                    batch_rows.append(ctx.mean_tensor(batch_rows[8].sum()))  # clicked rows / N
                loss, click_loss = loss_fn(*batch_rows)
                totals[0] += float(loss) * len(b)
                totals[1] += float(click_loss) * len(b)
                totals[2] += len(b)
        model.eval()
        model.rng = model.net.rng = None
        if ctx is not None:
            totals = ctx.sum_floats(totals)
            trainer.sync(self.model_)
        rows_seen = max(totals[2], 1)
        return {"train_loss": totals[0] / rows_seen, "train_click_loss": totals[1] / rows_seen}

    def _step(self, *batch: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One single-process optimizer step -> (loss, click loss)."""
        loss, click_loss = self.loss_(*batch)
        self.opt_.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_.step()
        faults.point("train-step")
        return loss.detach(), click_loss.detach()

    def _trainer(self) -> ShardedTrainer | None:
        """The sharded training model under ``--distributed`` (built once, then warm)."""
        if self.dist is None:
            return None
        if self.trainer_ is None:
            rc = self.rc
            copy_ = private_copy(self.model_)
            self.trainer_ = ShardedTrainer(
                BatchLoss(copy_, self.config.mitigations),
                copy_,
                self.dist,
                rc.learning_rate,
                rc.embedding_lr,
                rc.position_lr,
                rc.weight_decay,
            )
        return self.trainer_


class BatchLoss(nn.Module):
    """The training loss of one minibatch, as a module (what DistributedModelParallel wraps).

    Inputs are the columns of the batch ([M] or [M, L] for the history): users, devices,
    history, items, category, dense [M, 2], cells, positions, clicks, satisfied, ips weights
    (or None), per-row click-loss weights (or None), and under ``--distributed`` the number of
    clicked rows of the global batch divided by the number of ranks. Returns (loss, click loss).
    The invariance penalty and slate gate are computed on each rank's share of the batch.
    """

    def __init__(self, model: nn.Module, mitigations: MitigationConfig) -> None:
        super().__init__()
        self.model = model
        self.mit = mitigations

    def forward(
        self,
        users: torch.Tensor,
        devices: torch.Tensor,
        history: torch.Tensor,
        items: torch.Tensor,
        category: torch.Tensor,
        dense: torch.Tensor,
        cells: torch.Tensor,
        positions: torch.Tensor,
        clicks: torch.Tensor,
        satisfied: torch.Tensor,
        weights: torch.Tensor | None,
        sample_weight: torch.Tensor | None,
        clicked_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model, mit = self.model, self.mit
        pre = model.user_part(users, devices, history) + model.item_part(items, category, dense)
        pre = pre + model.position_part(cells)
        logits, _, mixed = model(pre)
        click_loss, p_click = model.training_click(
            logits, mixed, cells, positions, clicks, weights, sample_weight
        )
        loss = click_loss
        if mit.invariance_weight > 0:  # the click score must not vary with position
            labels = clicks if mit.invariance_conditional else None
            score = torch.logit(p_click.clamp(1e-6, 1 - 1e-6))  # the trained click logit
            loss = loss + mit.invariance_weight * invariance_penalty(score, positions, labels)
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
