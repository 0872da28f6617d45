"""Run the claims' studies and write the validation report.

Layout of the output folder::

    studies/STUDY/SETTING/     a run folder per study and setting (metrics.parquet, ...), and
                               study.json: what was run (scenario, arms, overrides, seeds) and at
                               which commit; a folder without it is unfinished and is run again
    report.json, report.md     per claim and setting: n seeds, the statistic's mean, its 95%
                               t-interval, the one-sample t-test's p, the minimum detectable
                               effect at n seeds, the seeds that would detect half the mean,
                               the round from which the per-round statistic settles, and the
                               verdict (holds, opposite, under-powered, not distinguishable)
    figures/CLAIM.png          the statistic per setting with its interval

A finished study folder whose study.json matches what would be run is re-used, so claims can be
run a few at a time (``--only``) into one folder and the report assembled at the end. Nothing of
the report is written before every study it needs has finished.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsim.core.config import ConfigError
from recsim.core.stats import interval, mde, seeds_needed, settling_round
from recsim.validation.claims import CLAIMS, STUDIES, Claim, Setting, Study

QUICK_SEEDS = 2
README_START = "<!-- validation:start -->"
README_END = "<!-- validation:end -->"


@dataclass
class SettingResult:
    """One claim in one setting."""

    setting: str
    n: int
    mean: float
    low: float
    high: float
    p: float
    holds: bool
    values: dict[int, float]
    commit: str
    mde: float = math.nan
    seeds_for_half: int | None = None
    settles: int | None = None
    verdict: str = ""
    rounds: tuple[int, int] | None = None

    @property
    def sd(self) -> float:
        x = np.array(list(self.values.values()), dtype=float)
        return float(x.std(ddof=1)) if len(x) >= 2 else math.nan


#: what a setting's result says: the interval excludes zero on the claimed side; on the other
#: side; covers zero while the smallest effect the study can detect exceeds the paper's; covers zero.
VERDICTS = ("holds", "opposite", "under-powered", "not distinguishable")


def verdict(claim: Claim, n: int, low: float, high: float, detectable: float) -> str:
    """One of :data:`VERDICTS` for a setting's interval [low, high] over ``n`` seeds."""
    if n >= 2 and (low > 0 if claim.direction > 0 else high < 0):
        return "holds"
    if n >= 2 and (high < 0 if claim.direction > 0 else low > 0):
        return "opposite"
    if claim.effect is not None and not (math.isfinite(detectable) and detectable <= abs(claim.effect)):
        return "under-powered"
    return "not distinguishable"


def plan(only: Sequence[str] | None = None) -> tuple[list[Claim], list[Study]]:
    """The claims to evaluate (all, or those named; a study id names all its claims) and the
    studies they need, in registry order. Unknown names raise :class:`ConfigError`."""
    names = list(only or [])
    unknown = [n for n in names if n not in CLAIMS and n not in STUDIES]
    if unknown:
        raise ConfigError(
            f"unknown claim or study {unknown[0]!r}; claims: {', '.join(CLAIMS)}; "
            f"studies: {', '.join(STUDIES)}"
        )
    claims = [c for c in CLAIMS.values() if not names or c.id in names or c.study in names]
    needed = {c.study for c in claims}
    return claims, [s for s in STUDIES.values() if s.id in needed]


def settings_of(study: Study, quick: bool) -> list[Setting]:
    """The study's settings; ``quick``: its first, with the study's small-size overrides added."""
    if not quick:
        return list(study.settings)
    first = study.settings[0]
    return [Setting(first.name, (*first.overrides, *study.quick))]


def spec(study: Study, setting: Setting, quick: bool) -> dict[str, Any]:
    """What a study folder holds, to decide whether a finished one can be re-used: the study, the
    setting, the seeds, and a fingerprint of every arm's resolved config (so a changed scenario
    or default is run again)."""
    return {
        "study": study.id,
        "scenario": study.scenario,
        "arms": list(study.arms),
        "setting": setting.name,
        "overrides": list(setting.overrides),
        "seeds": list(range(QUICK_SEEDS if quick else study.seeds)),
        "config": fingerprint(study, setting),
    }


def fingerprint(study: Study, setting: Setting) -> str:
    """sha256 of the resolved configs of the study's arms in ``setting`` (tracking left out)."""
    import hashlib

    from recsim.scenario import Scenario, load_scenario

    sc = load_scenario(study.scenario)
    if isinstance(sc, Scenario):
        sc = replace(sc, arms={a: sc.arms[a] for a in study.arms if a in sc.arms})
    configs = sc.resolve(list(setting.overrides))
    dumped = {
        name: {k: v for k, v in c.model_dump(mode="json").items() if k != "tracking"}
        for name, c in configs.items()
        if hasattr(c, "model_dump")
    }
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_setting(
    study: Study, setting: Setting, seeds: list[int], folder: Path, workers: int, threads: int | None
) -> pl.DataFrame:
    """Run the study's arms in one setting on ``seeds`` into ``folder``; its metrics frame
    (arm, seed, round, metrics)."""
    from recsim.experiments.ma import MaScenario
    from recsim.experiments.utility import UtilityScenario
    from recsim.scenario import Scenario, load_scenario

    sc = load_scenario(study.scenario)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(sc, MaScenario):
        frame = _ma_frame(sc, list(setting.overrides), seeds, threads)
    elif isinstance(sc, UtilityScenario):
        frame = _utility_frame(sc, list(setting.overrides), seeds, threads)
    elif isinstance(sc, Scenario):
        import recsim

        missing = [a for a in study.arms if a not in sc.arms]
        if missing:
            raise ConfigError(f"study {study.id}: scenario {sc.name} has no arms {missing}")
        subset = replace(sc, arms={a: sc.arms[a] for a in study.arms})
        result = recsim.run(
            subset,
            seeds=seeds,
            overrides=list(setting.overrides),
            out=folder / "run",
            workers=workers,
            threads=threads,
            tracking=False,
        )
        return result.metrics
    else:
        raise ConfigError(f"study {study.id}: scenario {study.scenario} cannot be validated")
    from recsim.io.logs import write_atomic

    (folder / "run").mkdir(exist_ok=True)
    write_atomic(frame, folder / "run" / "metrics.parquet")
    return frame


def _ma_frame(sc: Any, overrides: list[str], seeds: list[int], threads: int | None) -> pl.DataFrame:
    """Ma et al.'s experiment with one row per (model@correlation, seed): final train and test loss.
    A seed is a repeat: its own data set and initialization, shared by the models (paired)."""
    import torch

    from recsim.experiments.ma import make_tasks, train_one

    if threads:
        torch.set_num_threads(threads)
    config = sc.resolve(overrides)["experiment"]
    rows = []
    for p in config.correlations:
        for seed in seeds:
            data = make_tasks(config, p, seed)
            for model in config.models:
                last: dict[str, float] = {}

                def record(epoch: int, tr: float, te: float, last: dict[str, float] = last) -> None:
                    last.update(round=epoch, train_loss=tr, test_loss=te)

                train_one(config, model, data, seed, record)
                rows.append({"arm": f"{model}@{p:g}", "seed": seed, **last})
    return pl.DataFrame(rows).with_columns(pl.col("seed", "round").cast(pl.Int64))


def _utility_frame(sc: Any, overrides: list[str], seeds: list[int], threads: int | None) -> pl.DataFrame:
    """Autor et al.'s experiment, one row per (learner, seed = repeat)."""
    import torch

    from recsim.experiments.utility import run_utility

    if threads:
        torch.set_num_threads(threads)
    if seeds != list(range(len(seeds))):
        raise ConfigError("the utility study's seeds are its repeats 0..n-1")
    cfg = sc.resolve(overrides)["experiment"].model_copy(update={"repeats": len(seeds)})
    rows = [
        {
            "arm": r["learner"],
            "seed": r["repeat"],
            "round": 0,
            **{k: v for k, v in r.items() if k not in ("learner", "repeat")},
        }
        for r in run_utility(cfg)
    ]
    return pl.DataFrame(rows).with_columns(pl.col("seed", "round").cast(pl.Int64))


def study_frames(
    study: Study,
    out: Path,
    quick: bool,
    workers: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, tuple[pl.DataFrame, str]]:
    """setting name -> (metrics frame, commit it ran at), running what is not finished in ``out``."""
    from recsim.io.tracking import git_commit

    frames = {}
    for setting in settings_of(study, quick):
        folder = out / "studies" / study.id / setting.name.replace("/", "_")
        want = spec(study, setting, quick)
        record = folder / "study.json"
        if record.is_file():
            saved = json.loads(record.read_text())
            if {k: saved.get(k) for k in want} == want and (folder / "run" / "metrics.parquet").is_file():
                frames[setting.name] = (pl.read_parquet(folder / "run" / "metrics.parquet"), saved["commit"])
                log(f"{study.id} / {setting.name}: re-used ({saved['commit'][:8]})")
                continue
        if folder.exists():
            shutil.rmtree(folder)  # unfinished, or another spec: ours to replace
        started = dt.datetime.now(dt.UTC)
        frame = run_setting(study, setting, want["seeds"], folder, workers, threads)
        seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
        commit = git_commit()
        from recsim.io.atomic import write_json

        write_json({**want, "commit": commit, "seconds": round(seconds, 1)}, record)
        frames[setting.name] = (frame, commit)
        log(f"{study.id} / {setting.name}: {seconds:.0f} s")
    return frames


def evaluate(claim: Claim, frames: dict[str, tuple[pl.DataFrame, str]]) -> list[SettingResult]:
    """The claim's statistic per setting: mean, 95% t-interval over seeds, p, holds, the minimum
    detectable effect and the seeds for half the mean, where the per-round statistic settles (for
    statistics that have one per round) and the verdict."""
    from scipy import stats

    results = []
    for name, (frame, commit) in frames.items():
        values = claim.statistic.values(frame)
        x = np.array(list(values.values()), dtype=float)
        mean, sd, n, low, high = interval(x)
        p = float(stats.ttest_1samp(x, 0.0).pvalue) if n >= 2 and sd > 0 else math.nan
        holds = bool(n >= 2 and (low > 0 if claim.direction > 0 else high < 0))
        detectable = mde(sd, n)
        half = seeds_needed(sd, mean / 2) if n >= 2 else None
        reads = getattr(claim.statistic, "rounds_read", None)
        results.append(
            SettingResult(
                name,
                n,
                mean,
                low,
                high,
                p,
                holds,
                values,
                commit,
                detectable,
                half,
                settles(claim, frame),
                verdict(claim, n, low, high, detectable),
                reads(frame) if reads is not None else None,
            )
        )
    return results


def settles(claim: Claim, frame: pl.DataFrame) -> int | None:
    """The round from which the statistic's per-round 95% interval stays on one side of zero
    through the last round (None: it does not settle, or the statistic has no per-round value)."""
    per_round = getattr(claim.statistic, "per_round", None)
    if per_round is None:
        return None
    rounds, lows, highs = [], [], []
    for r, by_seed in per_round(frame).items():
        _, _, _, low, high = interval(np.array(list(by_seed.values()), dtype=float))
        rounds.append(r)
        lows.append(low)
        highs.append(high)
    found = settling_round(rounds, lows, highs)
    return found[0] if found else None


def validate(
    out: str | Path,
    *,
    only: Sequence[str] | None = None,
    quick: bool = False,
    workers: int = 0,
    threads: int | None = None,
    tracking_uri: str | None = None,
    readme: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the studies of the claims (all, or ``only``) into ``out``, evaluate every claim per
    setting, write report.json, report.md and figures/CLAIM.png, log them to MLflow at
    ``tracking_uri`` (None: not logged) and, with ``readme``, rewrite its validation table.
    Returns the report (what report.json holds)."""
    from recsim.io.tracking import git_commit

    claims, studies = plan(only)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder")
    if readme is not None:
        readme = Path(readme)
        text = readme.read_text() if readme.is_file() else ""
        if README_START not in text or README_END not in text:
            raise ConfigError(f"{readme} has no {README_START} ... {README_END} block to rewrite")
    tracker = None
    if tracking_uri is not None:
        from recsim.io.tracking import MlflowTracker

        tracker = MlflowTracker(tracking_uri, "validation")
        tracker.check()
    out.mkdir(parents=True, exist_ok=True)
    frames = {s.id: study_frames(s, out, quick, workers, threads, log) for s in studies}
    report = {
        "date": dt.date.today().isoformat(),
        "commit": git_commit(),
        "quick": quick,
        "studies": {
            s.id: {
                "scenario": s.scenario,
                "arms": list(s.arms),
                "seeds": QUICK_SEEDS if quick else s.seeds,
                "about": s.about,
                "settings": {x.name: list(x.overrides) for x in settings_of(s, quick)},
            }
            for s in studies
        },
        "claims": [],
    }
    for claim in claims:
        results = evaluate(claim, frames[claim.study])
        report["claims"].append(
            {
                "identical": identical_settings(results),
                "id": claim.id,
                "paper": claim.paper,
                "claim": claim.claim,
                "study": claim.study,
                "statistic": claim.statistic.text(),
                "direction": "> 0" if claim.direction > 0 else "< 0",
                "regime": claim.regime,
                "held": sum(r.holds for r in results),
                "effect": claim.effect,
                "settings": [
                    {
                        "setting": r.setting,
                        "n": r.n,
                        "mean": _finite(r.mean),
                        "low": _finite(r.low),
                        "high": _finite(r.high),
                        "p": _finite(r.p),
                        "holds": r.holds,
                        "verdict": r.verdict,
                        "mde": _finite(r.mde),
                        "seeds_for_half": r.seeds_for_half,
                        "settles": r.settles,
                        "rounds": list(r.rounds) if r.rounds is not None else None,
                        "commit": r.commit,
                        "values": {str(k): v for k, v in r.values.items()},
                    }
                    for r in results
                ],
            }
        )
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    for entry in report["claims"]:
        plot_claim(entry, figures / f"{entry['id']}.png")
    from recsim.io.atomic import write_json, write_text

    write_json(report, out / "report.json")
    write_text(out / "report.md", render_markdown(report))
    if readme is not None:
        rewrite_readme(Path(readme), report)
    if tracker is not None:
        log_mlflow(tracker, report, out)
    return report


def identical_settings(results: list[SettingResult]) -> list[list[str]]:
    """Groups of settings whose per-seed values are equal: the knob that tells them apart does not
    reach the arms the claim reads, so they count as one setting's evidence, not several."""
    groups: dict[tuple, list[str]] = {}
    for r in results:
        if r.values:
            groups.setdefault(tuple(sorted(r.values.items())), []).append(r.setting)
    return [names for names in groups.values() if len(names) > 1]


def _finite(x: float) -> float | None:
    return x if isinstance(x, float) and math.isfinite(x) else None


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:+.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:+.1e}"


def effect_text(row: dict[str, Any]) -> str:
    """'mean [low, high]' of one setting."""
    return f"{_num(row['mean'])} [{_num(row['low'])}, {_num(row['high'])}]"


_MARK = {"holds": " ✓", "opposite": " ✗", "under-powered": " (under-powered)"}


def summary_rows(report: dict[str, Any]) -> list[str]:
    """The Markdown table of every claim: paper, claim id, holds in k / n settings, effects."""
    lines = [
        "| claim | paper | statistic (claimed sign) | holds in "
        "| effect per setting, mean [95% CI] over seeds |",
        "|---|---|---|---|---|",
    ]
    for c in report["claims"]:
        effects = "; ".join(
            f"{r['setting']}: {effect_text(r)}{_MARK.get(r.get('verdict', ''), '')}" for r in c["settings"]
        )
        lines.append(
            f"| `{c['id']}` | {c['paper']} | {c['statistic']} {c['direction']} | "
            f"{c['held']} / {len(c['settings'])} | {effects} |"
        )
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the summary table, then per study its settings and per claim its rows."""
    title = "Validation against the literature" + (
        " (quick: machinery check, not evidence)" if report["quick"] else ""
    )
    lines = [
        f"# {title}",
        "",
        f"Run {report['date']} at commit {report['commit'][:10]}. A claim holds in a setting when the 95% "
        "t-interval of its statistic over seeds excludes zero on the claimed side (✓); it is opposite "
        "(✗) when the interval excludes zero on the other side; it is under-powered when the interval "
        "covers zero and the minimum detectable effect (MDE: 95% two-sided, 80% power, at the study's "
        "seeds and per-seed sd) exceeds the paper's effect; otherwise not distinguishable. Settles "
        "at round: the first round from which the per-round statistic's interval stays on one side "
        "of zero through the last round.",
        "",
        *summary_rows(report),
        "",
    ]
    by_study: dict[str, list[dict[str, Any]]] = {}
    for c in report["claims"]:
        by_study.setdefault(c["study"], []).append(c)
    for sid, claims in by_study.items():
        s = report["studies"][sid]
        lines += [f"## Study `{sid}`: scenario `{s['scenario']}`, {s['seeds']} seeds", ""]
        if s["about"]:
            lines += [s["about"], ""]
        lines += ["| setting | overrides |", "|---|---|"]
        lines += [
            f"| {name} | {', '.join(f'`{o}`' for o in ov) or '(scenario defaults)'} |"
            for name, ov in s["settings"].items()
        ]
        lines.append("")
        for c in claims:
            lines += [
                f"### `{c['id']}`: {c['paper']}",
                "",
                f"{c['claim']} Statistic: {c['statistic']}, claimed {c['direction']}. "
                f"Holds in {c['held']} of {len(c['settings'])} settings."
                + (
                    f" The paper's effect in these units: {_num(c['effect'])}."
                    if c.get("effect") is not None
                    else " The paper's effect does not translate to these units: a setting whose "
                    "interval covers zero is not distinguishable, at its MDE."
                ),
                "",
                "| setting | n | mean | 95% CI | p | MDE | seeds for half | settles at round | verdict "
                "| commit |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in c["settings"]:
                p = "-" if r["p"] is None else f"{r['p']:.2g}"
                mde_text = "-" if r.get("mde") is None else f"{r['mde']:.3g}"
                half = r.get("seeds_for_half")
                settle = r.get("settles")
                settle_text = "-" if settle is None else str(settle)
                if settle is None and r.get("rounds") is not None:
                    settle_text = "does not settle"
                lines.append(
                    f"| {r['setting']} | {r['n']} | {_num(r['mean'])} "
                    f"| [{_num(r['low'])}, {_num(r['high'])}] | {p} | {mde_text} "
                    f"| {'-' if half is None else half} | {settle_text} "
                    f"| {r.get('verdict') or ('holds' if r['holds'] else 'no')} | {r['commit'][:8]} |"
                )
            lines.append("")
            for names in c.get("identical", []):
                lines += [
                    f"Settings {', '.join(names)} give identical values: what tells them apart does not "
                    "reach the arms this claim reads.",
                    "",
                ]
            if c["regime"] and c["held"] < len(c["settings"]):
                lines += [f"Where it does not hold: {c['regime']}", ""]
            lines += [f"![{c['id']}](figures/{c['id']}.png)", ""]
    return "\n".join(lines)


def plot_claim(entry: dict[str, Any], path: Path) -> Path:
    """The statistic per setting: mean and 95% interval, zero marked, held settings filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = entry["settings"]
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.45 * len(rows)))
    for i, r in enumerate(rows):
        if r["mean"] is None:
            continue
        lo = r["mean"] - (r["low"] if r["low"] is not None else r["mean"])
        hi = (r["high"] if r["high"] is not None else r["mean"]) - r["mean"]
        ax.errorbar(
            r["mean"],
            i,
            xerr=[[lo], [hi]],
            fmt="o",
            color="tab:green" if r["holds"] else "tab:gray",
            mfc="tab:green" if r["holds"] else "white",
            capsize=3,
        )
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [r["setting"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_title(f"{entry['id']}: claimed {entry['direction']}", fontsize=9)
    ax.set_xlabel(entry["statistic"], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rewrite_readme(path: Path, report: dict[str, Any]) -> None:
    """Replace the validation block of ``path`` (docs/validation.md) with the summary table, its
    date and commit."""
    text = path.read_text()
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    mode = " (quick)" if report["quick"] else ""
    block = [
        README_START,
        f"Generated{mode} on {report['date']} at commit {report['commit'][:10]} by "
        "`recsim validate --readme docs/validation.md`.",
        "",
        *summary_rows(report),
        README_END,
    ]
    from recsim.io.atomic import write_text

    write_text(path, head + "\n".join(block) + tail)


def log_mlflow(tracker: Any, report: dict[str, Any], out: Path) -> None:
    """One MLflow run in experiment ``validation``: per claim the settings held, per setting the
    effect and its interval as metrics; report.md, report.json and the figures as artifacts."""
    tags = {"recsim.commit": report["commit"], "recsim.quick": str(report["quick"]).lower()}
    tracker.start("validate" + ("-quick" if report["quick"] else ""), tags)
    metrics: dict[str, float] = {}
    for c in report["claims"]:
        metrics[f"{c['id']}.held"] = float(c["held"])
        metrics[f"{c['id']}.settings"] = float(len(c["settings"]))
        for r in c["settings"]:
            key = f"{c['id']}.{r['setting'].replace('/', '_')}"
            for name in ("mean", "low", "high"):
                if r[name] is not None:
                    metrics[f"{key}.{name}"] = r[name]
            metrics[f"{key}.holds"] = float(r["holds"])
    tracker.log(metrics, 0)
    tracker.end([out / "report.md", out / "report.json", *sorted((out / "figures").glob("*.png"))])
