"""A small autoregressive policy: a GRU reads the prompt, a GRU decoder emits the response.

With ``attention`` (the chain task's policy) each decoder output also attends over the encoder's
token states (Luong et al. 2015: score q(o_t) . e_s, context sum_s softmax . e_s, output
tanh(W [o_t, context])), and the prompt tokens carry learned position embeddings, so step t of a
response can read the operation it needs; without, the prompt reaches the decoder only through the
encoder's final state (the sum task's policy, unchanged).

Sampling is batched over all prompts and group members at once; the only loop is over the T
response steps (autoregression). Log-probabilities of given responses are one teacher-forced pass.
Both take the distinct prompts and an ``index`` of each sequence's prompt, so a group of G responses
to one prompt encodes (and masks) that prompt once, not G times.
The response format is a [T, V] mask of allowed tokens per step, or a function of the prompt
tokens returning [N, T, V] (formats whose layout depends on the prompt).
Shapes: N sequences, P prompt tokens, T response tokens, V output vocabulary, H hidden.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

MaskFn = Callable[[torch.Tensor], torch.Tensor]


class TokenPolicy(nn.Module):
    """pi(response | prompt) over a masked vocabulary (the response format)."""

    def __init__(
        self,
        prompt_vocab: int,
        vocab: int,
        masks: torch.Tensor | MaskFn,
        hidden: int,
        gen: torch.Generator,
        attention: bool = False,
        context_len: int = 0,
        max_len: int | None = None,
    ) -> None:
        """``masks``: [T, V], or a function of prompts [N, P] -> [N, T, V] with ``max_len`` = T.
        ``attention``: attend over the prompt's token states (``context_len``: the longest
        prompt or refinement context, for the position embeddings)."""
        super().__init__()
        self.vocab = vocab
        if callable(masks):
            if max_len is None:
                raise ValueError("a mask function needs max_len")
            self.mask_fn: MaskFn | None = masks
            self.max_len = max_len
        else:
            self.mask_fn = None
            self.register_buffer("masks", masks)  # [T, V] allowed tokens per step
            self.max_len = masks.shape[0]
        self.prompt_embed = nn.Embedding(prompt_vocab, hidden)
        self.encoder = nn.GRU(hidden, hidden, batch_first=True)
        self.token_embed = nn.Embedding(vocab + 1, hidden)  # + BOS
        self.decoder = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)
        self.attention = attention
        if attention:
            self.position = nn.Embedding(context_len, hidden)
            self.query = nn.Linear(hidden, hidden)
            self.combine = nn.Linear(2 * hidden, hidden)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p, generator=gen)
            else:
                nn.init.zeros_(p)

    @property
    def bos(self) -> int:
        return self.vocab

    def encode(
        self, prompts: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """prompts [M, P] -> (initial decoder state [1, N, H], token states [N, P, H] or None),
        where sequence n reads prompt ``index[n]`` (N = M without ``index``)."""
        x = self.prompt_embed(prompts)
        if self.attention:
            x = x + self.position.weight[: prompts.shape[1]]
        states, h = self.encoder(x)
        if index is not None:
            h, states = h[:, index], states[index]
        return h, (states if self.attention else None)

    def _features(self, out: torch.Tensor, states: torch.Tensor | None) -> torch.Tensor:
        """Decoder outputs [N, (T,) H] -> the head's input (with attention over ``states``)."""
        if states is None:
            return out
        q = self.query(out)
        if out.dim() == 2:
            w = torch.softmax(torch.einsum("nh,nph->np", q, states) / math.sqrt(q.shape[-1]), -1)
            context = torch.einsum("np,nph->nh", w, states)
        else:
            w = torch.softmax(torch.einsum("nth,nph->ntp", q, states) / math.sqrt(q.shape[-1]), -1)
            context = torch.einsum("ntp,nph->nth", w, states)
        return torch.tanh(self.combine(torch.cat([out, context], -1)))

    def allowed(self, prompts: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """[T, V] or [N, T, V] bool: the tokens allowed at each response step (sequence n reads
        prompt ``index[n]``)."""
        if self.mask_fn is None:
            return self.masks
        masks = self.mask_fn(prompts)
        return masks if index is None else masks[index]

    def _masked(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return logits.masked_fill(~allowed, float("-inf"))

    def log_probs(
        self, prompts: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-token log pi of given responses. prompts [N, P] (or [M, P] distinct prompts with
        ``index`` [N] of each response's prompt), tokens [N, T] -> [N, T] (0 after EOS: positions
        past the end are not part of the response)."""
        n, t = tokens.shape
        inputs = torch.cat([torch.full((n, 1), self.bos, dtype=tokens.dtype), tokens[:, :-1]], 1)
        h, states = self.encode(prompts, index)
        out, _ = self.decoder(self.token_embed(inputs), h)  # [N, T, H]
        allowed = self.allowed(prompts, index)[..., :t, :]
        logp = torch.log_softmax(self._masked(self.head(self._features(out, states)), allowed), -1)
        tok_logp = logp.gather(2, tokens.unsqueeze(-1)).squeeze(-1)
        return tok_logp * response_mask(tokens, self.vocab - 1)

    @torch.no_grad()  # not inference_mode: sampled tokens feed the training pass
    def sample(
        self,
        prompts: torch.Tensor,
        gen: torch.Generator,
        temperature: float = 1.0,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Responses [N, T] (EOS-padded after the end), sampled by Gumbel-max from ``gen``;
        prompts [N, P], or [M, P] distinct prompts with ``index`` [N] of each sequence's prompt."""
        n = prompts.shape[0] if index is None else index.shape[0]
        t_max = self.max_len
        h, states = self.encode(prompts, index)
        allowed = self.allowed(prompts, index)
        token = torch.full((n, 1), self.bos, dtype=torch.long)
        out = torch.empty(n, t_max, dtype=torch.long)
        for t in range(t_max):  # autoregression over steps, batched over all sequences
            y, h = self.decoder(self.token_embed(token), h)
            logits = self._masked(
                self.head(self._features(y[:, 0], states)) / temperature, allowed[..., t, :]
            )
            u = torch.rand(logits.shape, generator=gen).clamp_(1e-12, 1 - 1e-12)
            token = (logits - torch.log(-torch.log(u))).argmax(-1, keepdim=True)  # Gumbel-max
            out[:, t] = token[:, 0]
        return pad_after_eos(out, self.vocab - 1)


def response_mask(tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """[N, T] float: 1 up to and including the first EOS, 0 after."""
    is_eos = (tokens == eos).long()
    before = torch.cumsum(is_eos, 1) - is_eos  # EOS seen strictly before t
    return (before == 0).float()


def pad_after_eos(tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """Replace everything after the first EOS with EOS."""
    return torch.where(response_mask(tokens, eos) > 0, tokens, torch.full_like(tokens, eos))
