"""Training helpers shared by the trainable rankers and the retriever."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import polars as pl
import torch

from recsim.core.batches import shuffled_batches


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


class _CompactRowState:
    """Optimizer state dicts that keep, of each table's per-row state (``ROW_STATE``), only the
    rows where some state is not zero, unless that leaves out under a tenth of the table (then the
    tables are written whole, not copied): a row-wise optimizer leaves the rows no batch has
    touched at exactly zero, and a checkpoint written beside the next round's work costs that work
    CPU for every byte (the scale preset's retriever touches a tenth of its million users a
    round). Zero is compared bit for bit (-0.0 is kept as a row), so
    :meth:`load_state_dict` restores the same tensors exactly."""

    ROW_STATE: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        saved = super().state_dict()  # type: ignore[misc]
        state = {}
        for key, entry in saved["state"].items():
            tables = [entry[name] for name in self.ROW_STATE if name in entry]
            if tables and all(t.dim() == 2 and t.dtype == torch.float32 for t in tables):
                used = torch.zeros(len(tables[0]), dtype=torch.bool, device=tables[0].device)
                for t in tables:
                    used |= t.view(torch.int32).ne(0).any(1)
                rows = used.nonzero().squeeze(1)
                if len(rows) <= 0.9 * len(used):
                    entry = {**entry, "rows": rows, "n_rows": len(used)}
                    entry.update({name: entry[name].index_select(0, rows) for name in self.ROW_STATE})
            state[key] = entry
        return {**saved, "state": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = {}
        for key, entry in state_dict["state"].items():
            if "rows" in entry:
                entry = dict(entry)
                rows, n_rows = entry.pop("rows"), int(entry.pop("n_rows"))
                if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n_rows):
                    raise ValueError(f"optimizer state names rows outside its {n_rows}")
                for name in self.ROW_STATE:
                    values = entry[name]
                    if values.dim() != 2 or len(values) != len(rows):
                        raise ValueError(f"optimizer state {name} has shape {tuple(values.shape)}")
                    entry[name] = values.new_zeros((n_rows, values.shape[1])).index_copy_(0, rows, values)
            state[key] = entry
        super().load_state_dict({**state_dict, "state": state})  # type: ignore[misc]


class RowAdagrad(_CompactRowState, torch.optim.Adagrad):
    """``torch.optim.Adagrad`` whose step on sparse (row) gradients runs on the rows directly.

    torch's sparse path adds sparse tensors into the dense state and weights
    (``state_sum.add_(sparse)``, ``sparse_mask``, ``param.add_(sparse)``), about 0.3 ms per call
    for a million-row table however few rows the batch touched. Here the same operations run on
    the gathered rows: the gradient coalesced (duplicate ids summed, as torch does), then
    ``sum[i] += g^2``, ``std = sqrt(sum[i]) + eps``, ``param[i] -= clr * g / std``, so the state
    and weights are torch's bit for bit (``tests/test_speed.py``). Its state dict is torch's, but
    for ``sum``, which keeps only the touched rows (:class:`_CompactRowState`). Dense gradients,
    weight decay or ``maximize`` take torch's own step.
    """

    ROW_STATE = ("sum",)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        flags = ("weight_decay", "maximize", "differentiable", "foreach", "fused")
        plain = all(not any(g.get(flag) for flag in flags) for g in self.param_groups)
        if closure is not None or not plain or not all(p.grad.is_sparse for p in params):
            return super().step(closure)
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                state["step"] += 1
                clr = group["lr"] / (1 + (float(state["step"]) - 1) * group["lr_decay"])
                grad = param.grad.coalesce()  # the update is non-linear: each row once
                rows, values = grad._indices()[0], grad._values()
                total = state["sum"].index_select(0, rows).add_(values.pow(2))
                state["sum"].index_copy_(0, rows, total)
                param.index_add_(0, rows, values / total.sqrt_().add_(group["eps"]), alpha=-clr)
        return None


class RowSparseAdam(_CompactRowState, torch.optim.SparseAdam):
    """``torch.optim.SparseAdam`` run on the gathered rows of each coalesced gradient.

    The same operations in the same order as torch's (``torch.optim._functional.sparse_adam``):
    the moments' old rows, their updates ``(g - m) (1 - beta1)`` and ``(g^2 - v) (1 - beta2)``
    added back, then ``param[i] -= step_size (m / (sqrt(v) + eps))``; only the sparse-tensor
    arithmetic (``sparse_mask``, dense-plus-sparse adds) becomes ``index_select`` / ``index_add_``
    on the rows: a step on a million-row table with 8,192 ids takes 2.6 ms instead of 3.9 ms
    here. The state and weights are torch's bit for bit (``tests/test_speed.py``); its state dict
    keeps only the touched rows of the moments (:class:`_CompactRowState`).
    """

    ROW_STATE = ("exp_avg", "exp_avg_sq")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is not None or any(g.get("maximize", False) for g in self.param_groups):
            return super().step(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise RuntimeError("RowSparseAdam needs sparse gradients")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                grad = param.grad.coalesce()  # the update is non-linear: each row once
                rows, values = grad._indices()[0], grad._values()
                if values.numel() == 0:
                    continue
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                old_avg = exp_avg.index_select(0, rows)
                avg_update = values.sub(old_avg).mul_(1 - beta1)
                exp_avg.index_add_(0, rows, avg_update)
                old_sq = exp_avg_sq.index_select(0, rows)
                sq_update = values.pow(2).sub_(old_sq).mul_(1 - beta2)
                exp_avg_sq.index_add_(0, rows, sq_update)
                numer = avg_update.add_(old_avg)
                denom = sq_update.add_(old_sq).sqrt_().add_(group["eps"])
                step = state["step"]
                step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                param.index_add_(0, rows, -step_size * numer.div_(denom))
        return None


class FlatAdam:
    """Adam (L2 weight decay, as ``torch.optim.Adam``) over parameters gathered into one flat buffer.

    Every parameter's data becomes a view of one flat tensor and its ``.grad`` a view of one flat
    gradient, so a step is one chain of elementwise ops over the whole model instead of one chain
    per tensor. The ops are ``torch.optim.Adam``'s own (single-tensor path, in its order), applied
    elementwise, so the parameters after each step are bit-identical to it (``tests/test_speed.py``);
    only the number of kernel calls falls, from 8 per tensor to 8. Gradients are accumulated into
    the views: autograd adds into an existing ``.grad`` in place, and :meth:`zero_grad` zeroes the
    flat gradient.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        first = self.params[0]
        n = sum(p.numel() for p in self.params)
        self.flat = torch.empty(n, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.flat)
        offset = 0
        with torch.no_grad():
            for p in self.params:
                view = self.flat[offset : offset + p.numel()].view_as(p)
                view.copy_(p)
                p.data = view
                p.grad = self.grad[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.steps = 0

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the flat gradient (the views stay: ``set_to_none`` is accepted and ignored)."""
        self.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        grad = self.grad
        if self.weight_decay != 0:
            grad = grad.add(self.flat, alpha=self.weight_decay)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = float(self.steps)  # torch.optim.Adam keeps a float32 step and reads it back
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = self.lr / bias_correction1
        denom = (self.exp_avg_sq.sqrt() / bias_correction2**0.5).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, denom, value=-step_size)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])


#: backward(inputs of one minibatch, labels, with_loss) -> the minibatch's mean BCE (a 0-d tensor),
#: or None when ``with_loss`` is False, its gradient written into the parameters' ``.grad``
#: (already zeroed)
Backward = Callable[[tuple[torch.Tensor, ...], torch.Tensor, bool], torch.Tensor | None]


#: Below this many parameters a step's elementwise ops span a few of torch's parallel grains
#: (32,768 elements), and splitting them across threads costs more than it saves: a step of the
#: 41k-parameter MF at T-RECS' size takes 0.28 ms on one thread and 0.34 ms on two here, one of
#: 205k parameters 0.65 ms and 0.53 ms.
SMALL_MODEL = 1 << 17


def train_bce(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer | FlatAdam,
    inputs: tuple[torch.Tensor, ...],
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    gen: torch.Generator,
    backward: Backward | None = None,
) -> dict[str, float]:
    """Minibatch ``opt`` steps on binary cross-entropy of ``model(*inputs)`` against ``labels``.

    ``backward`` replaces the forward and autograd pass with a closed-form gradient (the same
    numbers; see :meth:`towers.mf.LogisticMF.bce_backward`); it is asked for the loss in the last
    epoch only, the one reported. Batches are slices of inputs permuted once per epoch
    (:func:`~recsim.core.batches.shuffled_batches`). A :class:`FlatAdam` model smaller than
    :data:`SMALL_MODEL` steps on one intra-op thread (the thread count is restored after; the
    operations and their results do not depend on it). Returns ``{"train_loss": mean loss of
    the last epoch}``.
    """
    model.train()
    n = labels.shape[0]
    last = float("nan")
    threads = torch.get_num_threads()
    if isinstance(opt, FlatAdam) and opt.flat.numel() < SMALL_MODEL and opt.flat.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        for epoch in range(epochs):
            report = epoch == epochs - 1
            total = 0.0
            for *batch, target in shuffled_batches((*inputs, labels), batch_size, gen):
                opt.zero_grad(set_to_none=True)
                if backward is None:
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(*batch), target)
                    loss.backward()
                else:
                    loss = backward(tuple(batch), target, report)
                opt.step()
                if report:
                    total += float(loss.detach()) * len(target)
            last = total / max(n, 1)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return {"train_loss": last}


def column(logs: pl.DataFrame, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A log column as a torch tensor of ``dtype``."""
    return torch.from_numpy(logs[name].to_numpy(writable=True)).to(dtype)
