"""Shuffled minibatches: the one epoch loop every trainer of the simulator steps through."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def minibatches(
    n: int, batch_size: int, gen: torch.Generator, total: int | None = None
) -> Iterator[torch.Tensor]:
    """Row indices of one epoch: ``randperm(n)`` drawn from ``gen`` (on its device), cut into
    consecutive pieces of ``batch_size`` (the last may be shorter).

    ``total`` repeats the permutation cyclically to exactly ``total`` rows first (equal full
    batches on every rank of a sharded run, where a rank with fewer rows reuses them).

    >>> g = torch.Generator().manual_seed(0)
    >>> [len(b) for b in minibatches(10, 4, g)]
    [4, 4, 2]
    >>> sorted(torch.cat(list(minibatches(10, 4, g))).tolist()) == list(range(10))
    True
    >>> [len(b) for b in minibatches(3, 4, g, total=8)]
    [4, 4]
    """
    order = torch.randperm(n, generator=gen, device=gen.device)
    if total is not None:
        order = order.repeat(-(-total // n))[:total]
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def shuffled_batches(
    tensors: tuple[torch.Tensor, ...], batch_size: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, ...]]:
    """The batches of :func:`minibatches` (the same ``randperm`` draw from ``gen``), as rows of
    ``tensors``: each tensor is permuted once per epoch and the batches are slices of it, instead
    of one gather per tensor per batch (the same rows, bit for bit).

    >>> g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    >>> x = torch.arange(10) * 10
    >>> mine = [b.tolist() for (b,) in shuffled_batches((x,), 4, g1)]
    >>> mine == [x[i].tolist() for i in minibatches(10, 4, g2)]
    True
    """
    n = tensors[0].shape[0]
    order = torch.randperm(n, generator=gen, device=gen.device)
    permuted = tuple(t.index_select(0, order) for t in tensors)
    for start in range(0, n, batch_size):
        yield tuple(t[start : start + batch_size] for t in permuted)
