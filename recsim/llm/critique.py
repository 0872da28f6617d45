"""Directive feedback: critiques of failed responses, Critique-GRPO, hindsight distillation.

A scalar reward says how well a response did; a critique says how it should change. For a failed
response (wrong answer) the critic returns, at a configurable strength:

- ``binary``: "wrong" (Critique-GRPO's indicative critique);
- ``ground_truth``: "wrong; the answer is y";
- ``cot``: "wrong; the answer is y; your sum stopped at digit j" - which step of the computation
  went wrong (the prefix x_1..x_j of the prompt whose sum mod A is the answer given, nearest the
  m digits needed; 0 when no prefix gives it: a slip, not a stop) and what the answer should be.
  On the chain task (:mod:`recsim.llm.chain`): "wrong; the answer is y; step j is wrong, it
  should be c_j" - the first wrong step of the written chain and its correct value.

Each strength holds strictly more than the one before, and a critique is a function of its own
prompt and response only. The policy reads it as a refinement context: the prompt tokens, then
``[WRONG][GIVEN a][TRUTH y | PAD][STEP j | PAD]`` (chain task: ``+ [VALUE c_j | PAD]``; the
answer it gave is part of the context, as the initial response is in Critique-GRPO's refinement
prompt).

Critique-GRPO (Zhang et al. 2025): the policy refines each failed response given its critique;
up to ``keep`` refinements per group (correct ones first) join the G initial responses in a mixed
group with advantages A = R - mean(R) over the mixed group (their choice; divided by the mixed
group's std under ``llm.advantage = "std"``, as the scalar GRPO it is compared with); initial tokens
contribute A log pi(y_t | x, y_<t), refinement tokens A f(pi(y_t | x, y_<t)) with the shaping
f(pi) = pi / (pi + gamma): the refinement is learned as an answer to the prompt alone, without
the critique, and low-probability (unfamiliar) correct tokens get the largest gradient
(df/dlog pi = gamma pi / (pi + gamma)^2, largest at pi = gamma).

Hindsight distillation: a teacher pass of the same policy with the critique in context scores the
student's own tokens; A_t = A_scalar + w (log pi(y_t | x, c, y_<t) - log pi(y_t | x, y_<t)) is
the per-token directive signal (the on-policy reverse-KL distillation reward), negative exactly on
the tokens the critique disowns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsim.llm.chain import ChainFormat, chain_value, first_wrong
from recsim.llm.tasks import CRITIQUE_SLOTS, Format, Prompts, prefix_sums

STRENGTHS = ("binary", "ground_truth", "cot")


@dataclass(frozen=True)
class Critiques:
    """Critiques of some responses. All [M] long: ``row`` the critiqued response's index, ``given``
    its answer, ``truth`` the true answer and ``step`` the diagnosed step (-1 where the strength
    does not reveal them)."""

    row: torch.Tensor
    given: torch.Tensor
    truth: torch.Tensor
    step: torch.Tensor
    value: torch.Tensor | None = None
    """chain task: the correct value at ``step`` (-1 where the strength does not reveal it)."""

    def __len__(self) -> int:
        return self.row.shape[0]

    def slots(self, fmt: Format | ChainFormat) -> torch.Tensor:
        """[M, fmt.critique_slots] the critique's tokens."""
        wrong = torch.full_like(self.given, fmt.critique_base)
        truth = torch.where(self.truth >= 0, fmt.truth_base + self.truth, fmt.critique_pad)
        step = torch.where(self.step >= 0, fmt.step_base + self.step, fmt.critique_pad)
        tokens = [wrong, fmt.given_base + self.given, truth, step]
        if fmt.kind == "chain":
            tokens.append(torch.where(self.value >= 0, fmt.value_base + self.value, fmt.critique_pad))
        return torch.stack(tokens, 1)

    def context(self, fmt: Format, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """[M, P + CRITIQUE_SLOTS] the refinement context: each critiqued response's prompt
        (``prompt_tokens`` [M, P], aligned with the critiques) followed by its critique."""
        if not fmt.critiques:
            raise ValueError("refinement contexts need Format.critiques (the critique tokens)")
        return torch.cat([prompt_tokens, self.slots(fmt)], 1)


def diagnose_step(fmt: Format, prompts: Prompts, given: torch.Tensor) -> torch.Tensor:
    """[N] the step where the computation went wrong: the j in 1..L whose prefix sum mod A equals
    the ``given`` answer, nearest to the m = difficulty + 1 digits needed (ties: the shorter);
    0 when no prefix gives it."""
    sums = prefix_sums(fmt, prompts.tokens)  # [N, L]
    j = torch.arange(1, fmt.prompt_len + 1)
    m = (prompts.difficulty + 1).unsqueeze(1)
    # distance, with ties broken towards shorter prefixes; unmatched prefixes never win
    cost = (j - m).abs() * 2 + (j > m).long()
    cost = torch.where(sums == given.unsqueeze(1), cost, torch.iinfo(torch.long).max)
    best = cost.argmin(1)
    return torch.where(
        cost.gather(1, best.unsqueeze(1)).squeeze(1) < torch.iinfo(torch.long).max, best + 1, 0
    )


def critique(
    fmt: Format, prompts: Prompts, rows: torch.Tensor, given: torch.Tensor, strength: str
) -> Critiques:
    """Critiques at ``strength`` of answers ``given`` [M] to ``prompts`` (aligned, [M] each);
    ``rows`` [M] records which responses they belong to."""
    if strength not in STRENGTHS:
        raise ValueError(f"critique strength must be one of {STRENGTHS}, got {strength!r}")
    hidden = torch.full_like(given, -1)
    truth = prompts.answer if strength in ("ground_truth", "cot") else hidden
    step = diagnose_step(fmt, prompts, given) if strength == "cot" else hidden
    return Critiques(rows, given, truth, step)


def critique_failed(
    fmt: Format | ChainFormat, prompts: Prompts, prompt: torch.Tensor, tokens: torch.Tensor, strength: str
) -> Critiques:
    """Critiques of the failed responses among ``tokens`` [N, T] to ``prompts`` (``prompt`` [N]
    indexes them); correct responses get none."""
    if fmt.kind == "chain":
        return chain_critique_failed(fmt, prompts, prompt, tokens, strength)
    answer = tokens[:, 0]
    rows = torch.nonzero(answer != prompts.answer[prompt]).squeeze(1)
    return critique(fmt, prompts.take(prompt[rows]), rows, answer[rows], strength)


def chain_critique(
    prompts: Prompts,
    rows: torch.Tensor,
    given: torch.Tensor,
    wrong_step: torch.Tensor,
    strength: str,
) -> Critiques:
    """Chain-task critiques at ``strength`` of answers ``given`` [M] whose first wrong step is
    ``wrong_step`` [M] (1..d + 1), ``prompts`` aligned with them: the chain-of-thought critique
    names that step and its correct value."""
    if strength not in STRENGTHS:
        raise ValueError(f"critique strength must be one of {STRENGTHS}, got {strength!r}")
    hidden = torch.full_like(given, -1)
    truth = prompts.answer if strength in ("ground_truth", "cot") else hidden
    if strength != "cot":
        return Critiques(rows, given, truth, hidden, hidden)
    value = chain_value(prompts, torch.arange(len(prompts)), wrong_step)
    return Critiques(rows, given, truth, wrong_step, value)


def chain_critique_failed(
    fmt: ChainFormat, prompts: Prompts, prompt: torch.Tensor, tokens: torch.Tensor, strength: str
) -> Critiques:
    """Critiques of the chain responses with a wrong final answer."""
    d = prompts.difficulty[prompt]
    answer = fmt.answer(tokens, d, prompts.hint[prompt])
    rows = torch.nonzero(answer != prompts.answer[prompt]).squeeze(1)
    wrong = first_wrong(fmt, prompts, prompt[rows], tokens[rows])
    return chain_critique(prompts.take(prompt[rows]), rows, answer[rows], wrong, strength)


def refine_shaping(logp: torch.Tensor, gamma: float) -> torch.Tensor:
    """f(pi) = pi / (pi + gamma) of token log-probabilities (Critique-GRPO's shaping)."""
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    p = logp.exp()
    return p / (p + gamma)


def select_refinements(group: torch.Tensor, correct: torch.Tensor, keep: int) -> torch.Tensor:
    """[M] bool: at most ``keep`` refinements per group, correct ones first, then in order."""
    m = group.shape[0]
    if m == 0:
        return torch.zeros(0, dtype=torch.bool)
    order = torch.arange(m)
    key = (group * 2 + (correct <= 0).long()) * m + order  # group, then correct first, then order
    sorted_idx = key.argsort()
    g_sorted = group[sorted_idx]
    first = torch.searchsorted(g_sorted, g_sorted)  # start of each row's group in sorted order
    rank = torch.empty(m, dtype=torch.long)
    rank[sorted_idx] = torch.arange(m) - first
    return rank < keep


def mixed_group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    ref_rewards: torch.Tensor,
    ref_group: torch.Tensor,
    std: bool = False,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A = R - mean(R) over each mixed group (divided by the group's sample std + eps with
    ``std``): the G initial responses (``rewards`` [N * G], groups contiguous) and the
    refinements assigned to it (``ref_rewards`` [M], ``ref_group`` [M])."""
    n = rewards.shape[0] // group_size
    r, rr = rewards.double(), ref_rewards.double()
    count = torch.full((n,), float(group_size), dtype=torch.float64).index_add(
        0, ref_group, torch.ones_like(rr)
    )
    mean = r.view(n, group_size).sum(1).index_add(0, ref_group, rr) / count
    a, ra = r - mean.repeat_interleave(group_size), rr - mean[ref_group]
    if std:
        ss = (a**2).view(n, group_size).sum(1).index_add(0, ref_group, ra**2)
        sd = (ss / (count - 1)).sqrt() + eps
        a, ra = a / sd.repeat_interleave(group_size), ra / sd[ref_group]
    return a.to(rewards.dtype), ra.to(rewards.dtype)


def critique_grpo_loss(
    logp: torch.Tensor,
    mask: torch.Tensor,
    adv: torch.Tensor,
    ref_logp: torch.Tensor,
    ref_mask: torch.Tensor,
    ref_adv: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """- (sum_init A log pi + sum_refinements A f(pi)) / tokens. logp, mask [N, T]; adv [N];
    ref_* the refinements' (log pi given the prompt alone)."""
    tokens = (mask.sum() + ref_mask.sum()).clamp_min(1)
    initial = (adv.unsqueeze(1) * logp * mask).sum()
    refined = (ref_adv.unsqueeze(1) * refine_shaping(ref_logp, gamma) * ref_mask).sum()
    return -(initial + refined) / tokens


def directive_advantages(
    advantages: torch.Tensor,
    rows: torch.Tensor,
    teacher_logp: torch.Tensor,
    student_logp: torch.Tensor,
    mask: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """[N, T] per-token advantages: the scalar ``advantages`` [N] on every token, plus on the
    critiqued ``rows`` [M] ``weight`` (log pi_teacher - log pi_student) ([M, T] each, masked)."""
    t = mask.shape[1]
    out = advantages.unsqueeze(1).expand(-1, t).clone()
    gain = weight * (teacher_logp - student_logp.detach()) * mask[rows]
    return out.index_add(0, rows, gain)


__all__ = [
    "CRITIQUE_SLOTS",
    "STRENGTHS",
    "Critiques",
    "critique",
    "critique_failed",
    "critique_grpo_loss",
    "diagnose_step",
    "directive_advantages",
    "mixed_group_advantages",
    "refine_shaping",
    "select_refinements",
]
