"""The multi-task ranking model: TorchRec sparse features -> shared hidden layer -> MMoE -> tasks.

Features (one row = one (user, item) impression or candidate):

| side | feature  | kind                                  | table        |
|------|----------|---------------------------------------|--------------|
| user | user     | id                                    | t_user       |
| user | device   | id                                    | t_device     |
| user | history  | jagged bag of recently clicked items (mean-pooled) | t_history |
| item | item     | id                                    | t_item       |
| item | category | id                                    | t_category   |
| item | dense    | item age (rounds), log1p(past exposure count) | -      |

Each side is one ``EmbeddingBagCollection`` over a ``KeyedJaggedTensor``. The shared hidden layer
is linear in the concatenated features, so its pre-activation splits exactly into a user part
[B, H] and an item part [N, H]; scoring B users x C candidates computes each part once and
broadcasts ([B, C, H]) instead of embedding every pair. With ``position="feature"`` a one-hot of
the (position, device) cell adds a third part.

Position handling (``position``) and what each trains and serves (f = click logit of the relevance
path, g = the shallow tower's bias for the impression's (position, device) cell):

| mode           | trained click logit / probability        | served click probability   |
|----------------|------------------------------------------|----------------------------|
| none, ips      | f                                        | sigmoid(f)                 |
| feature        | f(x, cell)                               | sigmoid(f(x, position 1))  |
| shallow_tower  | f + g (cell dropped to missing w.p. 10%) | sigmoid(f + g(missing))    |
| obs_dropout    | as shallow_tower, g zeroed w.p. p_obs     | as shallow_tower           |
| grad_reversal  | as shallow_tower + adversary on position | as shallow_tower           |
| pal            | sigmoid(g) * sigmoid(f)                  | sigmoid(f)                 |

Shapes: B users or examples, N items, C candidates, D embedding dim, H hidden, T tasks, L history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from towers.mmoe import Arch, MultiTaskNet
from towers.position import ShallowTower, grad_reverse
from towers.torchrec_modules import TorchRec

PositionMode = Literal["none", "feature", "shallow_tower", "obs_dropout", "grad_reversal", "ips", "pal"]
TOWER_MODES = ("shallow_tower", "obs_dropout", "grad_reversal", "pal")
N_DENSE = 2


@dataclass(frozen=True)
class RankingSpec:
    """Sizes and switches of a :class:`RankingModel`."""

    n_users: int
    n_items: int
    n_categories: int
    n_devices: int
    slate_size: int
    arch: Arch = "mmoe"
    n_tasks: int = 2
    embed_dim: int = 16
    hidden: int = 128
    n_experts: int = 8
    expert_dim: int = 32
    tower_dim: int = 16
    gate_dropout: float = 0.1
    position: PositionMode = "none"
    position_dropout: float = 0.1
    observation_dropout: float = 0.5
    reversal_weight: float = 1.0
    sparse: bool = False  # embedding tables return sparse gradients (for a row-wise optimizer)
    train_bf16: bool = False  # the experts' and gates' products in bfloat16 in training (MultiTaskNet)


@dataclass(frozen=True)
class TrainStreams:
    """The random draws of one fit, one generator per purpose, so that two models that differ in
    one mechanism share every other draw (common random numbers): models that differ only in
    the position mode see the same minibatch order and the same gate-dropout masks, and the
    tower modes the same position-dropout masks. Each stream is drawn once per minibatch with a
    shape that does not depend on the mode ([M] rows, or [M, T, E] gates).

    Attributes:
        order: each epoch's permutation of the rows (:func:`recsim.core.batches.minibatches`).
        gate: MMoE gate dropout, [M, T, E] per step (:class:`towers.mmoe.MultiTaskNet`).
        position: the tower modes' position feature replaced by 'missing', [M] per step.
        observation: ``obs_dropout``'s zeroed bias-tower output, [M] per step.
    """

    order: torch.Generator
    gate: torch.Generator
    position: torch.Generator
    observation: torch.Generator

    @classmethod
    def seeded(cls, seed: int, device: str | torch.device = "cpu") -> TrainStreams:
        """Four generators seeded ``seed``, ``seed + 1``, ... (benchmarks and tests)."""
        gens = [torch.Generator(device=device).manual_seed(seed + i) for i in range(4)]
        return cls(*gens)


def import_torchrec() -> TorchRec:
    """TorchRec's classes that the model uses, imported lazily and without the parts of TorchRec a
    run does not use (see :mod:`towers.torchrec_modules`)."""
    from towers.torchrec_modules import load

    return load()


def _ebc(tables: list[tuple[str, int, str]], dim: int, gen: torch.Generator) -> nn.Module:
    """An EmbeddingBagCollection of (feature, rows, pooling) tables, initialized from ``gen``."""
    trec = import_torchrec()
    EmbeddingBagCollection, EmbeddingBagConfig, PoolingType = (  # noqa: N806
        trec.EmbeddingBagCollection,
        trec.EmbeddingBagConfig,
        trec.PoolingType,
    )

    configs = [
        EmbeddingBagConfig(
            name=f"t_{feature}",
            embedding_dim=dim,
            num_embeddings=rows,
            feature_names=[feature],
            pooling=PoolingType[pooling],
        )
        for feature, rows, pooling in tables
    ]
    ebc = EmbeddingBagCollection(tables=configs, device=torch.device("cpu"))
    for param in ebc.parameters():
        nn.init.normal_(param, std=0.05, generator=gen)
    return ebc


def _kjt(keys: list[str], columns: list[torch.Tensor], bag: torch.Tensor | None = None):  # noqa: ANN202
    """KeyedJaggedTensor with one id per row for ``columns`` and, if given, a padded bag [B, L]
    (entries < 0 are padding) as the last key."""
    KeyedJaggedTensor = import_torchrec().KeyedJaggedTensor  # noqa: N806

    n = columns[0].shape[0]
    values = list(columns)
    lengths = [torch.ones(n * len(columns), dtype=torch.int32, device=columns[0].device)]
    if bag is not None:
        valid = bag >= 0
        values.append(bag[valid])  # row-major: each row's items in order
        lengths.append(valid.sum(1, dtype=torch.int32))
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=torch.cat(values), lengths=torch.cat(lengths)
    )


class RankingModel(nn.Module):
    """Shapes are given per method; see the module docstring for the features and position modes."""

    def __init__(self, spec: RankingSpec, gen: torch.Generator) -> None:
        super().__init__()
        self.spec = spec
        d, h = spec.embed_dim, spec.hidden
        self.user_ebc = _ebc(
            [
                ("user", spec.n_users, "SUM"),
                ("device", spec.n_devices, "SUM"),
                ("history", spec.n_items, "MEAN"),
            ],
            d,
            gen,
        )
        self.item_ebc = _ebc([("item", spec.n_items, "SUM"), ("category", spec.n_categories, "SUM")], d, gen)
        for bag in self._bags():
            bag.sparse = spec.sparse
        self.user_proj = nn.Linear(3 * d, h)
        self.item_proj = nn.Linear(2 * d + N_DENSE, h, bias=False)
        n_cells = 1 + spec.slate_size * spec.n_devices
        self.pos_proj = nn.Embedding(n_cells, h) if spec.position == "feature" else None
        for layer in (self.user_proj, self.item_proj):
            nn.init.kaiming_uniform_(layer.weight, a=5**0.5, generator=gen)
        nn.init.zeros_(self.user_proj.bias)
        if self.pos_proj is not None:
            nn.init.zeros_(self.pos_proj.weight)
        self.net = MultiTaskNet(
            h,
            spec.n_tasks,
            gen,
            spec.arch,
            spec.n_experts,
            spec.expert_dim,
            spec.tower_dim,
            spec.gate_dropout,
            train_dtype=torch.bfloat16 if spec.train_bf16 else None,
        )
        self.tower = (
            ShallowTower(spec.slate_size, spec.n_devices, gen) if spec.position in TOWER_MODES else None
        )
        self.adversary = (
            nn.Linear(self.net.expert_dim, spec.slate_size) if spec.position == "grad_reversal" else None
        )
        if self.adversary is not None:
            nn.init.normal_(self.adversary.weight, std=0.05, generator=gen)
            nn.init.zeros_(self.adversary.bias)
        self.streams: TrainStreams | None = None  # set by the trainer for the dropouts of a fit

    def use_streams(self, streams: TrainStreams | None) -> None:
        """The generators of the training-time dropouts (None: none set, as at serving)."""
        self.streams = streams
        self.net.rng = streams.gate if streams is not None else None

    def _bags(self) -> list[nn.EmbeddingBag]:
        return [bag for ebc in (self.user_ebc, self.item_ebc) for bag in ebc.embedding_bags.values()]

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The embedding tables' weights (sparse gradients when ``spec.sparse``)."""
        return [bag.weight for bag in self._bags()]

    def row_gradients(self, enabled: bool) -> None:
        """Whether the tables' backward emits row gradients (sparse, one row per looked-up id)
        even where the optimizer is dense (``spec.sparse`` False); :meth:`backward` then sums them
        into dense gradients.

        On the CPU this replaces ``embedding_bag``'s dense backward, which sorts every batch's ids
        (3.8 ms for a 4,096-row history bag against 1 ms here, 0.5 ms against 0.2 ms for a one-id
        table). The gradient is the same sum in another order (equal up to float rounding). Not
        for CUDA, whose ``index_add_`` is not deterministic.
        """
        for bag in self._bags():
            bag.sparse = enabled or self.spec.sparse

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``; with :meth:`row_gradients` on and a dense optimizer, each table's
        row gradient is then summed into its dense ``.grad`` (``index_add_``, rows in batch order).

        A dense ``.grad`` already there (a view of :class:`~recsim.recsys.rankers.training.FlatAdam`'s
        flat gradient) is held aside during the backward and the rows are added into it. Left in
        place, autograd would accumulate the sparse gradient into it itself (``dense += sparse``):
        the same rows added in the same order, so the same values bit for bit, but 4.7 ms for the
        81,852 ids of a 4,096-row history bag here, against 1.8 ms for ``index_add_``.
        """
        bags = [] if self.spec.sparse else [bag for bag in self._bags() if bag.sparse]
        held = [(bag.weight, bag.weight.grad) for bag in bags]
        for weight, _ in held:
            weight.grad = None
        try:
            loss.backward()
        finally:  # the optimizer's views go back even if the backward raised
            for weight, dense in held:
                g = weight.grad  # None (the table not in the loss, or a failed backward) or rows
                if g is not None:
                    dense = dense if dense is not None else torch.zeros_like(weight)
                    dense.index_add_(0, g._indices()[0], g._values())
                weight.grad = dense

    # -- the two sides of the shared hidden layer's pre-activation --------------------------------
    def user_part(self, users: torch.Tensor, device: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """users [B], device [B], history [B, L] (-1 = empty slot) -> [B, H]."""
        emb = self.user_ebc(_kjt(["user", "device", "history"], [users, device], history))
        return self.user_proj(emb.values())  # values(): [B, 3D] in key order

    def item_part(self, items: torch.Tensor, category: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """items [N], category [N], dense [N, 2] -> [N, H]."""
        emb = self.item_ebc(_kjt(["item", "category"], [items, category]))
        return self.item_proj(torch.cat([emb.values(), dense], dim=1))

    def position_part(self, cells: torch.Tensor) -> torch.Tensor | float:
        """cells [M] -> [M, H] (position as a feature), or 0 in every other mode."""
        return self.pos_proj(cells) if self.pos_proj is not None else 0.0

    # -- heads -------------------------------------------------------------------------------------
    def forward(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """pre [M, H] -> (task logits [M, T], gates [M, T, E] | None, tower inputs [M, T, X])."""
        return self.net(pre)

    def serve(self, pre: torch.Tensor, weights: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """pre [M, H] -> task logits [M, T], as ``forward`` without gradients; ``pre`` is overwritten
        and ``weights`` come from ``self.net.serving_weights`` (see :meth:`MultiTaskNet.serve`)."""
        return self.net.serve(pre, weights)

    def bias(self, cells: torch.Tensor) -> torch.Tensor:
        """The shallow tower's logit offset for cells [M] -> [M] (0 where there is no tower)."""
        if self.tower is None:
            return torch.zeros(cells.shape, dtype=torch.float32, device=cells.device)
        return self.tower(cells)

    def training_click(
        self,
        logits: torch.Tensor,
        mixed: torch.Tensor,
        cells: torch.Tensor,
        positions: torch.Tensor,
        clicks: torch.Tensor,
        weights: torch.Tensor | None,
        sample_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Click loss of one batch under the position mode. Returns (loss, P(click) [M]), the
        probability the model assigns to each observed click (for proper-scoring terms).

        logits [M, T], mixed [M, T, X], cells/positions [M], clicks [M] float, weights [M] (ips
        propensity weights) or None, sample_weight [M] per-example loss weights or None.
        """
        mode, spec = self.spec.position, self.spec
        f = logits[:, 0]
        bce = nn.functional.binary_cross_entropy_with_logits
        w = sample_weight if sample_weight is not None else torch.ones_like(f)
        extra = f.sum() * 0.0
        if mode in ("none", "feature"):
            logit = f
            per = bce(logit, clicks, reduction="none")
        elif mode == "ips":
            # Pointwise IPS (Saito et al. 2020): soft label c / theta, unbiased for relevance.
            logit = f
            per = bce(logit, clicks * weights, reduction="none")
        else:
            if self.streams is None:
                raise RuntimeError("position dropout in training needs generators: call use_streams")
            assert self.tower is not None
            streams = self.streams
            drop = (
                torch.rand(cells.shape, generator=streams.position, device=cells.device)
                < spec.position_dropout
            )
            cells = torch.where(drop, torch.zeros_like(cells), cells)
            offset = self.tower(cells)
            if mode == "pal":
                # P(click) = P(seen | cell) * P(click | seen, x), fitted on the product in log space.
                log_p = nn.functional.logsigmoid(offset) + nn.functional.logsigmoid(f)
                p = torch.exp(log_p).clamp(max=1 - 1e-6)
                per = -(clicks * log_p + (1 - clicks) * torch.log1p(-p))
                return (per * w).mean(), p
            if mode == "obs_dropout":
                keep = (
                    torch.rand(cells.shape, generator=streams.observation, device=cells.device)
                    >= spec.observation_dropout
                )
                offset = offset * keep
            logit = f + offset
            per = bce(logit, clicks, reduction="none")
            if mode == "grad_reversal":
                assert self.adversary is not None
                adv = self.adversary(grad_reverse(mixed[:, 0], spec.reversal_weight))  # [M, K]
                extra = nn.functional.cross_entropy(adv, positions - 1)
        return (per * w).mean() + extra, torch.sigmoid(logit)

    def examination_curve(self) -> torch.Tensor | None:
        """[V, K] learned log-examination offsets relative to position 1, for tower-like modes.

        shallow tower variants: g(k, d) - g(1, d) (an additive logit offset, which approximates
        log theta(k) / theta(1) where click probabilities are small); pal: log sigmoid(g(k, d)) -
        log sigmoid(g(1, d)) (exact under PAL's factorization).
        """
        if self.tower is None:
            return None
        with torch.inference_mode():
            g = self.tower.curve()
            if self.spec.position == "pal":
                g = nn.functional.logsigmoid(g)
            return g - g[:, :1]

    def dense_macs_per_example(self) -> int:
        """Multiply-accumulates of the dense layers in one forward pass, from the layer shapes."""
        s = self.spec
        first = s.hidden * (3 * s.embed_dim) + s.hidden * (2 * s.embed_dim + N_DENSE)
        return first + self.net.macs_per_example(s.hidden)
