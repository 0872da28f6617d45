"""Deterministic random streams: every draw takes a generator derived from (seed, round, stream).

No module of the simulator touches the global RNG. Two draws that must be independent use two
stream names; the same (seed, round, stream) always gives the same generator, whatever ran before.
"""

from __future__ import annotations

import hashlib

import torch

#: Round index used for draws that belong to no round (the world's construction, the panel).
SETUP_ROUND = -1


def derive_seed(seed: int, round_: int, stream: str) -> int:
    """A 63-bit seed from ``(seed, round, stream)`` via BLAKE2b (stable across Python runs).

    >>> derive_seed(0, 1, "clicks") == derive_seed(0, 1, "clicks")
    True
    >>> derive_seed(0, 1, "clicks") != derive_seed(0, 2, "clicks")
    True
    """
    digest = hashlib.blake2b(f"{seed}/{round_}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(seed: int, round_: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` for one named stream of one round."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, round_, stream))
    return g
