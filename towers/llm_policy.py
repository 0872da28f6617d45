"""A small autoregressive policy: a GRU reads the prompt, a GRU decoder emits the response.

Sampling is batched over all prompts and group members at once; the only loop is over the T
response steps (autoregression). Log-probabilities of given responses are one teacher-forced pass.
Shapes: N sequences, P prompt tokens, T response tokens, V output vocabulary, H hidden.
"""

from __future__ import annotations

import torch
from torch import nn


class TokenPolicy(nn.Module):
    """pi(response | prompt) over a masked vocabulary (the response format)."""

    def __init__(
        self, prompt_vocab: int, vocab: int, masks: torch.Tensor, hidden: int, gen: torch.Generator
    ) -> None:
        super().__init__()
        self.vocab = vocab
        self.register_buffer("masks", masks)  # [T, V] allowed tokens per step
        self.prompt_embed = nn.Embedding(prompt_vocab, hidden)
        self.encoder = nn.GRU(hidden, hidden, batch_first=True)
        self.token_embed = nn.Embedding(vocab + 1, hidden)  # + BOS
        self.decoder = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p, generator=gen)
            else:
                nn.init.zeros_(p)

    @property
    def bos(self) -> int:
        return self.vocab

    def encode(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts [N, P] -> initial decoder state [1, N, H]."""
        _, h = self.encoder(self.prompt_embed(prompts))
        return h

    def _masked(self, logits: torch.Tensor, steps: slice | int) -> torch.Tensor:
        return logits.masked_fill(~self.masks[steps], float("-inf"))

    def log_probs(self, prompts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token log pi of given responses. prompts [N, P], tokens [N, T] -> [N, T]
        (0 after EOS: positions past the end are not part of the response)."""
        n, t = tokens.shape
        inputs = torch.cat([torch.full((n, 1), self.bos, dtype=tokens.dtype), tokens[:, :-1]], 1)
        out, _ = self.decoder(self.token_embed(inputs), self.encode(prompts))  # [N, T, H]
        logp = torch.log_softmax(self._masked(self.head(out), slice(0, t)), -1)  # [N, T, V]
        tok_logp = logp.gather(2, tokens.unsqueeze(-1)).squeeze(-1)
        return tok_logp * response_mask(tokens, self.vocab - 1)

    @torch.no_grad()  # not inference_mode: sampled tokens feed the training pass
    def sample(self, prompts: torch.Tensor, gen: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """Responses [N, T] (EOS-padded after the end), sampled by Gumbel-max from ``gen``."""
        n = prompts.shape[0]
        t_max = self.masks.shape[0]
        h = self.encode(prompts)
        token = torch.full((n, 1), self.bos, dtype=torch.long)
        out = torch.empty(n, t_max, dtype=torch.long)
        for t in range(t_max):  # autoregression over steps, batched over all sequences
            y, h = self.decoder(self.token_embed(token), h)
            logits = self._masked(self.head(y[:, 0]) / temperature, t)
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
