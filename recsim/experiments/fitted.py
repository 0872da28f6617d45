"""How closely a fitted world reproduces its log: ``report.md``, ``report.json`` and ``report.png``.

The fitted world is run for ``rounds`` rounds under a uniformly random ranker and under the
popularity ranker (the loop as ``recsim run`` runs it, ``active_share`` of the users a round drawn
by their fitted activity, every item a candidate), and its clicks are set beside the log's
interactions. The simulation's clicks are counted as expected clicks, sum over impressions of
theta(position) x rel(u, i) (the logged truth), so that a few rounds' Bernoulli noise does not
pass for a difference between the distributions:

* item popularity: each item's share of the interactions (log) or of the clicks (simulation);
  its Gini coefficient, the share of the top 10% of items, and the Kolmogorov-Smirnov distance
  between the two samples of shares (``scipy.stats.ks_2samp``; 0 = the same distribution);
* user activity: the same for each user's share;
* marginals: the satisfied share (rating >= ``satisfied_at`` among ratings; expected satisfied
  clicks over expected clicks in the simulation) and the simulated expected click-through rate;
* held-out ranking quality of the fitted truth, from the card (:func:`worldfit.heldout_ranking`).

The log was produced by MovieLens' own recommender and users' searches, not by either policy, so
neither simulated column should match it exactly: the random policy shows what the fitted truth
alone makes of a uniform exposure, the popularity ranker what a feedback loop adds to it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl
import torch

from recsim.core.metrics import gini
from recsim.recsys.datasets import InteractionLog, data_dir

__all__ = ["MOVIELENS_WORLD", "fit_report"]

#: the world ``make data`` fits to MovieLens-100k (the ``movielens`` scenario's)
MOVIELENS_WORLD = str(data_dir() / "worlds" / "ml-100k")

ARMS = {"random": {"ranker": {"name": "random"}}, "popularity": {"ranker": {"name": "popularity"}}}


def _shares(counts: torch.Tensor) -> torch.Tensor:
    return counts / counts.sum().clamp_min(1)


def _top_share(counts: torch.Tensor, fraction: float = 0.1) -> float:
    k = max(1, int(len(counts) * fraction))
    return float(counts.double().sort(descending=True).values[:k].sum() / counts.double().sum().clamp_min(1))


def _counts(frame: pl.DataFrame, key: str, n: int, weight: str | None = None) -> torch.Tensor:
    """[n] rows (or the sum of ``weight``) per value of ``key``."""
    per = frame.group_by(key).agg((pl.col(weight).sum() if weight else pl.len()).cast(pl.Float64).alias("n"))
    out = torch.zeros(n, dtype=torch.float64)
    out[torch.from_numpy(per[key].to_numpy(writable=True))] = torch.from_numpy(
        per["n"].to_numpy(writable=True)
    ).double()
    return out


def simulate(world: Path, rounds: int, active_share: float, seed: int) -> dict[str, pl.DataFrame]:
    """Each arm's impressions: user, item, ``clicks`` = theta x rel (expected clicks) and
    ``satisfied`` = theta x rel x sat."""
    import recsim

    card = json.loads((world / "card.json").read_text())
    active = max(1, round(card["n_users"] * active_share))
    scenario = {
        "name": "world-fit-report",
        "base": {
            "world": {"source": str(world)},
            "loop": {"rounds": rounds, "active_users": active},
            "metrics": {"panel_users": min(64, card["n_users"]), "panel_items": min(500, card["n_items"])},
        },
        "arms": ARMS,
    }
    result = recsim.run(scenario, seeds=[seed], tracking=False)
    try:
        clicks = pl.col("examination").cast(pl.Float64) * pl.col("true_relevance")
        logs = (
            result.logs()
            .select(
                "arm",
                "user",
                "item",
                clicks.alias("clicks"),
                (clicks * pl.col("true_satisfaction")).alias("satisfied"),
            )
            .collect()
        )
    finally:
        result.close()
    return {arm: logs.filter(pl.col("arm") == arm) for arm in ARMS}


def fit_report(
    world: str | Path, log: InteractionLog, rounds: int = 50, active_share: float = 0.2, seed: int = 0
) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``report.png`` into ``world``; return the report."""
    from scipy.stats import ks_2samp

    world = Path(world)
    card = json.loads((world / "card.json").read_text())
    n_users, n_items = log.n_users, log.n_items
    real = log.frame.filter("click")
    sims = simulate(world, rounds, active_share, seed)
    columns: dict[str, dict[str, torch.Tensor]] = {
        "log": {"item": _counts(real, "item", n_items), "user": _counts(real, "user", n_users)}
    }
    rated = log.frame.filter(pl.col("rating").is_not_null())
    satisfied = {
        "log": float((rated["rating"] >= card["options"]["satisfied_at"]).mean()) if rated.height else None
    }
    ctr: dict[str, float | None] = {"log": None}
    for arm, rows in sims.items():
        columns[arm] = {
            "item": _counts(rows, "item", n_items, "clicks"),
            "user": _counts(rows, "user", n_users, "clicks"),
        }
        satisfied[arm] = float(rows["satisfied"].sum() / rows["clicks"].sum())
        ctr[arm] = float(rows["clicks"].mean())
    table: dict[str, dict[str, Any]] = {}
    for name, col in columns.items():
        table[name] = {
            "item_gini": gini(col["item"]),
            "item_top10_share": _top_share(col["item"]),
            "user_gini": gini(col["user"]),
            "user_top10_share": _top_share(col["user"]),
            "satisfied_share": satisfied[name],
            "ctr": ctr[name],
        }
        if name != "log":
            for what in ("item", "user"):
                ks = ks_2samp(_shares(columns["log"][what]).numpy(), _shares(col[what]).numpy())
                table[name][f"ks_{what}_share"] = float(ks.statistic)
    report = {
        "world": str(world),
        "rounds": rounds,
        "active_users": max(1, round(n_users * active_share)),
        "seed": seed,
        "table": table,
        "heldout": card.get("heldout"),
    }
    _write(world, report, columns)
    return report


def _markdown(report: dict[str, Any]) -> str:
    table = report["table"]
    names = list(table)
    rows = list(dict.fromkeys(k for col in table.values() for k in col))
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        f"# Fit report: {report['world']}",
        "",
        f"Simulated: {report['rounds']} rounds, {report['active_users']} active users a round, seed "
        f"{report['seed']}; ks_* = Kolmogorov-Smirnov distance to the log's shares.",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += [f"| {r} | " + " | ".join(fmt(table[n].get(r)) for n in names) + " |" for r in rows]
    held = report.get("heldout")
    if held:
        lines += [
            "",
            f"Held-out ranking ({held['held_out_pairs']} latest pairs of {held['users']} users, "
            "among the items each had not interacted with):",
            "",
            "| ranking | " + " | ".join(held["fitted"]) + " |",
            "|---|" + "---|" * len(held["fitted"]),
        ]
        lines += [
            f"| {k} | " + " | ".join(fmt(v) for v in held[k].values()) + " |"
            for k in ("fitted", "popularity")
        ]
    return "\n".join(lines) + "\n"


def _write(world: Path, report: dict[str, Any], columns: dict[str, dict[str, torch.Tensor]]) -> None:
    """report.json, report.md and report.png, each written to a temporary name and renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, col in columns.items():
        for ax, what in zip(axes[:2], ("item", "user"), strict=True):
            share = _shares(col[what]).sort(descending=True).values
            ax.loglog(torch.arange(1, len(share) + 1), share, label=name)
    for ax, what in zip(axes[:2], ("item", "user"), strict=True):
        floor = 0.1 / float(columns["log"][what].sum())  # a tenth of one logged interaction
        ax.set(title=f"{what} share by rank", xlabel="rank", ylabel="share", ylim=(floor, 1))
        ax.grid(alpha=0.3)
    names = list(report["table"])
    sat = [report["table"][n]["satisfied_share"] or 0.0 for n in names]
    axes[2].bar(names, sat)
    axes[2].set(title="satisfied share", ylim=(0, 1))
    axes[0].legend()
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.15, top=0.9, wspace=0.3)
    for name, write in (
        ("report.png", lambda p: fig.savefig(p, format="png", dpi=110)),
        ("report.json", lambda p: p.write_text(json.dumps(report, indent=2) + "\n")),
        ("report.md", lambda p: p.write_text(_markdown(report))),
    ):
        tmp = world / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, world / name)
    plt.close(fig)
