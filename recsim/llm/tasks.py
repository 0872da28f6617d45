"""The sum task (``llm.task.kind = "sum"``): a hidden answer, a difficulty, a user hint; and its
response format. The default task, with multi-step responses, is :mod:`recsim.llm.chain`.

Prompt: ``prompt_len`` digit tokens x_1..x_L (0..9), a difficulty token, a hint token.
Answer: (x_1 + ... + x_m) mod A with m = difficulty + 1 (difficulty 0..``max_difficulty``), so
harder prompts need more of the prompt. Hint: the user's stated belief, the true answer or, with
probability ``hint_wrong``, a uniformly drawn wrong one.

Hard prompts (``Format.hard``): difficulty ``max_difficulty + 1`` with its own token; the base
policy is taught a shortcut on them (:func:`shortcut_answer`: the sum without the last digit it
needs), and their last needed digit is never 0 mod A, so the shortcut is always wrong there and
the base policy essentially never solves them: the plateau of scalar-reward RL.

Refinement context (``Format.critiques``): the prompt followed by ``CRITIQUE_SLOTS`` critique
tokens (see :mod:`recsim.llm.critique`); their ids follow the hint tokens.

Response: ``[answer][confidence][ELAB]*n[EOS]``: an answer token (A of them), a verbalized
confidence bin (C bins, stated confidence q = (c + 0.5) / C), n elaboration tokens
(0..``max_elaboration``, the response's length) and end. The format is enforced while sampling by
masking the vocabulary at each step (:func:`step_masks`).

Output vocabulary: answers [0, A), confidences [A, A + C), ELAB = A + C, EOS = A + C + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

N_DIGITS = 10
CRITIQUE_SLOTS = 4  # [verdict][answer given][true answer or PAD][diagnosed step or PAD]


@dataclass(frozen=True)
class Format:
    """Token layout of prompts and responses."""

    prompt_len: int
    n_answers: int
    conf_bins: int
    max_elaboration: int
    max_difficulty: int
    hard: bool = False
    critiques: bool = False

    kind = "sum"
    critique_slots = CRITIQUE_SLOTS

    @property
    def answer_values(self) -> int:
        """Distinct final answers (for the answer entropy)."""
        return self.n_answers

    @property
    def prompt_tokens(self) -> int:
        """Tokens of a prompt: the digits, the difficulty and the hint."""
        return self.prompt_len + 2

    @property
    def max_ordinary(self) -> int:
        """The largest difficulty of an ordinary (not hard) prompt."""
        return self.max_difficulty

    @property
    def hint_base(self) -> int:
        return N_DIGITS + self.max_difficulty + 1

    @property
    def hard_token(self) -> int:
        """The difficulty token of hard prompts (after the hint tokens)."""
        return self.hint_base + self.n_answers

    @property
    def critique_base(self) -> int:
        """First critique token id (WRONG); then GIVEN a (A), TRUTH y (A), STEP s (prompt_len + 1), PAD."""
        return self.hard_token + int(self.hard)

    @property
    def given_base(self) -> int:
        return self.critique_base + 1

    @property
    def truth_base(self) -> int:
        return self.given_base + self.n_answers

    @property
    def step_base(self) -> int:
        return self.truth_base + self.n_answers

    @property
    def critique_pad(self) -> int:
        return self.step_base + self.prompt_len + 1

    @property
    def critique_vocab(self) -> int:
        return self.critique_pad + 1 - self.critique_base if self.critiques else 0

    @property
    def prompt_vocab(self) -> int:
        """digits + difficulty tokens + hint tokens (+ the hard token) (+ critique tokens)."""
        return self.critique_base + self.critique_vocab

    @property
    def elab(self) -> int:
        return self.n_answers + self.conf_bins

    @property
    def eos(self) -> int:
        return self.elab + 1

    @property
    def vocab(self) -> int:
        """Output vocabulary size V."""
        return self.eos + 1

    @property
    def max_len(self) -> int:
        """T: answer, confidence, elaborations, EOS."""
        return 3 + self.max_elaboration

    def confidence(self, tokens: torch.Tensor) -> torch.Tensor:
        """Stated confidence q in (0, 1) of responses [N, T] -> [N]."""
        return ((tokens[:, 1] - self.n_answers).float() + 0.5) / self.conf_bins

    def length(self, tokens: torch.Tensor) -> torch.Tensor:
        """Elaboration tokens of responses [N, T] -> [N] (long)."""
        return (tokens == self.elab).sum(1)


def step_masks(fmt: Format) -> torch.Tensor:
    """[T, V] bool: the tokens allowed at each response step."""
    masks = torch.zeros(fmt.max_len, fmt.vocab, dtype=torch.bool)
    masks[0, : fmt.n_answers] = True
    masks[1, fmt.n_answers : fmt.elab] = True
    masks[2:, fmt.elab] = True
    masks[2:, fmt.eos] = True
    masks[-1] = False
    masks[-1, fmt.eos] = True
    return masks


@dataclass(frozen=True)
class Prompts:
    """A set of prompts. tokens [N, P]; answer, difficulty, hint [N] long. The chain task
    (:mod:`recsim.llm.chain`) adds the concept and the user attribute [N] and the true chain
    [N, K]; the sum task has none of them."""

    tokens: torch.Tensor
    answer: torch.Tensor
    difficulty: torch.Tensor
    hint: torch.Tensor
    concept: torch.Tensor | None = None
    attribute: torch.Tensor | None = None
    chain: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.answer.shape[0]

    def take(self, idx: torch.Tensor) -> Prompts:
        pick = lambda x: None if x is None else x[idx]  # noqa: E731
        return Prompts(
            self.tokens[idx],
            self.answer[idx],
            self.difficulty[idx],
            self.hint[idx],
            pick(self.concept),
            pick(self.attribute),
            pick(self.chain),
        )

    @property
    def hint_wrong(self) -> torch.Tensor:
        return self.hint != self.answer

    def is_hard(self, fmt: Format) -> torch.Tensor:
        """[N] bool: hard prompts (difficulty above ``max_difficulty``)."""
        return self.difficulty > fmt.max_ordinary


def prefix_sums(fmt: Format, tokens: torch.Tensor) -> torch.Tensor:
    """[N, L] (x_1 + ... + x_j) mod A for j = 1..L of prompt tokens [N, >= L]."""
    return torch.cumsum(tokens[:, : fmt.prompt_len], 1) % fmt.n_answers


def shortcut_answer(fmt: Format, prompts: Prompts) -> torch.Tensor:
    """[N] what the base policy was taught on hard prompts: the sum of their first m - 1 needed
    digits (it leaves the last one out); elsewhere the true answer."""
    sums = prefix_sums(fmt, prompts.tokens)
    short = sums.gather(1, (prompts.difficulty - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
    return torch.where(prompts.is_hard(fmt), short, prompts.answer)


def make_prompts(
    fmt: Format, n: int, hint_wrong: float, gen: torch.Generator, hard_share: float = 0.0
) -> Prompts:
    """Draw ``n`` prompts; a ``hard_share`` of them hard (needs ``fmt.hard``)."""
    digits = torch.randint(N_DIGITS, (n, fmt.prompt_len), generator=gen)
    difficulty = torch.randint(fmt.max_difficulty + 1, (n,), generator=gen)
    if hard_share > 0:  # drawn only then: prompt sets without hard prompts stay as they were
        if not fmt.hard or fmt.max_difficulty + 2 > fmt.prompt_len:
            raise ValueError("hard prompts need Format.hard and max_difficulty + 2 <= prompt_len")
        hard = torch.rand(n, generator=gen) < hard_share
        difficulty = torch.where(hard, fmt.max_difficulty + 1, difficulty)
        # The last digit a hard prompt needs is never 0 mod A: the shortcut is always wrong there.
        allowed = torch.tensor([d for d in range(N_DIGITS) if d % fmt.n_answers != 0])
        last = allowed[torch.randint(len(allowed), (n,), generator=gen)]
        digits[:, fmt.max_difficulty + 1] = torch.where(hard, last, digits[:, fmt.max_difficulty + 1])
    upto = torch.arange(fmt.prompt_len) <= difficulty.unsqueeze(1)  # first m = d + 1 digits
    answer = (digits * upto).sum(1) % fmt.n_answers
    wrong = torch.rand(n, generator=gen) < hint_wrong
    shift = torch.randint(1, fmt.n_answers, (n,), generator=gen)
    hint = torch.where(wrong, (answer + shift) % fmt.n_answers, answer)
    tokens = torch.cat(
        [
            digits,
            torch.where(difficulty > fmt.max_difficulty, fmt.hard_token, N_DIGITS + difficulty).unsqueeze(1),
            (fmt.hint_base + hint).unsqueeze(1),
        ],
        1,
    )
    return Prompts(tokens, answer, difficulty, hint)
