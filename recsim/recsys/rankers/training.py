"""Training helpers shared by the trainable rankers and the retriever."""

from __future__ import annotations

import polars as pl
import torch

from recsim.core.batches import minibatches


class Optimizers:
    """Several optimizers stepped as one (dense Adam beside a sparse optimizer for embedding tables)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        # Sparse gradients come from embedding_bag backward, well formed: skip torch's checks.
        with torch.sparse.check_sparse_tensor_invariants(enable=False):
            for opt in self.optimizers:
                opt.step()

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for opt, state in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(state)


def train_bce(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    inputs: tuple[torch.Tensor, ...],
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    gen: torch.Generator,
) -> dict[str, float]:
    """Minibatch ``opt`` steps on binary cross-entropy of ``model(*inputs)`` against ``labels``.

    Returns ``{"train_loss": mean loss of the last epoch}``.
    """
    model.train()
    n = labels.shape[0]
    last = float("nan")
    for _ in range(epochs):
        total = 0.0
        for idx in minibatches(n, batch_size, gen):
            logits = model(*(x[idx] for x in inputs))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        last = total / max(n, 1)
    model.eval()
    return {"train_loss": last}


def column(logs: pl.DataFrame, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A log column as a torch tensor of ``dtype``."""
    return torch.from_numpy(logs[name].to_numpy(writable=True)).to(dtype)
