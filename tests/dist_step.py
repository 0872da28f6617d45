"""Helper run by tests/test_distributed.py: one MMoE training call on fixed rows, either in one
process (``single``) or under torchrun with the rows of each global minibatch split across ranks
(``sharded``); the trained weights go to ``OUT/MODE-RANK.pt``.

The shuffle is replaced by the identity so both runs see the same minibatches, and dropout is
off, so the two must agree up to float reduction order.
"""

from __future__ import annotations

import os
import sys

import torch

import recsim.core.batches as batches
from recsim.cli.bench import synthetic_rows
from recsim.config import validate
from recsim.recsys.rankers.multitask import MultiTaskRanker
from recsim.recsys.world import World
from towers.ranking import TrainStreams

BATCH = 512


def main(mode: str, out: str, sharding: str) -> None:
    cfg = validate(
        {
            "world": {"n_users": 400, "n_items": 300},
            "ranker": {
                "name": "mmoe",
                "position": "shallow_tower",
                "sparse_embeddings": True,
                "epochs": 1,
                "batch_size": BATCH,
                "gate_dropout": 0.0,
                "position_dropout": 0.0,
            },
        }
    )
    world = World.create(cfg)
    n = 4 * BATCH
    data = synthetic_rows(world, n, 5, torch.Generator().manual_seed(0), click_rate=0.3)
    batches.torch.randperm = lambda k, generator=None, **kw: torch.arange(k)  # identity shuffle (minibatches)
    ctx = None
    if mode == "sharded":
        from recsim.recsys.distributed import init

        ctx = init("cpu", sharding)
        half = BATCH // ctx.world_size
        rows = torch.arange(n).view(-1, ctx.world_size, half)[:, ctx.rank].reshape(-1)
        data = data.take(rows)
    ranker = MultiTaskRanker(cfg, world, ctx)
    init = {k: v.clone() for k, v in ranker.model_.state_dict().items()}
    stats = ranker._train(data, TrainStreams.seeded(1))
    rank = 0 if ctx is None else ctx.rank
    payload = {"init": init, "state": ranker.model_.state_dict(), "stats": stats}
    torch.save(payload, os.path.join(out, f"{mode}-{rank}.pt"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
