"""The task kinds behind one interface: the format, prompts and policy of ``llm.task.kind``.

Both formats (:class:`recsim.llm.tasks.Format`, the sum task; :class:`recsim.llm.chain.ChainFormat`,
the chain task) expose the same names the domain reads: ``kind``, ``prompt_vocab``, ``vocab``,
``eos``, ``elab``, ``max_len``, ``prompt_tokens``, ``conf_bins``, ``answer_values``,
``critique_slots``, ``max_ordinary``, ``hard``, ``critiques``;
:class:`recsim.llm.feedback.Rollouts` reads each response's features through them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from recsim.llm.chain import ChainFormat, make_chain_prompts
from recsim.llm.tasks import Format, Prompts, make_prompts, step_masks
from towers.llm_policy import TokenPolicy

if TYPE_CHECKING:
    from recsim.llm.config import LlmConfig

AnyFormat = Format | ChainFormat


def make_format(c: LlmConfig) -> AnyFormat:
    """The response format of the config's task kind."""
    critiques = c.critique.kind != "none" or c.critique.sft > 0
    t = c.task
    if t.kind == "chain":
        return ChainFormat(
            t.n_values,
            t.max_steps,
            t.conf_bins,
            t.max_elaboration,
            t.concepts,
            hard=t.hard_share > 0,
            critiques=critiques,
        )
    return Format(
        t.prompt_len,
        t.n_answers,
        t.conf_bins,
        t.max_elaboration,
        t.max_difficulty,
        hard=t.hard_share > 0,
        critiques=critiques,
    )


def draw_prompts(
    fmt: AnyFormat, n: int, hint_wrong: float, gen: torch.Generator, hard_share: float = 0.0
) -> Prompts:
    """``n`` prompts of the format's task kind."""
    if fmt.kind == "chain":
        return make_chain_prompts(fmt, n, hint_wrong, gen, hard_share)
    return make_prompts(fmt, n, hint_wrong, gen, hard_share)


def new_policy(fmt: AnyFormat, hidden: int, gen: torch.Generator) -> TokenPolicy:
    """A policy network for the format: the chain task's attends over its prompt and masks its
    response layout per prompt; the sum task's is the plain GRU with one [T, V] mask."""
    if fmt.kind == "chain":
        return TokenPolicy(
            fmt.prompt_vocab,
            fmt.vocab,
            fmt.masks_for,
            hidden,
            gen,
            attention=True,
            context_len=fmt.prompt_tokens + fmt.critique_slots,
            max_len=fmt.max_len,
        )
    return TokenPolicy(fmt.prompt_vocab, fmt.vocab, step_masks(fmt), hidden, gen)
