"""Figures of metrics over rounds (matplotlib, Agg backend, written to PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from recsim.io.atomic import write_with


def _margins(
    fig: object,
    left: float,
    right: float,
    top: float,
    bottom: float,
    wspace: float = 0.28,
    hspace: float = 0.5,
) -> None:
    """Fixed margins in inches (``tight_layout`` draws the whole figure once more to measure it,
    as long again as writing the PNG)."""
    width, height = fig.get_size_inches()  # type: ignore[attr-defined]
    fig.subplots_adjust(  # type: ignore[attr-defined]
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=wspace,
        hspace=hspace,
    )


def plot_curves(frame: pl.DataFrame, metrics: Sequence[str], path: Path, title: str = "") -> Path:
    """One panel per metric, one line per arm, rounds on x: the mean over seeds, with its 95%
    interval as a band where there are several seeds. ``frame``: columns arm, round, metrics (and
    seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recsim.core.stats import curves

    metrics = [m for m in metrics if m in frame.columns]
    frame = curves(frame, metrics) if frame.height else frame
    n = max(len(metrics), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for (arm,), part in frame.sort("round").group_by("arm", maintain_order=True):
            x = part["round"].to_numpy()
            (line,) = ax.plot(x, part[metric].to_numpy(), marker=".", label=str(arm))
            if f"{metric}_low" in part.columns:
                low, high = part[f"{metric}_low"].to_numpy(), part[f"{metric}_high"].to_numpy()
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_title(metric)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    return _save_panels(fig, axes, len(metrics), path, title)


def _save_panels(fig: object, axes: object, used: int, path: Path, title: str = "") -> Path:
    """Hide the panels past ``used``, put the first panel's legend below them, fix the margins,
    write the PNG and close the figure."""
    import matplotlib.pyplot as plt

    for ax in list(axes.flat)[used:]:  # type: ignore[attr-defined]
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()  # type: ignore[attr-defined]
    ncol = min(len(labels), 5) or 1
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)  # type: ignore[attr-defined]
    if title:
        fig.suptitle(title)  # type: ignore[attr-defined]
    legend_rows = -(-max(len(labels), 1) // ncol)
    _margins(fig, left=0.7, right=0.25, top=0.85 if title else 0.45, bottom=0.55 + 0.25 * legend_rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda p: fig.savefig(p, format="png", dpi=110))  # type: ignore[attr-defined]
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
    write_with(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return path


def plot_intervals(stats: pl.DataFrame, path: Path) -> Path:
    """One panel per metric: each arm's mean over seeds with its 95% interval (arms on y).
    ``stats``: rows (arm, metric, mean, low, high) as :func:`recsim.core.stats.describe` gives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(stats["metric"].to_list())) if stats.height else []
    arms = list(dict.fromkeys(stats["arm"].to_list())) if stats.height else []
    n = max(len(metrics), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    height = max(2.4, 0.28 * len(arms) + 1.0)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, height * rows), squeeze=False, sharey=True)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        part = stats.filter(pl.col("metric") == metric)
        y = [arms.index(a) for a in part["arm"]]
        mean = part["mean"].to_numpy()
        low = (part["mean"] - part["low"]).fill_null(0).fill_nan(0).to_numpy()
        high = (part["high"] - part["mean"]).fill_null(0).fill_nan(0).to_numpy()
        ax.errorbar(mean, y, xerr=[low, high], fmt="o", capsize=3)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    axes[0, 0].set_yticks(range(len(arms)), arms)
    axes[0, 0].invert_yaxis()
    longest = max((len(str(a)) for a in arms), default=4)
    _margins(fig, left=0.3 + 0.075 * longest, right=0.2, top=0.35, bottom=0.45, wspace=0.12)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return path


def plot_paired_rounds(
    per_round: pl.DataFrame, path: Path, reference: str | None, window: tuple[int, int] | None = None
) -> Path:
    """One panel per metric, one line per arm: its paired difference to ``reference`` in every
    round with the 95% interval as a band, zero as a dashed line, and the summary's window of
    rounds shaded. ``per_round``: rows as :func:`recsim.core.stats.paired_rounds` gives (each
    line's own reference is named in its label when ``reference`` is None, as the amplification's
    "ARM: closed - open")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(per_round["metric"].to_list())) if per_round.height else []
    n = max(len(metrics), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        part = per_round.filter(pl.col("metric") == metric)
        for (arm,), curve in part.sort("round").group_by("arm", maintain_order=True):
            x = curve["round"].to_numpy()
            (line,) = ax.plot(x, curve["diff"].to_numpy(), marker=".", label=str(arm))
            low, high = curve["low"].to_numpy(), curve["high"].to_numpy()
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.axhline(0.0, color="k", ls="--", lw=0.8)
        if window is not None:
            ax.axvspan(window[0] - 0.5, window[1] + 0.5, color="0.85", zorder=0)
        ax.set_title(f"{metric} - {metric}[{reference}]" if reference else metric, fontsize=9)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    return _save_panels(fig, axes, len(metrics), path)
