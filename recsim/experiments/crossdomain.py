"""The cross-domain comparison: the same mitigations, matched knobs, both domains, one figure.

Cascade curves are normalized to round 0 so that the two domains' units drop out: for
``spurious_share`` and ``gini`` the ratio x_r / x_0 (amplification), for the signed ``gap`` the
change x_r - x_0.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsim.scenario import Scenario

CASCADE = (("spurious_share", "ratio"), ("gap", "change"), ("gini", "ratio"))


def cascade_curves(frame: pl.DataFrame) -> pl.DataFrame:
    """Per arm and round: each cascade metric normalized to the arm's round 0."""
    first = pl.col("round") == pl.col("round").min().over("arm")
    exprs = []
    for metric, kind in CASCADE:
        base = pl.col(metric).filter(first).first().over("arm")
        exprs.append(
            (pl.col(metric) / base if kind == "ratio" else pl.col(metric) - base).alias(f"{metric}_{kind}")
        )
    return frame.sort("arm", "round").select("arm", "domain", "round", *exprs)


def plot_cascade(curves: pl.DataFrame, path: Path) -> Path:
    """Rows: cascade metrics; columns: domains; one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = curves["domain"].unique(maintain_order=True).to_list()
    names = [c for c in curves.columns if c not in ("arm", "domain", "round")]
    fig, axes = plt.subplots(
        len(names), len(domains), figsize=(5.5 * len(domains), 3 * len(names)), squeeze=False
    )
    for j, domain in enumerate(domains):
        part = curves.filter(pl.col("domain") == domain)
        for i, name in enumerate(names):
            ax = axes[i][j]
            for (arm,), arm_part in part.group_by("arm", maintain_order=True):
                ax.plot(arm_part["round"], arm_part[name], marker=".", label=str(arm))
            ax.set_title(f"{domain}: {name}")
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        axes[0][j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class CrossDomainScenario(Scenario):
    """Writes ``cascade.parquet`` and ``cascade.png`` after the run; logs each arm's final
    amplification on the parent run."""

    def post(self, frame: pl.DataFrame, out: Path) -> dict[str, float]:
        curves = cascade_curves(frame)
        curves.write_parquet(out / "cascade.parquet")
        plot_cascade(curves, out / "cascade.png")
        last = curves.filter(pl.col("round") == pl.col("round").max().over("arm"))
        results = {}
        for row in last.iter_rows(named=True):
            for name in curves.columns[3:]:
                if row[name] is not None:
                    results[f"{row['arm']}.{name}"] = float(row[name])
        return results
