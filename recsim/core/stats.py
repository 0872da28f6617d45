"""Statistics over seeds: means with 95% intervals, and paired differences to a reference arm.

A study runs every arm on every seed; arms of one seed share the world, so a comparison between
two arms is paired by seed. Per arm and metric, the value of one seed is the metric in the final
round (or its mean over a window of rounds). Then, over the n seeds:

- mean, sample standard deviation sd, n, and the 95% t-interval mean +- t_{0.975, n-1} sd / sqrt(n)
  (Student 1908; ``scipy.stats.t``);
- for every arm but the reference, the paired difference d_s = x_{arm, s} - x_{ref, s}: its mean,
  t-interval and the two-sided paired t-test p-value (``scipy.stats.ttest_rel``). The difference
  is *distinguishable* from zero when its interval excludes 0; with n < 2 there is no interval
  and nothing is distinguishable;
- its power: the minimum detectable effect of the paired design at 95% two-sided and 80% power,
  MDE = (t_{0.975, n-1} + t_{0.8, n-1}) sd / sqrt(n), and the seeds a study would need to detect
  half the observed difference at that power (:func:`seeds_needed`);
- per round, the same paired difference (:func:`paired_rounds`), and the round from which its
  interval stays on one side of zero (:func:`settling_round`): before it the two loops are still
  pulling apart (the transient), so effects are read over a window of rounds after it;
- the loop's amplification of a metric (:func:`amplification`): an arm run closed-loop on its
  own logs minus the same arm on a fixed logger's logs (open) or on random ones, paired by seed
  as above.

>>> import polars as pl
>>> frame = pl.DataFrame({"arm": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
...                       "round": [0] * 6, "gold": [1.0, 2.0, 3.0, 2.0, 3.1, 3.9]})
>>> s = describe(frame, ["gold"])
>>> s.filter(pl.col("arm") == "a").select("mean", "sd", "n").row(0)
(2.0, 1.0, 3)
>>> d = paired(frame, ["gold"], "a").row(0, named=True)
>>> round(d["diff"], 3), d["distinguishable"]
(1.0, True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import polars as pl

LEVEL = 0.95


def per_seed(
    frame: pl.DataFrame, metrics: Sequence[str], window: tuple[int, int] | None = None
) -> pl.DataFrame:
    """One row per (arm, seed): each metric in the arm's final round, or its mean over the rounds
    ``window`` = (first, last) inclusive. Arms keep their first-seen order."""
    seed = frame["seed"] if "seed" in frame.columns else pl.Series("seed", [0] * frame.height)
    frame = frame.with_columns(seed.alias("seed"))
    cols = [m for m in metrics if m in frame.columns]
    if window is None:
        last = frame.sort("round").group_by("arm", "seed", maintain_order=True).last()
        picked = last.select("arm", "seed", *cols)
    else:
        inside = frame.filter(pl.col("round").is_between(*window))
        picked = inside.group_by("arm", "seed", maintain_order=True).agg(pl.col(cols).mean())
    order = {arm: i for i, arm in enumerate(dict.fromkeys(frame["arm"].to_list()))}
    return picked.sort(pl.col("arm").replace_strict(order, return_dtype=pl.Int64), "seed")


@functools.cache
def t_quantile(df: int) -> float:
    """The t distribution's ``0.5 + LEVEL / 2`` quantile with ``df`` degrees of freedom (scipy;
    cached: a run's curves ask for the same few thousands of times)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


POWER = 0.8


@functools.cache
def _t(q: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def mde(sd: float, n: int) -> float:
    """Minimum detectable effect of a paired design with ``n`` seeds and per-seed sd ``sd``, at
    95% two-sided and 80% power: (t_{0.975, n-1} + t_{0.8, n-1}) sd / sqrt(n) (NaN if n < 2).

    >>> round(mde(1.0, 10), 3)
    0.995
    """
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return (t_quantile(n - 1) + _t(POWER, n - 1)) * sd / math.sqrt(n)


def seeds_needed(sd: float, effect: float, limit: int = 100_000) -> int | None:
    """The fewest seeds n >= 2 whose :func:`mde` at per-seed sd ``sd`` is at most ``|effect|``
    (None: more than ``limit``, or no effect or sd to speak of).

    >>> seeds_needed(1.0, 1.0), seeds_needed(1.0, 0.5), seeds_needed(0.0, 0.5)
    (10, 34, 2)
    """
    if not (math.isfinite(sd) and math.isfinite(effect)) or effect == 0:
        return None
    if sd == 0:
        return 2
    guess = max(2, int(((1.96 + 0.8416) * sd / abs(effect)) ** 2))  # the normal approximation
    if guess > limit:
        return None
    n = guess
    while n > 2 and mde(sd, n - 1) <= abs(effect):
        n -= 1
    while mde(sd, n) > abs(effect):
        n += 1
        if n > limit:
            return None
    return n


def interval(values: np.ndarray) -> tuple[float, float, int, float, float]:
    """(mean, sd, n, low, high) of the finite ``values``, with the 95% t-interval (NaN if n < 2)."""
    x = values[np.isfinite(values)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0, math.nan, math.nan
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, n, math.nan, math.nan
    sd = float(x.std(ddof=1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return mean, sd, n, mean - half, mean + half


def missing_units(frame: pl.DataFrame, metrics: Sequence[str]) -> str | None:
    """The first metric some seeds of an arm's round have and others lack (a value a worker could
    not compute), as a sentence naming the unit and the round; None when every (arm, round) has
    each metric on all its seeds or on none (a metric of another domain, or one a round does not
    measure)."""
    if "seed" not in frame.columns:
        return None
    for name in metrics:
        counts = frame.group_by("arm", "round", maintain_order=True).agg(
            pl.col(name).is_null().sum().alias("missing"), pl.len().alias("rows")
        )
        partial = counts.filter((pl.col("missing") > 0) & (pl.col("missing") < pl.col("rows")))
        if partial.height:
            arm, round_ = partial["arm"][0], partial["round"][0]
            gaps = frame.filter((pl.col("arm") == arm) & (pl.col("round") == round_) & pl.col(name).is_null())
            seeds = ", ".join(f"seed={s}" for s in gaps["seed"].head(3).to_list())
            return (
                f"metric {name!r} is missing from unit {arm}/{seeds} in round {round_}, "
                "where the arm's other seeds have it"
            )
    return None


def describe(
    frame: pl.DataFrame, metrics: Sequence[str], window: tuple[int, int] | None = None
) -> pl.DataFrame:
    """Rows (arm, metric, mean, sd, n, low, high): each arm's metric over seeds."""
    seeds = per_seed(frame, metrics, window)
    rows = []
    for (arm,), part in seeds.group_by("arm", maintain_order=True):
        for m in [m for m in metrics if m in seeds.columns]:
            values = part[m].cast(pl.Float64).fill_null(math.nan).to_numpy()
            mean, sd, n, low, high = interval(values)
            rows.append({"arm": arm, "metric": m, "mean": mean, "sd": sd, "n": n, "low": low, "high": high})
    return pl.DataFrame(rows, schema=_SCHEMA)


def paired(
    frame: pl.DataFrame, metrics: Sequence[str], reference: str, window: tuple[int, int] | None = None
) -> pl.DataFrame:
    """Rows (arm, metric, diff, sd, n, low, high, p, distinguishable, mde, seeds_for_half): each
    arm minus ``reference``, paired by seed over the seeds both have, with the paired t-test's
    two-sided p-value, the design's :func:`mde` and the seeds that would detect half ``diff``."""
    seeds = per_seed(frame, metrics, window)
    ref = seeds.filter(pl.col("arm") == reference)
    rows = []
    for (arm,), part in seeds.group_by("arm", maintain_order=True):
        if arm == reference:
            continue
        both = part.join(ref, on="seed", suffix="__ref")
        for m in [m for m in metrics if m in seeds.columns]:
            a = both[m].cast(pl.Float64).fill_null(math.nan).to_numpy()
            b = both[f"{m}__ref"].cast(pl.Float64).fill_null(math.nan).to_numpy()
            ok = np.isfinite(a) & np.isfinite(b)
            mean, sd, n, low, high = interval(a[ok] - b[ok])
            p = math.nan
            if n >= 2 and sd > 0:
                from scipy import stats  # imported only when there is a test to run (0.4 s)

                p = float(stats.ttest_rel(a[ok], b[ok]).pvalue)
            rows.append(
                {
                    "arm": arm,
                    "metric": m,
                    "diff": mean,
                    "sd": sd,
                    "n": n,
                    "low": low,
                    "high": high,
                    "p": p,
                    "distinguishable": bool(n >= 2 and (low > 0 or high < 0)),
                    "mde": mde(sd, n),
                    "seeds_for_half": seeds_needed(sd, mean / 2) if n >= 2 else None,
                }
            )
    return pl.DataFrame(rows, schema=_PAIRED_SCHEMA)


def paired_rounds(frame: pl.DataFrame, metrics: Sequence[str], reference: str) -> pl.DataFrame:
    """Rows (arm, metric, round, diff, sd, n, low, high): each arm minus ``reference`` in every
    round, paired by seed, with its 95% t-interval (the per-round paired difference). Arms in
    first-seen order, metrics in the order given, rounds ascending."""
    seed = frame["seed"] if "seed" in frame.columns else pl.Series("seed", [0] * frame.height)
    frame = frame.with_columns(seed.alias("seed"))
    cols = [m for m in metrics if m in frame.columns]
    ref = frame.filter(pl.col("arm") == reference).select("seed", "round", *cols)
    rows = []
    for (arm,), part in frame.group_by("arm", maintain_order=True):
        if arm == reference:
            continue
        both = part.select("seed", "round", *cols).join(ref, on=["seed", "round"], suffix="__ref")
        by_round = list(both.sort("round").group_by("round", maintain_order=True))
        for m in cols:
            for (r,), at in by_round:
                a = at[m].cast(pl.Float64).fill_null(math.nan).to_numpy()
                b = at[f"{m}__ref"].cast(pl.Float64).fill_null(math.nan).to_numpy()
                mean, sd, n, low, high = interval(a - b)
                rows.append(
                    {
                        "arm": arm,
                        "metric": m,
                        "round": r,
                        "diff": mean,
                        "sd": sd,
                        "n": n,
                        "low": low,
                        "high": high,
                    }
                )
    schema = {
        "arm": pl.String,
        "metric": pl.String,
        "round": pl.Int64,
        **{k: _PAIRED_SCHEMA[k] for k in ("diff", "sd", "n", "low", "high")},
    }
    return pl.DataFrame(rows, schema=schema)


def settling_round(
    rounds: Sequence[int], low: Sequence[float], high: Sequence[float]
) -> tuple[int, int] | None:
    """The first round from which the paired difference's interval stays on one side of zero
    through the last round, and that side (+1 above, -1 below); None when the last round's
    interval covers zero (or is undefined): the difference does not settle.

    >>> settling_round([0, 1, 2, 3], [-1.0, 0.1, -0.2, 0.1], [1.0, 0.5, 0.4, 0.3])
    (3, 1)
    >>> settling_round([0, 1, 2], [-0.5, -0.4, -0.3], [-0.1, -0.2, -0.1])
    (0, -1)
    >>> settling_round([0, 1], [0.1, -0.1], [0.2, 0.1]) is None
    True
    """
    side = 0
    first = None
    for r, lo, hi in zip(rounds, low, high, strict=True):
        lo, hi = (math.nan if v is None else v for v in (lo, hi))
        here = 1 if lo > 0 else -1 if hi < 0 else 0  # NaN compares False: 0
        if here != 0 and here == side:
            continue
        side, first = here, (r if here != 0 else None)
    return (int(first), side) if first is not None and side != 0 else None


def settled(per_round: pl.DataFrame) -> pl.DataFrame:
    """Rows (arm, metric, settles, side) from :func:`paired_rounds`' rows: the
    :func:`settling_round` of each arm and metric (null when it does not settle)."""
    rows = []
    for (arm, metric), part in per_round.group_by("arm", "metric", maintain_order=True):
        part = part.sort("round")
        found = settling_round(part["round"].to_list(), part["low"].to_list(), part["high"].to_list())
        rows.append(
            {
                "arm": arm,
                "metric": metric,
                "settles": found[0] if found else None,
                "side": found[1] if found else 0,
            }
        )
    schema = {"arm": pl.String, "metric": pl.String, "settles": pl.Int64, "side": pl.Int64}
    return pl.DataFrame(rows, schema=schema)


def amplification(
    frame: pl.DataFrame,
    metrics: Sequence[str],
    pairs: Sequence[tuple[str, str, str]],
    window: tuple[int, int] | None = None,
) -> pl.DataFrame:
    """Rows (arm, mode, metric, and :func:`paired`'s columns): for each ``(arm, mode, other)`` of
    ``pairs`` (the closed-loop arm, the feedback mode of ``other``, the arm that differs from it
    only in that mode), arm - other paired by seed: what retraining on its own decisions adds to
    each metric, its amplification.

    >>> f = pl.DataFrame({"arm": ["a"] * 2 + ["a@open"] * 2, "seed": [0, 1] * 2, "round": [0] * 4,
    ...                   "gini": [0.5, 0.6, 0.3, 0.5]})
    >>> row = amplification(f, ["gini"], [("a", "open", "a@open")]).row(0, named=True)
    >>> row["arm"], row["mode"], round(row["diff"], 3)
    ('a', 'open', 0.15)
    """
    parts = [
        paired(frame.filter(pl.col("arm").is_in([arm, other])), metrics, other, window).with_columns(
            arm=pl.lit(arm), mode=pl.lit(mode)
        )
        for arm, mode, other in pairs
    ]
    schema = {"arm": pl.String, "mode": pl.String, **{k: v for k, v in _PAIRED_SCHEMA.items() if k != "arm"}}
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat(parts).select(list(schema))


def amplification_rounds(
    frame: pl.DataFrame, metrics: Sequence[str], pairs: Sequence[tuple[str, str, str]]
) -> pl.DataFrame:
    """:func:`paired_rounds` of each pair of :func:`amplification`, with ``arm`` named
    "ARM: closed - MODE" (rows arm, metric, round, diff, sd, n, low, high)."""
    parts = [
        paired_rounds(frame.filter(pl.col("arm").is_in([arm, other])), metrics, other).with_columns(
            arm=pl.lit(f"{arm}: closed - {mode}")
        )
        for arm, mode, other in pairs
    ]
    return pl.concat(parts) if parts else paired_rounds(frame.clear(), metrics, "")


def curves(frame: pl.DataFrame, metrics: Sequence[str]) -> pl.DataFrame:
    """Per (arm, round): the mean over seeds of each metric and its 95% interval, as columns
    ``M``, ``M_low``, ``M_high`` (the interval is NaN with one seed)."""
    cols = [m for m in metrics if m in frame.columns]
    rows = []
    for (arm, r), part in frame.group_by("arm", "round", maintain_order=True):
        row: dict[str, object] = {"arm": arm, "round": r}
        for m in cols:
            mean, _, _, low, high = interval(part[m].cast(pl.Float64).fill_null(math.nan).to_numpy())
            row.update({m: mean, f"{m}_low": low, f"{m}_high": high})
        rows.append(row)
    return pl.DataFrame(rows).sort("round", maintain_order=True) if rows else pl.DataFrame()


_SCHEMA = {
    "arm": pl.String,
    "metric": pl.String,
    "mean": pl.Float64,
    "sd": pl.Float64,
    "n": pl.Int64,
    "low": pl.Float64,
    "high": pl.Float64,
}
_PAIRED_SCHEMA = {
    "arm": pl.String,
    "metric": pl.String,
    "diff": pl.Float64,
    "sd": pl.Float64,
    "n": pl.Int64,
    "low": pl.Float64,
    "high": pl.Float64,
    "p": pl.Float64,
    "distinguishable": pl.Boolean,
    "mde": pl.Float64,
    "seeds_for_half": pl.Int64,
}
