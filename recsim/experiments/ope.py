"""The ``ope`` scenario's analysis: off-policy estimates from a retrained, drifting logger's logs,
each with its interval, against the true value, round by round (:mod:`recsim.recsys.ope`).

After the loggers (the arms) have run, every round r >= 1 of every arm and seed is evaluated:

* targets: ``uniform`` (K of the C candidates at random), ``popularity`` (the top-K candidates
  by the clicks the logger collected before round r) and ``oracle`` (the top-K by true
  relevance, the ideal recommender);
* estimators: IPW, SNIPW and DR, whose click model is fitted on round r - 1's log (so it is
  independent of the round it corrects);
* truth: the exact expected clicks per slate of the target on round r's users and candidates.

Writes ``ope.parquet`` (one row per arm, seed, round, target and estimator), ``ope.md`` (coverage,
bias with its interval over seeds, RMSE and interval width; then the first seed's estimates
round by round) and ``ope.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsim.core.config import load_yaml
from recsim.recsys import ope
from recsim.scenario import Scenario

TARGETS = ("uniform", "popularity", "oracle")


def evaluate_arm(logs: pl.DataFrame, config: Any) -> pl.DataFrame:
    """One arm and seed's log (every round) -> its estimates and truths, rounds 1.."""
    devices = tuple(config.world.devices)
    model_name = config.behavior.model
    n_items = config.world.n_items + config.world.new_items_per_round * max(config.loop.rounds - 1, 0)
    clicks_before = np.zeros(n_items)
    previous, rows = None, []
    for (round_,), part in logs.sort("round").group_by("round", maintain_order=True):  # a few rounds
        slates = ope.LoggedSlates.from_log(part, devices)
        if previous is not None:
            click_model = ope.fit_click_model(previous, n_items, len(devices))
            policies = {
                "uniform": ope.uniform(slates),
                "popularity": ope.deterministic(slates, clicks_before[slates.candidates]),
                "oracle": ope.deterministic(slates, slates.relevance),
            }
            for target, policy in policies.items():
                truth = ope.true_value(slates, policy, model_name)
                estimates = {
                    "ipw": ope.ipw(slates, policy),
                    "snipw": ope.snipw(slates, policy),
                    "dr": ope.dr(slates, policy, click_model),
                }
                for estimator, e in estimates.items():
                    rows.append(
                        {
                            "round": int(round_),
                            "target": target,
                            "estimator": estimator,
                            "estimate": e.value,
                            "low": e.low,
                            "high": e.high,
                            "truth": truth,
                            "slates": e.n,
                        }
                    )
        clicks_before += np.bincount(slates.items[slates.clicks > 0], minlength=n_items)
        previous = slates
    return pl.DataFrame(rows)


def summarize(table: pl.DataFrame) -> pl.DataFrame:
    """Per arm, target and estimator: coverage of the truth by the 95% intervals, mean error
    (estimate - truth) with its 95% t-interval over seeds (each seed's mean over rounds), RMSE
    and mean interval width."""
    from recsim.core.stats import interval

    keys = ["arm", "target", "estimator"]
    per_seed = table.group_by([*keys, "seed"]).agg(
        (pl.col("estimate") - pl.col("truth")).mean().alias("error")
    )
    out = []
    for key, part in table.group_by(keys, maintain_order=True):
        errors = per_seed.filter(*(pl.col(k) == v for k, v in zip(keys, key, strict=True)))["error"]
        mean, _, n, low, high = interval(errors.to_numpy())
        err = part["estimate"] - part["truth"]
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "coverage": float(((part["low"] <= part["truth"]) & (part["truth"] <= part["high"])).mean()),
                "error": mean,
                "error_low": low,
                "error_high": high,
                "seeds": n,
                "rmse": float((err**2).mean() ** 0.5),
                "width": float((part["high"] - part["low"]).mean()),
                "truth": float(part["truth"].mean()),
            }
        )
    return pl.DataFrame(out)


class OpeScenario(Scenario):
    """A loop scenario whose arms are loggers; :meth:`post` evaluates targets from their logs."""

    def resolve(self, overrides: Any = (), *, rounds: int | None = None, seed: int | None = None) -> dict:
        configs = super().resolve(overrides, rounds=rounds, seed=seed)
        from recsim.core.config import ConfigError

        for arm, c in configs.items():
            if c.behavior.model not in ope.SEPARABLE:
                raise ConfigError(
                    f"arm '{arm}': behavior.model must be one of {', '.join(ope.SEPARABLE)} for "
                    f"item-position off-policy estimates, got {c.behavior.model}"
                )
            if not c.policy.log_candidates:
                raise ConfigError(
                    f"arm '{arm}': policy.log_candidates must be true (the estimators read them)"
                )
            if not c.policy.repeat_consumption:
                raise ConfigError(
                    f"arm '{arm}': policy.repeat_consumption must be true (with it off, the logger "
                    "cannot show some candidates a target may pick, and the weights are biased)"
                )
            if c.loop.rounds < 2:
                raise ConfigError(
                    f"arm '{arm}': loop.rounds must be >= 2 (round r is evaluated with r - 1's model)"
                )
        return configs

    def post(self, frame: pl.DataFrame, out: Path) -> dict[str, float]:
        from recsim.config import validate
        from recsim.io.logs import scan_logs

        arms = load_yaml((out / "config.yaml").read_text())["arms"]
        logs = scan_logs(out / "logs")
        parts = []
        for arm, raw in arms.items():
            config = validate(raw, arm)
            wanted = ["round", "user", "item", "position", "device", "click", "propensity", "examination"]
            arm_logs = (
                logs.filter(pl.col("arm") == arm)
                .select("seed", *wanted, "candidates", "candidate_relevance")
                .collect()
            )
            for (seed,), part in arm_logs.group_by("seed", maintain_order=True):
                table = evaluate_arm(part, config)
                parts.append(table.select(pl.lit(arm).alias("arm"), pl.lit(seed).alias("seed"), pl.all()))
        order = {"arm": list(arms), "target": list(TARGETS), "estimator": list(ope.ESTIMATORS)}
        table = (
            pl.concat(parts)
            .with_columns(*(pl.col(k).cast(pl.Enum(v)) for k, v in order.items()))
            .sort("arm", "seed", "round", "target", "estimator")
            .with_columns(*(pl.col(k).cast(pl.String) for k in order))
        )
        table.write_parquet(out / "ope.parquet")
        summary = summarize(table)
        (out / "ope.md").write_text(_markdown(summary, table))
        _plot(table, out / "ope.png")
        results = {}
        for row in summary.iter_rows(named=True):
            name = f"{row['arm']}.{row['target']}.{row['estimator']}"
            results[f"{name}.coverage"] = row["coverage"]
            results[f"{name}.error"] = row["error"]
        return results


def _markdown(summary: pl.DataFrame, table: pl.DataFrame) -> str:
    fmt = lambda v: "-" if v is None or not np.isfinite(v) else f"{v:.4f}"  # noqa: E731
    lines = [
        "# Off-policy estimates against the truth",
        "",
        "coverage: share of (seed, round) 95% intervals that hold the true value; error: mean "
        "estimate - truth with its 95% interval over seeds; value = expected clicks per slate.",
        "",
        "| logger | target | estimator | coverage | error [95% interval] | rmse | width | truth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.iter_rows(named=True):
        lines.append(
            f"| {r['arm']} | {r['target']} | {r['estimator']} | {r['coverage']:.2f} | {fmt(r['error'])} "
            f"[{fmt(r['error_low'])}, {fmt(r['error_high'])}] | {fmt(r['rmse'])} | {fmt(r['width'])} | "
            f"{fmt(r['truth'])} |"
        )
    seed = table["seed"].min()
    lines += [
        "",
        f"## Round by round (seed {seed})",
        "",
        "| logger | round | target | truth | ipw | snipw | dr |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    first = table.filter(pl.col("seed") == seed)
    for (arm, round_, target), part in first.group_by(["arm", "round", "target"], maintain_order=True):
        cells = {
            r["estimator"]: f"{r['estimate']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
            for r in part.iter_rows(named=True)
        }
        truth = part["truth"][0]
        lines.append(
            f"| {arm} | {round_} | {target} | {truth:.3f} | "
            + " | ".join(cells.get(e, "-") for e in ope.ESTIMATORS)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _plot(table: pl.DataFrame, path: Path) -> None:
    """Rows: loggers; columns: targets; the first seed's estimates with intervals and the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = table["seed"].min()
    first = table.filter(pl.col("seed") == seed)
    arms = first["arm"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(
        len(arms), len(TARGETS), figsize=(4.2 * len(TARGETS), 2.8 * len(arms)), squeeze=False
    )
    for i, arm in enumerate(arms):
        for j, target in enumerate(TARGETS):
            ax = axes[i][j]
            part = first.filter((pl.col("arm") == arm) & (pl.col("target") == target))
            for k, est in enumerate(ope.ESTIMATORS):
                e = part.filter(pl.col("estimator") == est)
                x = e["round"].to_numpy() + (k - 1) * 0.15
                y = e["estimate"].to_numpy()
                err = np.stack([y - e["low"].to_numpy(), e["high"].to_numpy() - y])
                ax.errorbar(x, y, yerr=err, fmt=".", capsize=2, label=est)
            truth = part.filter(pl.col("estimator") == "ipw")
            ax.plot(truth["round"], truth["truth"], "k-", lw=1, label="truth")
            ax.set_title(f"{arm}: {target}", fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("round")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.93, wspace=0.25, hspace=0.45)
    fig.savefig(path, dpi=100)
    plt.close(fig)
