"""Counterfactual invariance: an MMD penalty between a learner's score distributions across bins
of a spurious variable (Wang et al. 2025, causal reward modeling).

    MMD^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y),   k(a, b) = mean_s exp(-(a - b)^2 / (2 s^2))

(Gretton et al. 2012; bandwidths s relative to the scores' standard deviation). :func:`mmd2` is the
biased V-statistic (>= 0, exactly 0 for identical samples). The penalty uses the unbiased
U-statistic (the within-sample sums leave out each score's pairing with itself) between each bin's
scores and the other bins' scores: its expectation is 0 when the score does not depend on the bin,
so it only pushes on a real dependence. The V-statistic's expectation is positive even then (of
order 1 / the bin size) and falls as the scores bunch into clusters, so as a penalty it also
rewards flattening the score, whatever the bins: a cost to utility with nothing removed.
The conditional variant computes it within each label class (e.g. clicked vs not, preferred vs
not) and averages: it removes the spurious variable's effect while keeping what the label
explains, at some cost in bias removal (the unconditional variant removes more, and more utility
with it)."""

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


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate (U-statistic) of MMD^2 between 1-D samples x [n] and y [m] (n, m >= 2);
    may be slightly negative.

    >>> g = torch.Generator().manual_seed(0)
    >>> same = mmd2_unbiased(torch.randn(300, generator=g), torch.randn(300, generator=g), torch.tensor(1.0))
    >>> abs(float(same)) < 0.01
    True
    """
    n, m = x.numel(), y.numel()
    k_xx = (_kernel(x, x, scale, BANDWIDTHS) * n * n - n) / (n * (n - 1))  # k(a, a) = 1
    k_yy = (_kernel(y, y, scale, BANDWIDTHS) * m * m - m) / (m * (m - 1))
    return k_xx + k_yy - 2 * _kernel(x, y, scale, BANDWIDTHS)


def invariance_penalty(
    scores: torch.Tensor,
    bins: torch.Tensor,
    labels: torch.Tensor | None = None,
    min_count: int = 2,
    cap: int = 512,
) -> torch.Tensor:
    """Mean unbiased MMD^2 between each bin's scores and the other bins' scores; within label
    classes if ``labels``.

    scores [N] float, bins [N] long (the spurious variable, bucketed), labels [N] or None.
    Bins with fewer than ``min_count`` samples, or whose complement has fewer, are skipped. At most
    ``cap`` scores per bin and per complement enter the kernel sums (the first ones: callers pass
    shuffled batches), so the cost is O(bins x cap^2) whatever the batch size. Differentiable in
    ``scores``.
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
        for value in b.unique():  # a handful of bins (positions, length buckets)
            inside, outside = s[b == value][:cap], s[b != value][:cap]
            if inside.numel() >= min_count and outside.numel() >= min_count:
                terms.append(mmd2_unbiased(inside, outside, scale))
    return torch.stack(terms).mean() if terms else scores.sum() * 0.0
