"""The chain task: multi-step computations whose every step can be right or wrong.

Prompt (``P = 2K + 4`` tokens, K step slots):

    [x0] [op_1][a_1] ... [op_K][a_K] [hint] [concept] [attribute]

``x0`` is a value in 0..M-1, ``op`` one of add, sub, mul, ``a`` an operand in 1..9; the first
d = difficulty slots hold real steps and the rest ``[NOOP][NOARG]``. The true chain is
c_0 = x0, c_j = op_j(c_{j-1}, a_j) mod M, and the answer is c_d. The hint is the user's stated
belief about the answer (wrong with probability ``hint_wrong``), the concept a topic of the prompt
and the attribute a trait of the user (1 = the group the biased labeler favours); correctness
depends on none of the three.

Response (T = K + 4 + max_elaboration tokens):

    [s_1] ... [s_d] [ANSWER y | AGREE] [CONF q] [FRAME f] [ELAB]*n [EOS]

the intermediate results, the final answer (its own token block: it may differ from the last
step; ``AGREE`` answers with the user's hint, "as you said", whatever the steps gave), a
confidence bin (q = (bin + 0.5) / C), a framing (one of the concepts: the response may
adopt the prompt's topic or not; correctness does not depend on it), n elaboration tokens (the
length) and the end. The format depends on d, so the masks are per prompt (:meth:`ChainFormat.masks_for`).

Hard prompts (``hard_share``): d = max_steps + 1, one step more than any ordinary prompt, whose
last step is always an ``add`` of 1..9 (never the identity, M >= 10). The base policy is taught a
shortcut there (it repeats c_{d-1}, skipping the last step), so it is always wrong on them: the
plateau of scalar-reward RL. The simulator knows the true chain, so it knows the first wrong step
of every response (:func:`first_wrong`).

Refinement context (``critiques``): the prompt followed by ``CHAIN_CRITIQUE_SLOTS`` tokens
``[WRONG][GIVEN a][TRUTH y | PAD][STEP j | PAD][VALUE c_j | PAD]``: the chain-of-thought critique
names the first wrong step j (d + 1 = the answer after right steps) and its correct value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsim.llm.tasks import Prompts

OPS = ("add", "sub", "mul")
N_OPERANDS = 9  # operands 1..9
CHAIN_CRITIQUE_SLOTS = 5  # [WRONG][GIVEN a][TRUTH y | PAD][STEP j | PAD][VALUE v | PAD]


@dataclass(frozen=True)
class ChainFormat:
    """Token layout of chain prompts and responses (see the module docstring)."""

    n_values: int
    max_steps: int
    conf_bins: int
    max_elaboration: int
    concepts: int = 2
    hard: bool = False
    critiques: bool = False

    kind = "chain"

    # prompt side -------------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        """K: step slots (max_steps, + 1 with hard prompts)."""
        return self.max_steps + int(self.hard)

    @property
    def prompt_len(self) -> int:
        """Tokens of a prompt (x0, K operations with their operands, hint, concept, attribute)."""
        return 2 * self.slots + 4

    @property
    def prompt_tokens(self) -> int:
        """Tokens of a prompt (the interface name both formats share)."""
        return self.prompt_len

    @property
    def op_base(self) -> int:
        return self.n_values

    @property
    def noop(self) -> int:
        return self.op_base + len(OPS)

    @property
    def noarg(self) -> int:
        return self.noop + 1

    @property
    def hint_base(self) -> int:
        return self.noarg + 1

    @property
    def concept_base(self) -> int:
        return self.hint_base + self.n_values

    @property
    def attribute_base(self) -> int:
        return self.concept_base + self.concepts

    @property
    def critique_base(self) -> int:
        """WRONG; then GIVEN a (M), TRUTH y (M), STEP j (K + 1), VALUE v (M), PAD."""
        return self.attribute_base + 2

    @property
    def given_base(self) -> int:
        return self.critique_base + 1

    @property
    def truth_base(self) -> int:
        return self.given_base + self.n_values

    @property
    def step_base(self) -> int:
        return self.truth_base + self.n_values

    @property
    def value_base(self) -> int:
        return self.step_base + self.slots + 1

    @property
    def critique_pad(self) -> int:
        return self.value_base + self.n_values

    @property
    def critique_slots(self) -> int:
        return CHAIN_CRITIQUE_SLOTS

    @property
    def prompt_vocab(self) -> int:
        return (self.critique_pad + 1) if self.critiques else self.critique_base

    # response side -----------------------------------------------------------------------------
    @property
    def answer_base(self) -> int:
        return self.n_values

    @property
    def agree_token(self) -> int:
        """The answer "as you said": its value is the user's hint (deference, not computation)."""
        return self.answer_base + self.n_values

    @property
    def conf_base(self) -> int:
        return self.agree_token + 1

    @property
    def frame_base(self) -> int:
        return self.conf_base + self.conf_bins

    @property
    def elab(self) -> int:
        return self.frame_base + self.concepts

    @property
    def eos(self) -> int:
        return self.elab + 1

    @property
    def vocab(self) -> int:
        return self.eos + 1

    @property
    def max_len(self) -> int:
        return self.slots + 4 + self.max_elaboration

    @property
    def max_ordinary(self) -> int:
        """The largest difficulty of an ordinary (not hard) prompt."""
        return self.max_steps

    @property
    def answer_values(self) -> int:
        """Distinct final answers (for the answer entropy)."""
        return self.n_values

    def steps_of(self, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """[N] d: the real steps of prompts (or refinement contexts) [N, >= P]."""
        ops = prompt_tokens[:, 1 : 2 * self.slots : 2]
        return (ops != self.noop).sum(1)

    def masks_for(self, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """[N, T, V] bool: the tokens allowed at each response position of each prompt."""
        d = self.steps_of(prompt_tokens).unsqueeze(1)  # [N, 1]
        t = torch.arange(self.max_len).unsqueeze(0)  # [1, T]
        v = torch.arange(self.vocab)
        kind = torch.full((len(d), self.max_len), 5)  # 0 step, 1 answer, 2 conf, 3 frame, 4 elab, 5 eos
        kind = torch.where(t < d, 0, kind)
        kind = torch.where(t == d, 1, kind)
        kind = torch.where(t == d + 1, 2, kind)
        kind = torch.where(t == d + 2, 3, kind)
        kind = torch.where((t >= d + 3) & (t < d + 3 + self.max_elaboration), 4, kind)
        lo = torch.tensor([0, self.answer_base, self.conf_base, self.frame_base, self.elab, self.eos])
        hi = torch.tensor(
            [self.n_values, self.conf_base, self.frame_base, self.elab, self.elab + 1, self.eos + 1]
        )
        allowed = (v >= lo[kind].unsqueeze(-1)) & (v < hi[kind].unsqueeze(-1))
        return allowed | ((kind == 4).unsqueeze(-1) & (v == self.eos))  # elaboration may stop

    # reading responses -------------------------------------------------------------------------
    def at(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return tokens.gather(1, pos.clamp_max(tokens.shape[1] - 1).unsqueeze(1)).squeeze(1)

    def answer(self, tokens: torch.Tensor, d: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        """[N] the final answer value (0..M-1) of responses [N, T] to prompts of d steps (the
        user's ``hint`` [N] where the response defers to it)."""
        tok = self.at(tokens, d)
        return torch.where(tok == self.agree_token, hint, tok - self.answer_base)

    def defers(self, tokens: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """[N] bool: the response answers with the agree token."""
        return self.at(tokens, d) == self.agree_token

    def confidence(self, tokens: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return ((self.at(tokens, d + 1) - self.conf_base).float() + 0.5) / self.conf_bins

    def frame(self, tokens: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return self.at(tokens, d + 2) - self.frame_base

    def length(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens == self.elab).sum(1)


def apply_op(c: torch.Tensor, op: torch.Tensor, a: torch.Tensor, m: int) -> torch.Tensor:
    """[N] op(c, a) mod m for ops in 0..2 (add, sub, mul); c where op is -1 (no step)."""
    nxt = torch.stack([(c + a) % m, (c - a) % m, (c * a) % m], 1)
    return torch.where(op >= 0, nxt.gather(1, op.clamp_min(0).unsqueeze(1)).squeeze(1), c)


def true_chain(fmt: ChainFormat, x0: torch.Tensor, ops: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    """[N, K] c_1..c_K (the value repeats after the last real step). ops [N, K] in 0..2 or -1
    (no step), args [N, K]."""
    out = torch.empty_like(ops)
    c = x0.clone()
    for j in range(ops.shape[1]):  # the chain's steps, each batched over all prompts
        c = apply_op(c, ops[:, j], args[:, j], fmt.n_values)
        out[:, j] = c
    return out


def make_chain_prompts(
    fmt: ChainFormat, n: int, hint_wrong: float, gen: torch.Generator, hard_share: float = 0.0
) -> Prompts:
    """Draw ``n`` chain prompts; a ``hard_share`` of them hard (needs ``fmt.hard``)."""
    k, m = fmt.slots, fmt.n_values
    x0 = torch.randint(m, (n,), generator=gen)
    ops = torch.randint(len(OPS), (n, k), generator=gen)
    args = 1 + torch.randint(N_OPERANDS, (n, k), generator=gen)
    d = 1 + torch.randint(fmt.max_steps, (n,), generator=gen)
    if hard_share > 0:
        if not fmt.hard:
            raise ValueError("hard prompts need ChainFormat.hard")
        hard = torch.rand(n, generator=gen) < hard_share
        d = torch.where(hard, k, d)
        ops[:, k - 1] = torch.where(hard, 0, ops[:, k - 1])  # the step the shortcut skips: add 1..9
    real = torch.arange(k).unsqueeze(0) < d.unsqueeze(1)
    ops = torch.where(real, ops, -1)
    chain = true_chain(fmt, x0, ops, args)
    answer = chain.gather(1, (d - 1).unsqueeze(1)).squeeze(1)
    wrong = torch.rand(n, generator=gen) < hint_wrong
    shift = torch.randint(1, m, (n,), generator=gen)
    hint = torch.where(wrong, (answer + shift) % m, answer)
    concept = torch.randint(fmt.concepts, (n,), generator=gen)
    attribute = torch.randint(2, (n,), generator=gen)
    op_tok = torch.where(real, fmt.op_base + ops.clamp_min(0), fmt.noop)
    arg_tok = torch.where(real, args, fmt.noarg)
    steps = torch.stack([op_tok, arg_tok], 2).reshape(n, 2 * k)
    tokens = torch.cat(
        [
            x0.unsqueeze(1),
            steps,
            (fmt.hint_base + hint).unsqueeze(1),
            (fmt.concept_base + concept).unsqueeze(1),
            (fmt.attribute_base + attribute).unsqueeze(1),
        ],
        1,
    )
    return Prompts(tokens, answer, d, hint, concept=concept, attribute=attribute, chain=chain)


def chain_response(
    fmt: ChainFormat,
    steps: torch.Tensor,
    d: torch.Tensor,
    answer: torch.Tensor,
    conf: torch.Tensor,
    frame: torch.Tensor,
    n_elab: torch.Tensor,
) -> torch.Tensor:
    """[N, T] the response tokens of written steps [N, >= d], answers (a value, or n_values for
    AGREE), confidence bins, frames and lengths [N] (EOS-padded)."""
    n, t = steps.shape[0], torch.arange(fmt.max_len).unsqueeze(0)
    dd = d.unsqueeze(1)
    out = torch.full((n, fmt.max_len), fmt.eos)
    written = torch.zeros(n, fmt.max_len, dtype=torch.long)
    written[:, : steps.shape[1]] = steps[:, : fmt.max_len]
    out = torch.where(t < dd, written, out)
    out = torch.where(t == dd, (fmt.answer_base + answer).unsqueeze(1), out)
    out = torch.where(t == dd + 1, (fmt.conf_base + conf).unsqueeze(1), out)
    out = torch.where(t == dd + 2, (fmt.frame_base + frame).unsqueeze(1), out)
    return torch.where((t >= dd + 3) & (t < dd + 3 + n_elab.unsqueeze(1)), fmt.elab, out)


def shortcut_chain(fmt: ChainFormat, prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """(steps [N, K], answer [N]) the base policy is taught: the true chain, except on hard prompts
    where the last step repeats the one before (the skipped ``add``), and so does the answer."""
    chain, d = prompts.chain, prompts.difficulty
    hard = (d > fmt.max_steps).unsqueeze(1)
    last = torch.arange(chain.shape[1]).unsqueeze(0) == (d - 1).unsqueeze(1)
    prev = torch.cat([chain[:, :1], chain[:, :-1]], 1)
    steps = torch.where(hard & last, prev, chain)
    return steps, steps.gather(1, (d - 1).unsqueeze(1)).squeeze(1)


def written_steps(
    fmt: ChainFormat, tokens: torch.Tensor, d: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [N, K], written [N, K] bool): the step values of responses (0 beyond d)."""
    k = fmt.slots
    written = torch.arange(k).unsqueeze(0) < d.unsqueeze(1)
    return torch.where(written, tokens[:, :k], 0), written


def first_wrong(
    fmt: ChainFormat, prompts: Prompts, prompt: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """[N] the first wrong step of each response: j in 1..d where s_j != c_j first; d + 1 when
    every step is right but the answer is not; 0 when the response is right throughout."""
    d = prompts.difficulty[prompt]
    values, written = written_steps(fmt, tokens, d)
    wrong = written & (values != prompts.chain[prompt])
    k = fmt.slots
    j = torch.where(wrong, torch.arange(1, k + 1).unsqueeze(0), k + 2).min(1).values
    answer_wrong = fmt.answer(tokens, d, prompts.hint[prompt]) != prompts.answer[prompt]
    return torch.where(j <= k, j, torch.where(answer_wrong, d + 1, 0))


def chain_value(prompts: Prompts, prompt: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """[N] the true value at 1-based ``step`` (d + 1: the answer) of each row's prompt."""
    chain = prompts.chain[prompt]
    d = prompts.difficulty[prompt]
    j = torch.minimum(step, d).clamp_min(1) - 1
    return chain.gather(1, j.unsqueeze(1)).squeeze(1)


def corrupt_chain(
    fmt: ChainFormat, prompts: Prompts, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A wrong chain per prompt, as a careless solver writes it: at a step j drawn in 1..d the value
    is off by 1..M-1 and the later steps carry the error forward. Returns (steps [N, K], answer
    [N], j [N])."""
    n, k, m = len(prompts), fmt.slots, fmt.n_values
    d = prompts.difficulty
    j = 1 + (torch.rand(n, generator=gen) * d).long().clamp_max(d - 1)
    shift = torch.randint(1, m, (n,), generator=gen)
    x0 = prompts.tokens[:, 0]
    ops_tok = prompts.tokens[:, 1 : 2 * k : 2]
    ops = torch.where(ops_tok == fmt.noop, -1, ops_tok - fmt.op_base)
    args = torch.where(ops >= 0, prompts.tokens[:, 2 : 2 * k + 1 : 2], 0)
    # The chain up to j - 1 is right; at j it is off by ``shift``; the rest follows from there.
    out = prompts.chain.clone()
    c = torch.where(j > 1, out.gather(1, (j - 2).clamp_min(0).unsqueeze(1)).squeeze(1), x0)
    for i in range(k):  # the chain's steps, each batched over all prompts
        step = apply_op(c, ops[:, i], args[:, i], m)
        step = torch.where(i + 1 == j, (step + shift) % m, step)
        c = torch.where(i + 1 >= j, step, c)
        out[:, i] = torch.where(i + 1 >= j, c, out[:, i])
    answer = out.gather(1, (d - 1).unsqueeze(1)).squeeze(1)
    return out, answer, j


# the verifier's checks -------------------------------------------------------------------------
CHECK_NONE, CHECK_WRONG, CHECK_RIGHT = 0, 1, 2
_MASK64 = (1 << 63) - 1


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 63-bit integer hash (splitmix64's finalizer on int64; multiplication wraps)."""
    x = (x ^ (x >> 31)) * -4658895280553007687  # 0xbf58476d1ce4e5b9 as int64
    x = (x ^ (x >> 27)) * -7723592293110705685  # 0x94d049bb133111eb as int64
    return (x ^ (x >> 31)) & _MASK64


def response_hash(prompt_tokens: torch.Tensor, tokens: torch.Tensor, salt: int) -> torch.Tensor:
    """[N] a 63-bit hash of each (prompt, response) pair and ``salt``: the same pair always
    hashes the same, wherever and whenever it is scored."""
    seq = torch.cat([prompt_tokens, tokens], 1).long()
    position = torch.arange(1, seq.shape[1] + 1) * 1_000_003
    per_token = _mix((seq + position) ^ (salt & _MASK64))  # [N, S]: each token at its position
    return _mix(per_token.sum(1) & _MASK64)  # int64 sums wrap


def check_steps(
    fmt: ChainFormat, prompt_tokens: torch.Tensor, tokens: torch.Tensor, error: float, salt: int
) -> torch.Tensor:
    """[N, K + 1] a verifier's verdicts on responses [N, T] to prompts [N, >= P], read from the
    two alone (not from the true chain): check j (j = 1..d) asks whether the written step s_j is
    op_j(s_{j-1}, a_j) mod M, with s_0 = x0 and op_j, a_j the prompt's; check d + 1 asks whether
    the final answer is s_d (an answer deferring to the user's hint is its hint's value). Entries:
    :data:`CHECK_RIGHT`, :data:`CHECK_WRONG`, or :data:`CHECK_NONE` past the answer's check.

    Each check is misjudged (its verdict flipped) with probability ``error``, systematically:
    the flip is a hash of the prompt, the response, the check's index and ``salt``, so the same
    response is misjudged the same way every time it is checked.

    With ``error = 0`` the first check judged wrong is :func:`first_wrong`: a step is
    inconsistent with the one before exactly where the chain first goes wrong."""
    k, m = fmt.slots, fmt.n_values
    d = fmt.steps_of(prompt_tokens)
    x0 = prompt_tokens[:, 0]
    ops_tok = prompt_tokens[:, 1 : 2 * k : 2]
    ops = torch.where(ops_tok == fmt.noop, -1, ops_tok - fmt.op_base)
    args = torch.where(ops >= 0, prompt_tokens[:, 2 : 2 * k + 1 : 2], 0)
    values, _ = written_steps(fmt, tokens, d)
    before = torch.cat([x0.unsqueeze(1), values[:, :-1]], 1)  # s_{j-1}
    expected = torch.stack([apply_op(before[:, j], ops[:, j], args[:, j], m) for j in range(k)], 1)
    steps_ok = values == expected
    hint = prompt_tokens[:, 2 * k + 1] - fmt.hint_base
    last = values.gather(1, (d - 1).unsqueeze(1)).squeeze(1)  # s_d (d >= 1)
    answer_ok = fmt.answer(tokens, d, hint) == last
    j = torch.arange(k + 1).unsqueeze(0)
    ok = torch.cat([steps_ok, torch.zeros_like(steps_ok[:, :1])], 1)
    ok = torch.where(j == d.unsqueeze(1), answer_ok.unsqueeze(1), ok)
    if error > 0:
        h = response_hash(prompt_tokens, tokens, salt)
        u = (_mix(h.unsqueeze(1) ^ (j + 1) * 7_919) >> 10).double() / float(1 << 53)  # [N, K + 1] in [0, 1)
        ok = ok ^ (u < error)
    return torch.where(j <= d.unsqueeze(1), torch.where(ok, CHECK_RIGHT, CHECK_WRONG), CHECK_NONE)


def checked_first_wrong(verdicts: torch.Tensor) -> torch.Tensor:
    """[N] the first check judged wrong, as :func:`first_wrong` counts (1..d a step, d + 1 the
    answer, 0 none) from verdicts [N, K + 1] of :func:`check_steps`."""
    n, c = verdicts.shape
    idx = torch.arange(1, c + 1).unsqueeze(0).expand(n, c)
    j = torch.where(verdicts == CHECK_WRONG, idx, c + 1).min(1).values
    return torch.where(j <= c, j, 0)
