"""Draw the README's figure from the default run: `make figure` (or `python docs/figure.py [RUN]`).

Runs `feedback-loop` as `make run` does (3 seeds, tracking off, in a temporary folder), or reads a
finished run folder given as the argument, and writes docs/figures/feedback-loop.png: gold and
ndcg_truth per arm (mean over seeds, 95% band) and the per-round paired difference of the tower
arm to the plain MMoE arm in ndcg_truth, with its band and the scenario's window shaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

import recsim  # noqa: E402
from recsim.core.stats import interval  # noqa: E402

OUT = Path(__file__).resolve().parent / "figures" / "feedback-loop.png"
CURVES = ("gold", "ndcg_truth")
TREATMENT, REFERENCE = "mmoe-shallow-tower", "mmoe"


def draw(result: recsim.Result, path: Path = OUT) -> Path:
    metrics = result.metrics
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, metric in zip(axes, CURVES, strict=False):
        for arm in metrics["arm"].unique(maintain_order=True):
            rows = metrics.filter(pl.col("arm") == arm).group_by("round").agg(pl.col(metric)).sort("round")
            stats = [interval(np.asarray(v, dtype=float)) for v in rows[metric].to_list()]
            rounds = rows["round"].to_list()
            ax.plot(rounds, [s[0] for s in stats], label=arm)
            ax.fill_between(rounds, [s[3] for s in stats], [s[4] for s in stats], alpha=0.2)
        ax.set_title(metric)
        ax.set_xlabel("round")
    axes[0].legend(fontsize=8)
    diff = result.rounds(reference=REFERENCE, metrics=["ndcg_truth"]).filter(pl.col("arm") == TREATMENT)
    ax = axes[2]
    ax.plot(diff["round"], diff["diff"], color="C1")
    ax.fill_between(diff["round"], diff["low"], diff["high"], color="C1", alpha=0.2)
    ax.axhline(0, color="grey", lw=0.8)
    if result.window is not None:
        ax.axvspan(result.window[0], result.window[1], color="grey", alpha=0.12, label="window")
        ax.legend(fontsize=8)
    n = metrics["seed"].n_unique()
    ax.set_title(f"ndcg_truth: {TREATMENT} - {REFERENCE} (paired, {n} seeds)", fontsize=9)
    ax.set_xlabel("round")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str]) -> None:
    if argv:
        print(draw(recsim.load(argv[0])))
        return
    result = recsim.run("feedback-loop", seeds=3, tracking=False)
    try:
        print(draw(result))
    finally:
        result.close()


if __name__ == "__main__":
    main(sys.argv[1:])
