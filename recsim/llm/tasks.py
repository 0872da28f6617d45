"""Synthetic tasks with a hidden answer, a difficulty, and a user hint; and the response format.

Prompt: ``prompt_len`` digit tokens x_1..x_L (0..9), a difficulty token, a hint token.
Answer: (x_1 + ... + x_m) mod A with m = difficulty + 1 (difficulty 0..``max_difficulty``), so
harder prompts need more of the prompt. Hint: the user's stated belief, the true answer or, with
probability ``hint_wrong``, a uniformly drawn wrong one.

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


@dataclass(frozen=True)
class Format:
    """Token layout of prompts and responses."""

    prompt_len: int
    n_answers: int
    conf_bins: int
    max_elaboration: int
    max_difficulty: int

    @property
    def prompt_vocab(self) -> int:
        """digits + difficulty tokens + hint tokens."""
        return N_DIGITS + self.max_difficulty + 1 + self.n_answers

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
    """A set of prompts. tokens [N, L + 2]; answer, difficulty, hint [N] long."""

    tokens: torch.Tensor
    answer: torch.Tensor
    difficulty: torch.Tensor
    hint: torch.Tensor

    def __len__(self) -> int:
        return self.answer.shape[0]

    def take(self, idx: torch.Tensor) -> Prompts:
        return Prompts(self.tokens[idx], self.answer[idx], self.difficulty[idx], self.hint[idx])

    @property
    def hint_wrong(self) -> torch.Tensor:
        return self.hint != self.answer


def make_prompts(fmt: Format, n: int, hint_wrong: float, gen: torch.Generator) -> Prompts:
    """Draw ``n`` prompts."""
    digits = torch.randint(N_DIGITS, (n, fmt.prompt_len), generator=gen)
    difficulty = torch.randint(fmt.max_difficulty + 1, (n,), generator=gen)
    upto = torch.arange(fmt.prompt_len) <= difficulty.unsqueeze(1)  # first m = d + 1 digits
    answer = (digits * upto).sum(1) % fmt.n_answers
    wrong = torch.rand(n, generator=gen) < hint_wrong
    shift = torch.randint(1, fmt.n_answers, (n,), generator=gen)
    hint = torch.where(wrong, (answer + shift) % fmt.n_answers, answer)
    tokens = torch.cat(
        [
            digits,
            (N_DIGITS + difficulty).unsqueeze(1),
            (N_DIGITS + fmt.max_difficulty + 1 + hint).unsqueeze(1),
        ],
        1,
    )
    return Prompts(tokens, answer, difficulty, hint)
