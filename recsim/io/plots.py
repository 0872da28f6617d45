"""Figures of metrics over rounds (matplotlib, Agg backend, written to PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl


def plot_curves(frame: pl.DataFrame, metrics: Sequence[str], path: Path, title: str = "") -> Path:
    """One panel per metric, one line per arm, rounds on x. ``frame``: columns arm, round, metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if m in frame.columns]
    n = max(len(metrics), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for (arm,), part in frame.sort("round").group_by("arm", maintain_order=True):
            ax.plot(part["round"].to_numpy(), part[metric].to_numpy(), marker=".", label=str(arm))
        ax.set_title(metric)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5) or 1, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_position_curves(frame: pl.DataFrame, path: Path) -> Path:
    """Learned (solid) vs true (dashed) log-examination offsets in each arm's last round, per device.

    ``frame``: columns arm, round, device, position, learned, true.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = frame.filter(pl.col("round") == pl.col("round").max().over("arm"))
    devices = last["device"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(devices), figsize=(5 * len(devices), 3.6), squeeze=False)
    for ax, device in zip(axes[0], devices, strict=True):
        part = last.filter(pl.col("device") == device)
        truth = part.filter(pl.col("arm") == part["arm"][0]).sort("position")
        ax.plot(truth["position"], truth["true"], "k--", lw=2, label="true")
        for (arm,), curve in part.group_by("arm", maintain_order=True):
            curve = curve.sort("position")
            ax.plot(curve["position"], curve["learned"], marker=".", label=str(arm))
        ax.set_title(f"log theta(k)/theta(1), {device}")
        ax.set_xlabel("position k")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
