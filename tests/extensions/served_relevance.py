"""A metric in one file: the mean true relevance of the items served this round."""

from __future__ import annotations


def served_relevance(view) -> dict[str, float]:  # noqa: ANN001
    """served_relevance = mean over served impressions of rel(u, i), the true P(click | examined)."""
    return {"served_relevance": float(view.fb.true_relevance.mean())}
