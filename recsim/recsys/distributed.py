"""Several processes on one arm: users split across ranks, the ranker trained with TorchRec.

Launched by ``torchrun --nproc-per-node N -m recsim run SCENARIO --distributed`` (gloo on the CPU,
nccl on GPUs). What each rank does in a round of the recommender loop:

| step       | work                                                                      | split  |
|------------|---------------------------------------------------------------------------|--------|
| act        | retrieval search and ranker scoring of its users' candidates, gathered    | ranks  |
|            | draws (active users, exploration, slates): the same stream on every rank  | copied |
| feedback   | users' clicks (cheap; every rank simulates every user, same stream)        | copied |
| log        | the rows of its own users -> ``round=R/arm-A.rank-K.parquet``              | ranks  |
| fit        | DistributedModelParallel: embedding tables sharded by the TorchRec planner | ranks  |
|            | (table-wise or column-wise), dense layers data-parallel (DDP), each rank   |        |
|            | training on its own users' rows; then full weights gathered for serving    |        |
| measure    | metrics on rank 0's copy of the round (identical on every rank)            | copied |

A user belongs to rank ``user % world_size`` for the whole run, so its slates, log rows and
training rows stay on one rank. The random draws are those of the single-process run (cheap
O(B K) work done on every rank), so a sharded run differs from the single-process one only in how
the ranker is trained: each optimizer step sees ``batch / N`` rows from each rank, and the sharded
tables are updated by FBGEMM's fused Adagrad (the single-process run with
``ranker.sparse_embeddings`` applies the same rule to sparse gradients: ``torch.optim.Adagrad``'s
step, run on the gathered rows by ``RowAdagrad``).
Only rank 0 writes metrics, plots and the MLflow run.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

SHARDING_TYPES = ("table_wise", "column_wise")


class DistributedError(ValueError):
    """The distributed launch is not usable (no torchrun environment, unsupported arm)."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the group.

    Attributes:
        rank: 0 .. world_size - 1.
        world_size: number of processes (N).
        device: torch device of this rank (``cuda:LOCAL_RANK`` on GPUs).
        sharding: TorchRec sharding type of the embedding tables.
    """

    rank: int
    world_size: int
    device: torch.device
    sharding: str = "table_wise"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owner(self, users: torch.Tensor) -> torch.Tensor:
        """[B] rank that owns each user."""
        return users % self.world_size

    def gather_rows(self, local: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Rows computed by each rank for its own users -> the full [B, ...] tensor in user order.

        local [B_rank, ...] are this rank's rows (users with ``owner == rank``, in order); owner [B]
        the owning rank of every row. Rows are padded to the largest share for the all-gather.
        """
        counts = torch.bincount(owner, minlength=self.world_size).tolist()
        width = max(counts)
        dtype = local.dtype
        send = local.to(torch.uint8) if dtype == torch.bool else local
        padded = torch.zeros((width, *send.shape[1:]), dtype=send.dtype, device=send.device)
        padded[: len(send)] = send
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        full = torch.empty((len(owner), *send.shape[1:]), dtype=send.dtype, device=send.device)
        for r, part in enumerate(parts):  # one scatter per rank
            full[owner == r] = part[: counts[r]]
        return full.to(dtype)

    def split(
        self, fn: Callable[..., torch.Tensor], users: torch.Tensor, *rows: torch.Tensor
    ) -> torch.Tensor:
        """``fn(users, *rows)`` computed on this rank's users only, gathered for every user."""
        owner = self.owner(users)
        mine = owner == self.rank
        return self.gather_rows(fn(users[mine], *(r[mine] for r in rows)), owner)

    def max_int(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def mean_tensor(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a scalar tensor (not differentiated through)."""
        t = value.detach().clone()
        dist.all_reduce(t)
        return t / self.world_size

    def sum_floats(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()


def check_arms(configs: dict[str, Any]) -> None:
    """Refuse, in one line, what the sharded run does not support (each ranker kind says)."""
    from recsim.recsys.config import RANKERS

    for arm, c in configs.items():
        if c.domain != "recsys":
            raise DistributedError(
                f"arm '{arm}': --distributed runs the recommender domain only, got {c.domain}"
            )
        why = RANKERS.get(c.ranker.name).distributed(c.ranker)
        if why is not None:
            raise DistributedError(f"arm '{arm}': ranker.name={c.ranker.name} {why}")


def init(device: str, sharding: str) -> Dist:
    """Join the process group that torchrun describes in the environment (RANK, WORLD_SIZE, ...)."""
    if sharding not in SHARDING_TYPES:
        raise DistributedError(f"--sharding must be one of {', '.join(SHARDING_TYPES)}, got {sharding!r}")
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise DistributedError(
            f"--distributed needs the torchrun environment ({', '.join(missing)} unset); launch with "
            "torchrun --nproc-per-node N -m recsim run SCENARIO --distributed"
        )
    local = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), dev, sharding)


class ShardedTrainer:
    """A :class:`towers.ranking.RankingModel` trained under TorchRec's DistributedModelParallel.

    ``loss_module`` wraps a private copy of the serving model (DMP replaces its embedding
    collections by sharded ones in place); :meth:`sync` copies the trained weights back into the
    serving model on every rank.
    """

    def __init__(
        self,
        loss_module: nn.Module,
        model: nn.Module,
        ctx: Dist,
        lr: float,
        embedding_lr: float,
        position_lr: float,
        weight_decay: float,
    ) -> None:
        self.ctx = ctx
        self.module = loss_module
        self.model = model  # the copy inside loss_module
        model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.dmp, self.plan = _shard(loss_module, model, ctx, embedding_lr)
        self._load(model_state)
        self.dense_opt = self._dense_optimizer(lr, position_lr, weight_decay)

    def _dense_optimizer(self, lr: float, position_lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """Adam over the dense (data-parallel) parameters, the position channel at ``position_lr``."""
        from torchrec.optim.optimizers import in_backward_optimizer_filter

        model = self.model
        position = {
            id(p)
            for mod in (model.tower, model.pos_proj, model.adversary)
            if mod is not None
            for p in mod.parameters()
        }
        dense = [p for _, p in in_backward_optimizer_filter(self.dmp.named_parameters())]
        groups = [{"params": [p for p in dense if id(p) not in position]}]
        pos = [p for p in dense if id(p) in position]
        if pos:
            groups.append({"params": pos, "lr": position_lr})
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)

    def step(self, *batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on this rank's share of the global minibatch -> (loss, click loss)."""
        loss, click_loss = self.dmp(*batch)
        self.dense_opt.zero_grad(set_to_none=True)
        loss.backward()  # sharded tables are updated here (fused optimizer)
        self.dense_opt.step()
        return loss.detach(), click_loss.detach()

    def _load(self, state: dict[str, torch.Tensor]) -> None:
        """Copy full (unsharded) tensors into this rank's shards: DMP builds fresh tables."""
        from torch.distributed._shard.sharded_tensor import ShardedTensor

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ShardedTensor's notice of its own deprecation
            for key, value in self.dmp.state_dict().items():
                src = state[key.removeprefix(PREFIX)]
                if isinstance(value, ShardedTensor):
                    for shard in value.local_shards():
                        (r0, c0), (nr, nc) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                        shard.tensor.copy_(src[r0 : r0 + nr, c0 : c0 + nc])
                else:
                    value.copy_(src)

    def sync(self, serving: nn.Module) -> None:
        """Copy the trained weights into ``serving`` (an unsharded model) on every rank."""
        from torch.distributed._shard.sharded_tensor import ShardedTensor

        state: dict[str, torch.Tensor] = {}
        with warnings.catch_warnings():  # ShardedTensor's notice of its own deprecation
            warnings.simplefilter("ignore")
            for key, value in self.dmp.state_dict().items():
                name = key.removeprefix(PREFIX)
                if isinstance(value, ShardedTensor):
                    full = torch.empty(tuple(value.size()), dtype=value.dtype, device=self.ctx.device)
                    value.gather(dst=0, out=full if self.ctx.main else None)
                    dist.broadcast(full, src=0)
                    value = full
                state[name] = value.detach().to(self.ctx.device)
        serving.load_state_dict(state, strict=True)


def _shard(loss_module: nn.Module, model: nn.Module, ctx: Dist, embedding_lr: float) -> tuple[nn.Module, Any]:
    """``loss_module`` under DistributedModelParallel: the model's embedding tables sharded by the
    planner (``ctx.sharding``), trained by FBGEMM's fused Adagrad in the backward pass; returns
    (the DMP module, the sharding plan)."""
    from towers.ranking import import_torchrec

    import_torchrec()
    # The planner's notes on hand-built CPU topologies and DDP's on static graphs are not ours.
    logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.types import ShardingEnv
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    tables = model.embedding_parameters()
    apply_optimizer_in_backward(torch.optim.Adagrad, tables, {"lr": embedding_lr, "eps": ADAGRAD_EPS})
    names = [name for ebc in (model.user_ebc, model.item_ebc) for name in ebc.embedding_bags]
    constraints = {
        name: ParameterConstraints(sharding_types=[ctx.sharding], compute_kernels=["fused"]) for name in names
    }
    group = dist.GroupMember.WORLD
    topology = Topology(world_size=ctx.world_size, compute_device=ctx.device.type)
    sharders = [EmbeddingBagCollectionSharder()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
        plan = planner.collective_plan(loss_module, sharders, group)
        dmp = DistributedModelParallel(
            loss_module,
            env=ShardingEnv.from_process_group(group),
            device=ctx.device,
            plan=plan,
            sharders=sharders,
        )
    return dmp, plan


ADAGRAD_EPS = 1e-8
PREFIX = "model."  # state-dict prefix of the served model inside the loss module


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` for DMP to shard (the serving model stays unsharded)."""
    return copy.deepcopy(model)
