"""Counterfactual invariance: an MMD penalty between a learner's score distributions across bins
of a spurious variable (Wang et al. 2025, causal reward modeling).

    MMD^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y),   k(a, b) = mean_s exp(-(a - b)^2 / (2 s^2))

(Gretton et al. 2012; biased V-statistic, so it is >= 0 and exactly 0 for identical samples;
bandwidths s relative to the scores' standard deviation). The penalty averages MMD^2 between each
bin's scores and all scores. The conditional variant computes it within each label class (e.g.
clicked vs not, preferred vs not) and averages: it removes the spurious variable's effect while
keeping what the label explains, at some cost in bias removal (the unconditional variant removes
more, and more utility with it).
"""

from __future__ import annotations

import torch

BANDWIDTHS = (0.5, 1.0, 2.0)


def _kernel(
    a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, bandwidths: tuple[float, ...]
) -> torch.Tensor:
    """Mean of the Gaussian-mixture kernel over all pairs of a [n] and b [m]."""
    d2 = (a.unsqueeze(1) - b.unsqueeze(0)) ** 2
    return sum(torch.exp(-d2 / (2 * (bw * scale) ** 2)) for bw in bandwidths).mean() / len(bandwidths)


def mmd2(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidths: tuple[float, ...] = BANDWIDTHS,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Squared MMD between 1-D samples x [n] and y [m] with a mixture of Gaussian kernels.

    >>> float(mmd2(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])))
    0.0
    """
    s = scale if scale is not None else torch.cat([x, y]).detach().std().clamp_min(1e-3)
    return (
        _kernel(x, x, s, bandwidths) + _kernel(y, y, s, bandwidths) - 2 * _kernel(x, y, s, bandwidths)
    ).clamp_min(0)


def invariance_penalty(
    scores: torch.Tensor,
    bins: torch.Tensor,
    labels: torch.Tensor | None = None,
    min_count: int = 2,
    cap: int = 512,
) -> torch.Tensor:
    """Mean MMD^2 between each bin's scores and all scores; within label classes if ``labels``.

    scores [N] float, bins [N] long (the spurious variable, bucketed), labels [N] or None.
    Bins with fewer than ``min_count`` samples are skipped. At most ``cap`` scores per bin and for
    the pooled reference enter the kernel sums (the first ones: callers pass shuffled batches),
    so the cost is O(bins x cap^2) whatever the batch size. Differentiable in ``scores``.
    """
    groups = (
        [torch.ones_like(bins, dtype=torch.bool)]
        if labels is None
        else [labels == v for v in labels.unique()]
    )
    terms = []
    for group in groups:
        s, b = scores[group], bins[group]
        if s.numel() < 2 * min_count:
            continue
        scale = s.detach().std().clamp_min(1e-3)
        ref = s[:cap]
        k_ref = _kernel(ref, ref, scale, BANDWIDTHS)
        for value in b.unique():  # a handful of bins (positions, length buckets)
            inside = s[b == value][:cap]
            if inside.numel() >= min_count and inside.numel() < s.numel():
                cross = _kernel(inside, ref, scale, BANDWIDTHS)
                terms.append((_kernel(inside, inside, scale, BANDWIDTHS) + k_ref - 2 * cross).clamp_min(0))
    return torch.stack(terms).mean() if terms else scores.sum() * 0.0
