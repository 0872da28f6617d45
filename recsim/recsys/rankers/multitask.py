"""Multi-task rankers (MMoE, shared-bottom, single-task) retrained on their own logs.

The fitted feature state (history bags, exposure counts, exploration statistics) is in
:mod:`.features`; one minibatch's loss in :mod:`.multitask_loss`; the network in
:mod:`towers.ranking`. Training per round: Adam over the window's impressions in shuffled
minibatches; click loss by position mode plus the satisfaction loss on clicked impressions.
Scoring runs under ``torch.inference_mode()``, users in chunks, user and item parts computed once.
Shapes: B users, C candidates, K slate size, N items, H hidden, T tasks, V devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import polars as pl
import torch
from pydantic import Field

from recsim.core import faults
from recsim.core.batches import minibatches
from recsim.core.rng import SETUP_ROUND, generator
from recsim.mitigations.gates import slate_gate_weights
from recsim.mitigations.sign_split import sign_split_weights
from recsim.recsys.config import RankerConfig, RankerKind, TrainableConfig
from recsim.recsys.distributed import ADAGRAD_EPS, Dist, ShardedTrainer, private_copy
from recsim.recsys.rankers.features import ClickFeatures, append_history
from recsim.recsys.rankers.multitask_loss import BatchLoss, TrainBatch
from recsim.recsys.rankers.training import FlatAdam, Optimizers, RowAdagrad
from recsim.recsys.world import World, shared_row

if TYPE_CHECKING:
    from recsim.config import SimConfig
    from towers.ranking import TrainStreams

__all__ = ["KIND", "MultiTaskConfig", "MultiTaskRanker", "append_history"]

SCORE_CHUNK = 4096  # (user, candidate) pairs per scoring chunk: small enough to stay in cache
SCORE_CHUNK_BF16 = 8192  # bfloat16 serving: half the bytes of h per pair, 10% faster than 4096 here
TOWER_MODES = ("shallow_tower", "obs_dropout", "grad_reversal")


class MultiTaskConfig(TrainableConfig):
    """``mmoe`` (multi-gate mixture of experts, click and satisfaction tasks), ``shared_bottom``
    (its parameter-matched shared-bottom baseline) or ``single_task`` (click task only)."""

    default_batch: ClassVar[int] = 4096
    default_lr: ClassVar[float] = 0.003

    name: Literal["mmoe", "shared_bottom", "single_task"] = "mmoe"
    hidden: int = Field(128, gt=0)
    """Width of the shared hidden layer (H)."""
    experts: int = Field(8, gt=0)
    """Number of experts (E)."""
    expert_dim: int = Field(32, gt=0)
    """Width of each expert (X)."""
    tower_dim: int = Field(16, gt=0)
    """Hidden width of each task tower."""
    gate_dropout: float = Field(0.1, ge=0, lt=1)
    """MMoE: probability of zeroing each expert's gate weight in training (renormalized)."""
    position: Literal["none", "feature", "shallow_tower", "obs_dropout", "grad_reversal", "ips", "pal"] = (
        "none"
    )
    """Position-bias handling. none; feature (position x device as an input,
    served at position 1); shallow_tower (additive bias tower, dropped at serving); obs_dropout and
    grad_reversal (the shallow tower with Zhang et al. 2023's de-confounding); ips (clicks
    reweighted by 1 / examination); pal (P(seen | position) x P(click | seen, x))."""
    position_dropout: float = Field(0.1, ge=0, le=1)
    """Tower-like modes: probability that the position feature is replaced by 'missing' in training."""
    observation_dropout: float = Field(0.5, ge=0, le=1)
    """obs_dropout: probability that the bias tower's output is zeroed in training."""
    position_lr: float = Field(0.05, gt=0)
    """Adam learning rate of the position channel (bias tower, position embedding, adversary):
    a few parameters that every example updates, whose offsets reach several logits."""
    reversal_weight: float = Field(1.0, ge=0)
    """grad_reversal: weight of the reversed gradient of the position adversary."""
    ips_source: Literal["logged", "estimated"] = "logged"
    """ips: examination probabilities from the log (true theta) or estimated from the click rates
    by (position, device) of the random (exploration) slates seen so far."""
    ips_clip: float = Field(20.0, ge=1)
    """ips: the largest inverse-propensity weight."""
    history_len: int = Field(20, gt=0)
    """Length of the user-history bag of recently clicked items (L)."""
    sparse_embeddings: bool = False
    """Embedding tables get sparse gradients and Adagrad (at ``embedding_lr``)
    that touches only the rows of each batch, so a step costs the same whatever the table size
    (needed for million-user worlds, and the rule of the sharded tables under ``--distributed``).
    The default trains the tables with the dense layers' Adam."""
    embedding_lr: float = Field(0.05, gt=0)
    """sparse_embeddings: Adagrad learning rate of the embedding tables."""
    serve_bf16: bool = False
    """Score candidates with the experts' and gates' products in bfloat16 and the rest in float32
    (1.4x faster on CPUs with AMX, the product itself 6x; logits differ from float32 by up to
    ~3e-4, so near-ties may order differently)."""
    train_bf16: bool = False
    """Train with the experts' and gates' products in bfloat16, forward and backward (inputs and
    weights rounded to bfloat16, float32 accumulation, outputs rounded and widened, as
    ``torch.autocast`` does); the weights, their gradients, Adam and every other op stay float32.
    On CPUs with bfloat16 dot products these products run several times faster than in float32
    (the experts' [8192 x 128] x [128 x 256]: 4.2x on an AMD Zen 4 with AVX-512 BF16); the
    trained weights differ from float32 training's (``recsim bench --only peer`` times both)."""
    click_weight: float = Field(1.0, ge=0)
    """Serving score = click_weight * p_click + satisfaction_weight * p_click * p_satisfied."""
    satisfaction_weight: float = Field(1.0, ge=0)
    """See click_weight."""

    @property
    def multitask(self) -> bool:
        """The ranker is one of the multi-task networks."""
        return True


def _sharded(rc: RankerConfig) -> str | None:
    """Why ``--distributed`` cannot train this multi-task ranker, or None."""
    assert isinstance(rc, MultiTaskConfig)
    if not (rc.sparse_embeddings and rc.warm_start):
        return (
            "trains its sharded tables with a fused row-sparse optimizer: "
            "set ranker.sparse_embeddings=true (and keep ranker.warm_start=true)"
        )
    return None


class MultiTaskRanker:
    """MMoE / shared-bottom / single-task ranker with one of the position-handling modes."""

    scores_from_fit: ClassVar[bool] = True  # see Ranker: the model and the features fit() updates

    def __init__(self, config: SimConfig, world: World, dist: Dist | None = None) -> None:
        from towers.ranking import RankingModel

        self.rc: MultiTaskConfig = config.ranker  # type: ignore[assignment]
        self.config = config
        self.slate_size = config.policy.slate_size
        self.spec = _spec(self.rc, world, self.slate_size)
        self.dist = dist
        self.device = torch.device(config.device)
        # Weights are drawn on the CPU (same on every device), then moved.
        self._make = lambda round_: _on_device(
            RankingModel(self.spec, generator(config.seed, round_, "ranker-init")), self.device
        )
        self.model_ = self._make(SETUP_ROUND)
        self.loss_ = BatchLoss(self.model_, config.mitigations)
        self.opt_ = self._optimizer()
        self.trainer_: ShardedTrainer | None = None
        self.features_ = ClickFeatures(
            world.n_users,
            world.n_items_total,
            self.rc.history_len,
            world.device_names,
            self.slate_size,
            self.device,
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything fitted: weights, optimizer states, the feature state and its snapshots."""
        return {
            "model": self.model_.state_dict(),
            "opt": self.opt_.state_dict(),
            **self.features_.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.features_.load_state_dict(state)
        self.model_.load_state_dict(state["model"])
        self.opt_.load_state_dict(_flat_adam_states(state["opt"], self.opt_))

    def _optimizer(self) -> Optimizers:
        return make_optimizer(self.model_, self.rc)

    # -- serving -----------------------------------------------------------------------------------
    def _item_parts(self, world: World, round_: int, exposure: torch.Tensor) -> torch.Tensor:
        """[N_total, H] item side of the shared layer for serving at ``round_`` given the items'
        past exposure counts [N_total]."""
        items = torch.arange(world.n_items_total, device=self.device)
        return self.model_.item_part(items, world.item_category, _item_dense(world, items, round_, exposure))

    def _served_logits(
        self,
        world: World,
        users: torch.Tensor,
        items: torch.Tensor,
        round_: int,
        at_top: bool,
        keep_click: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """[B], [B, C] -> (task logits [B, C, T] as served: position missing (``at_top`` False) or
        at position 1 of the user's device (``at_top`` True); with ``keep_click`` the click
        logits [B, C] before the position's bias, else None; that bias at position 1 [B]).

        Tower modes add their bias tower's g(cell) to the click logit; the other modes add 0."""
        from towers.position import position_cells

        model, spec = self.model_, self.spec
        model.eval()
        with torch.inference_mode():
            device = world.user_device[users]
            up = model.user_part(users, device, self.features_.history[users])  # [B, H]
            ip = self._item_parts(world, round_, self.features_.exposure)  # [N, H]
            top_cells = position_cells(torch.ones_like(device), device, self.slate_size)  # [B]
            pos = model.position_part(top_cells)  # [B, H] or 0
            bias = top = torch.zeros(len(users), device=self.device)
            if spec.position in TOWER_MODES:
                top = model.bias(top_cells)
                bias = top if at_top else model.bias(torch.zeros_like(top_cells))
            n_users, n_cand = items.shape
            out = torch.empty(n_users, n_cand, spec.n_tasks, device=self.device)
            click = torch.empty(n_users, n_cand, device=self.device) if keep_click else None
            pairs = SCORE_CHUNK_BF16 if self.rc.serve_bf16 else SCORE_CHUNK
            step = max(1, pairs // max(n_cand, 1))
            row = shared_row(items)
            ip_row = ip[row][None] if row is not None else None  # [1, C, H]: every user's candidates
            # bfloat16 serving: the first layer's weights cast once per call (see MultiTaskNet.serve)
            weights = model.net.serving_weights(torch.bfloat16 if self.rc.serve_bf16 else None)
            for s in range(0, n_users, step):  # chunks of users, not a per-user loop
                if ip_row is not None:
                    item_part = ip_row
                else:  # = ip[items[s : s + step]], a quarter of the time
                    chunk = items[s : s + step]
                    item_part = ip.index_select(0, chunk.reshape(-1)).view(*chunk.shape, -1)
                pre = up[s : s + step, None] + item_part  # [b, C, H]
                if not isinstance(pos, float):
                    pre = pre + pos[s : s + step, None]
                logits = model.serve(pre.reshape(-1, spec.hidden), weights)
                logits = logits.view(-1, n_cand, spec.n_tasks)
                if click is not None:
                    click[s : s + step] = logits[..., 0]
                logits[..., 0] += bias[s : s + step, None]
                out[s : s + step] = logits
            return out, click, top

    def _scores_of(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, C] serving score = w_c p_click + w_s p_click p_sat (p_sat = 1 for single-task) from
        logits [B, C, T] served with the position missing."""
        p_click = torch.sigmoid(logits[..., 0])
        if self.spec.n_tasks == 1:
            return p_click
        # w_c p + (w_s p) sigmoid(l_sat) with two [B, C] temporaries fewer: products commute, so
        # the in-place order gives the same values bit for bit
        satisfied = torch.sigmoid(logits[..., 1]).mul_(self.rc.satisfaction_weight * p_click)
        return p_click.mul_(self.rc.click_weight).add_(satisfied)

    @property
    def objective(self) -> tuple[float, float]:
        """(w_c, w_s) of the objective it serves, w_c P(click) + w_s P(click) P(satisfied): the
        serving score's weights; (1, 0) for single-task (it scores P(click) alone)."""
        if self.spec.n_tasks == 1:
            return (1.0, 0.0)
        return (float(self.rc.click_weight), float(self.rc.satisfaction_weight))

    def score(self, world: World, users: torch.Tensor, items: torch.Tensor, round_: int) -> torch.Tensor:
        """[B, C] serving score = w_c p_click + w_s p_click p_sat (p_sat = 1 for single-task)."""
        return self._scores_of(self._served_logits(world, users, items, round_, at_top=False)[0])

    def predict_proba(self, world: World, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, C] predicted P(click | examined at position 1) (relevance estimate)."""
        round_ = max(self.features_.snapshots, default=-1) + 1
        return torch.sigmoid(self._served_logits(world, users, items, round_, at_top=True)[0][..., 0])

    def score_and_predict(
        self, world: World, users: torch.Tensor, items: torch.Tensor, round_: int
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """``score``'s [B, C] and a function from positions [B, K] into ``items`` to
        ``predict_proba``'s [B, K] for those pairs, from one forward pass (the shown items are
        not scored again): the network's logits are the same, the score puts the position
        missing into the click logit and the prediction position 1.

        The same values bit for bit as the two calls (``tests/test_speed.py`` compares them, and
        whole runs): a pair's logits do not depend on the other pairs of its chunk here, and the
        sigmoid runs on the click column of a [B, K, T] tensor as ``predict_proba``'s does (on a
        strided column and on a contiguous tensor it rounds differently in the last bit: the
        scalar and the vectorized kernel)."""
        logits, click, top = self._served_logits(world, users, items, round_, at_top=False, keep_click=True)
        if round_ != max(self.features_.snapshots, default=-1) + 1:  # predict_proba serves another round

            def predicted(pick: torch.Tensor) -> torch.Tensor:
                return self.predict_proba(world, users, items.gather(1, pick))

        else:

            def predicted(pick: torch.Tensor) -> torch.Tensor:
                shown = torch.empty(*pick.shape, self.spec.n_tasks, device=pick.device)
                shown[..., 0] = click.gather(1, pick) + top[:, None]
                return torch.sigmoid(shown[..., 0])

        return self._scores_of(logits), predicted

    # -- what the position channel learned -------------------------------------------------------
    def learned_position_curve(self) -> torch.Tensor | None:
        """[V, K] learned log-examination offsets relative to position 1: the bias tower's (tower
        modes), log theta_hat of the estimated propensities (ips with ``ips_source="estimated"``),
        else None."""
        if self.spec.position == "ips" and self.rc.ips_source == "estimated":
            return self.features_.estimated_examination().log()
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
            served = max(self.features_.snapshots)
            history, exposure = self.features_.snapshots[served]
            ip_all = self._item_parts(world, served, exposure)  # [N, H]
            device_all = world.user_device[users]
            up_all = model.user_part(users, device_all, history[users])  # [B, H], once
            weights = model.net.serving_weights()  # float32: serve() is forward() bit for bit
            parts = torch.empty(2, n_users, k, device=self.device)
            step = max(1, SCORE_CHUNK // k)
            for s in range(0, n_users, step):  # chunks of users
                it, pos = items[s : s + step], positions[s : s + step]
                b = len(it)
                device = device_all[s : s + step, None].expand(b, k)
                item_part = ip_all.index_select(0, it.reshape(-1)).view(b, k, -1)
                pre = (up_all[s : s + step, None] + item_part).reshape(-1, self.spec.hidden)  # [b*K, H]
                cells = position_cells(pos, device, self.slate_size).reshape(-1)
                if mode == "feature":
                    top = position_cells(torch.ones_like(pos), device, self.slate_size).reshape(-1)
                    # serve() overwrites its input: each call gets its own sum
                    f_top = model.serve(pre + model.position_part(top), weights)[:, 0].view(b, k)
                    f_cell = model.serve(pre + model.position_part(cells), weights)[:, 0].view(b, k)
                    parts[0, s : s + step], parts[1, s : s + step] = f_top, f_cell - f_top
                    continue
                f_top = model.serve(pre, weights)[:, 0].view(b, k)  # no position input to add
                g = model.bias(cells).view(b, k)
                if mode == "pal":
                    f_top, g = torch.nn.functional.logsigmoid(f_top), torch.nn.functional.logsigmoid(g)
                parts[0, s : s + step], parts[1, s : s + step] = f_top, g
            return parts[0], parts[1]

    # -- training ----------------------------------------------------------------------------------
    def fit(
        self, logs: pl.DataFrame, world: World, round_: int, latest: pl.DataFrame | None = None
    ) -> dict[str, float]:
        """Retrain on ``logs`` (the window's rows); ``latest``, the round's every row when ``logs``
        hold only this rank's users, updates the history and exposure features."""
        feats = self.features_
        feats.update(logs if latest is None else latest, round_)
        feats.keep_from(int(logs["round"].min()))
        if not self.rc.warm_start:
            self.model_ = self._make(round_)
            self.loss_ = BatchLoss(self.model_, self.config.mitigations)
            self.opt_ = self._optimizer()
        return self._train(self._batch(logs, world), fit_streams(self.config.seed, round_, self.device))

    def _batch(self, logs: pl.DataFrame, world: World) -> TrainBatch:
        """The window's rows with their features as of serving time."""
        from towers.position import position_cells

        col, rc = self.features_.col, self.rc
        rounds, users, items = (
            col(logs, "round", torch.long),
            col(logs, "user", torch.long),
            col(logs, "item", torch.long),
        )
        positions, devices = col(logs, "position", torch.long), self.features_.device_index(logs)
        clicks = col(logs, "click", torch.float32)
        satisfied = torch.from_numpy(logs["satisfaction"].fill_null(False).to_numpy(writable=True))
        history, exposure = self.features_.as_served(rounds, users, items)
        age = (rounds - world.item_birth[items]).clamp_min(0).float() / 10.0
        category = world.item_category[items]
        return TrainBatch(
            users=users,
            devices=devices,
            history=history,
            items=items,
            category=category,
            dense=torch.stack([age, torch.log1p(exposure)], dim=1),
            cells=position_cells(positions, devices, self.slate_size),
            positions=positions,
            clicks=clicks,
            satisfied=satisfied.float().to(self.device),
            ips_weights=self._ips_weights(logs, positions, devices) if rc.position == "ips" else None,
            sample_weight=self._sample_weights(logs, clicks, category),
        )

    def _ips_weights(
        self, frame: pl.DataFrame, positions: torch.Tensor, devices: torch.Tensor
    ) -> torch.Tensor:
        """[M] inverse-propensity weights 1 / theta, clipped at ``ips_clip``."""
        if self.rc.ips_source == "logged":
            theta = self.features_.col(frame, "examination", torch.float32)
        else:
            theta = self.features_.estimated_examination().reshape(-1)[
                devices * self.slate_size + positions - 1
            ]
        return (1.0 / theta.clamp_min(1e-6)).clamp(max=self.rc.ips_clip)

    def _sample_weights(
        self, logs: pl.DataFrame, clicks: torch.Tensor, category: torch.Tensor
    ) -> torch.Tensor | None:
        """Per-row click-loss weights from the sign split and the slate rubric (None: all 1)."""
        mit = self.config.mitigations
        weight = None
        if mit.sign_split != "none":
            weight = sign_split_weights(clicks > 0, mit.sign_split, mit.w_lambda)
        if mit.gate != "none":
            ranks = logs.select(pl.struct("round", "user").rank("dense")).to_series().to_numpy()
            slate = (torch.from_numpy(ranks.astype("int64")) - 1).to(self.device)  # one id per slate
            gate = slate_gate_weights(slate, category, mit.diversity_floor, mit.gate, mit.dense_penalty)
            weight = gate if weight is None else weight * gate
        return weight

    def _train(self, data: TrainBatch, streams: TrainStreams) -> dict[str, float]:
        """Adam over shuffled minibatches of ``data``, each random draw from its own stream.

        Under ``--distributed`` each rank steps through its own rows with ``batch / N`` per step
        (the same number of steps on every rank, its rows reused cyclically where it has fewer),
        through the sharded model; the trained weights are then copied into the serving model.
        """
        rc, ctx, n = self.rc, self.dist, len(data)
        batch = rc.batch if ctx is None else max(1, rc.batch // ctx.world_size)
        total = None
        if ctx is not None:
            if n == 0:
                raise ValueError(
                    f"rank {ctx.rank} has no training rows: too few users for {ctx.world_size} ranks"
                )
            total = ctx.max_int(-(-n // batch)) * batch  # equal full batches on every rank
        trainer = self._trainer()
        model = trainer.model if trainer is not None else self.model_
        loss_fn = trainer.step if trainer is not None else self._step
        model.train()
        model.use_streams(streams)
        totals = [0.0, 0.0, 0.0]  # loss * rows, click loss * rows, rows
        for _ in range(rc.epochs):
            totals = [0.0, 0.0, 0.0]
            for b in minibatches(n, batch, streams.order, total):
                rows = data.take(b)
                clicked = (
                    ctx.mean_tensor(rows.clicks.sum()) if ctx is not None and self.spec.n_tasks > 1 else None
                )
                loss, click_loss = loss_fn(rows, clicked)  # clicked: the global batch's clicks / N
                totals[0] += float(loss) * len(b)
                totals[1] += float(click_loss) * len(b)
                totals[2] += len(b)
        model.eval()
        model.use_streams(None)
        if ctx is not None:
            totals = ctx.sum_floats(totals)
            trainer.sync(self.model_)
        rows_seen = max(totals[2], 1)
        return {"train_loss": totals[0] / rows_seen, "train_click_loss": totals[1] / rows_seen}

    def _step(
        self, batch: TrainBatch, clicked_rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One single-process optimizer step -> (loss, click loss)."""
        loss, click_loss = self.loss_(batch, clicked_rows)
        self.opt_.zero_grad(set_to_none=True)
        self.model_.backward(loss)
        self.opt_.step()
        faults.point("train-step")
        return loss.detach(), click_loss.detach()

    def _trainer(self) -> ShardedTrainer | None:
        """The sharded training model under ``--distributed`` (built once, then warm)."""
        if self.dist is None:
            return None
        if self.trainer_ is None:
            rc, copy_ = self.rc, private_copy(self.model_)
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


#: purpose -> stream name of a fit's random draws (see :class:`towers.ranking.TrainStreams`)
FIT_STREAMS = {
    "order": "ranker-fit",
    "gate": "ranker-gate-dropout",
    "position": "ranker-position-dropout",
    "observation": "ranker-observation-dropout",
}


def fit_streams(seed: int, round_: int, device: torch.device | str = "cpu") -> TrainStreams:
    """The generators of one round's fit, one per purpose, each derived from (seed, round, name)."""
    from towers.ranking import TrainStreams

    return TrainStreams(**{k: generator(seed, round_, name, device) for k, name in FIT_STREAMS.items()})


def _on_device(model: Any, device: torch.device) -> Any:
    """``model`` moved to ``device``; on the CPU its tables train on row gradients (see
    :meth:`towers.ranking.RankingModel.row_gradients`)."""
    model.row_gradients(device.type == "cpu")
    return model.to(device)


def make_optimizer(m: Any, rc: MultiTaskConfig) -> Optimizers:
    """Adam over the dense parameters of ``m``, the position channel at ``position_lr`` (each a
    :class:`FlatAdam`: ``torch.optim.Adam``'s steps bit for bit, one chain of ops per group); with
    ``sparse_embeddings`` the tables get Adagrad on their sparse gradients (rows seen only)."""
    position = [p for mod in (m.tower, m.pos_proj, m.adversary) if mod is not None for p in mod.parameters()]
    sparse = m.embedding_parameters() if rc.sparse_embeddings else []
    ids = {id(p) for p in position + sparse}
    rest = [p for p in m.parameters() if id(p) not in ids]
    opts: list[Any] = [FlatAdam(rest, lr=rc.learning_rate, weight_decay=rc.weight_decay)]
    if position:
        opts.append(FlatAdam(position, lr=rc.position_lr, weight_decay=rc.weight_decay))
    if sparse:
        opts.append(RowAdagrad(sparse, lr=rc.embedding_lr, eps=ADAGRAD_EPS))
    return Optimizers(opts)


def _flat_adam_states(states: list[dict[str, Any]], opt: Optimizers) -> list[dict[str, Any]]:
    """Optimizer states as ``opt`` reads them: a checkpoint from before the dense groups were
    :class:`FlatAdam` holds one ``torch.optim.Adam`` state over both groups, here split and each
    group's per-parameter moments laid end to end, as its flat buffer holds them."""
    if not states or "param_groups" not in states[0]:
        return states
    adam, *rest = states
    ids = [i for group in adam["param_groups"] for i in group["params"]]
    flats, start = [], 0
    for flat in (o for o in opt.optimizers if isinstance(o, FlatAdam)):
        entries = [adam["state"].get(i) for i in ids[start : start + len(flat.params)]]
        start += len(flat.params)
        if not any(entries):  # never stepped
            flats.append(flat.state_dict() | {"steps": 0})
            continue
        if not all(entries) or len({int(e["step"]) for e in entries}) != 1:
            raise ValueError("optimizer state: the parameters of a group were not stepped together")
        moments = {k: torch.cat([e[k].reshape(-1) for e in entries]) for k in ("exp_avg", "exp_avg_sq")}
        flats.append({"steps": int(entries[0]["step"]), **moments})
    return flats + rest


def _item_dense(world: World, items: torch.Tensor, round_: int, exposure: torch.Tensor) -> torch.Tensor:
    """[N] items -> [N, 2]: item age in rounds (scaled), log1p of past exposure count."""
    age = (round_ - world.item_birth[items]).clamp_min(0).float() / 10.0
    return torch.stack([age, torch.log1p(exposure[items])], dim=1)


def _spec(rc: MultiTaskConfig, world: World, slate_size: int) -> Any:
    """The :class:`towers.ranking.RankingSpec` of the ranker section."""
    from towers.ranking import RankingSpec

    arch = {"mmoe": "mmoe", "shared_bottom": "shared_bottom", "single_task": "shared_bottom"}[rc.name]
    return RankingSpec(
        n_users=world.n_users,
        n_items=world.n_items_total,
        n_categories=world.n_categories,
        n_devices=len(world.device_names),
        slate_size=slate_size,
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
        train_bf16=rc.train_bf16,
    )


KIND = RankerKind(MultiTaskConfig, lambda config, world, dist: MultiTaskRanker(config, world, dist), _sharded)
