"""Published claims as tests: the registry of studies and claims ``recsim validate`` runs.

A :class:`Study` runs some arms of one scenario over a grid of :class:`Setting` (world sizes and
bias strengths as config overrides) on several seeds. A :class:`Claim` reads one study: a
statistic with one value per seed (arms of one seed share their world, so contrasts are paired by
seed), and the sign the paper claims. A claim *holds in a setting* when the 95% t-interval of the
statistic over seeds excludes zero on the claimed side (:func:`recsim.core.stats.interval`).

Every study has at least three settings and five seeds. The grids are chosen before looking at the
outcome, to span the sizes and bias strengths a skeptical reader would try; none is tuned to make a
claim hold. Where a claim is known not to hold, ``regime`` says what the studies of it found (the
mechanism, or the boundary of the regime); the report prints it only where the claim fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl

from recsim.core.stats import per_seed
from recsim.llm.config import QUICK as LLM_QUICK

# ---------------------------------------------------------------------------------------------
# Statistics: one value per seed from a study's metrics frame (arm, seed, round, metrics...)
# ---------------------------------------------------------------------------------------------


class Statistic(Protocol):
    """What a claim computes from its study's metrics frame."""

    def arms(self) -> tuple[str, ...]:
        """The arms it reads."""
        ...

    def values(self, frame: pl.DataFrame) -> dict[int, float]:
        """seed -> value (seeds where any input is missing are left out)."""
        ...

    def text(self) -> str:
        """The statistic in one line."""
        ...


def _window_text(window: tuple[int, int] | None) -> str:
    return "final round" if window is None else f"mean of rounds {window[0]}-{window[1]}"


@dataclass(frozen=True)
class Contrast:
    """Per seed: sum over arms of weight x metric, in the final round, or its mean over the rounds
    ``window`` (first, last), or over the ``last`` final rounds of the run (past the loop's
    transient; a run shorter than that reads all its rounds). A paired difference is the contrast
    {treatment: +1, reference: -1}."""

    metric: str
    weights: tuple[tuple[str, float], ...]
    window: tuple[int, int] | None = None
    last: int | None = None

    def arms(self) -> tuple[str, ...]:
        return tuple(a for a, _ in self.weights)

    def rounds_read(self, frame: pl.DataFrame) -> tuple[int, int] | None:
        """The (first, last) rounds whose mean is each seed's value (None: the final round)."""
        if self.last is None or not frame.height:
            return self.window
        final = int(frame.filter(pl.col("arm").is_in(list(self.arms())))["round"].max())
        return (max(0, final - self.last + 1), final)

    def values(self, frame: pl.DataFrame) -> dict[int, float]:
        return self._values(frame, self.rounds_read(frame))

    def per_round(self, frame: pl.DataFrame) -> dict[int, dict[int, float]]:
        """round -> seed -> the contrast in that round alone (for where it settles)."""
        rounds = sorted(frame.filter(pl.col("arm").is_in(list(self.arms())))["round"].unique().to_list())
        return {int(r): self._values(frame, (int(r), int(r))) for r in rounds}

    def _values(self, frame: pl.DataFrame, window: tuple[int, int] | None) -> dict[int, float]:
        seeds = per_seed(frame, [self.metric], window)
        table: dict[int, dict[str, float]] = {}
        for row in seeds.iter_rows(named=True):
            value = row.get(self.metric)
            if value is not None and math.isfinite(value):
                table.setdefault(row["seed"], {})[row["arm"]] = float(value)
        return {
            seed: sum(w * by_arm[a] for a, w in self.weights)
            for seed, by_arm in sorted(table.items())
            if all(a in by_arm for a, _ in self.weights)
        }

    def text(self) -> str:
        terms = []
        for arm, w in self.weights:
            coef = "" if abs(w) == 1 else f"{abs(w):g} x "
            terms.append(f"{'-' if w < 0 else '+'} {coef}{self.metric}[{arm}]")
        when = f"mean of the last {self.last} rounds" if self.last else _window_text(self.window)
        return f"{' '.join(terms).lstrip('+ ')} ({when})"


def diff(
    treatment: str,
    reference: str,
    metric: str,
    window: tuple[int, int] | None = None,
    last: int | None = None,
) -> Contrast:
    """metric[treatment] - metric[reference], paired by seed."""
    return Contrast(metric, ((treatment, 1.0), (reference, -1.0)), window, last)


@dataclass(frozen=True)
class Level:
    """Per seed: the metric of one arm in the final round (for metrics already relative to a
    reference, such as Chaney's homogenization against the ideal recommender)."""

    arm: str
    metric: str

    def arms(self) -> tuple[str, ...]:
        return (self.arm,)

    def values(self, frame: pl.DataFrame) -> dict[int, float]:
        return Contrast(self.metric, ((self.arm, 1.0),)).values(frame)

    def text(self) -> str:
        return f"{self.metric}[{self.arm}] (final round)"


def _by_seed(frame: pl.DataFrame, arm: str):
    """(seed, that seed's rows of ``arm`` in round order) for each seed, first seen first."""
    part = frame.filter(pl.col("arm") == arm).sort("round")
    for (seed,), rows in part.group_by("seed", maintain_order=True):
        yield int(seed), rows


@dataclass(frozen=True)
class Change:
    """Per seed: the metric of one arm in the final round minus its value in round ``start``."""

    arm: str
    metric: str
    start: int = 0

    def arms(self) -> tuple[str, ...]:
        return (self.arm,)

    def values(self, frame: pl.DataFrame) -> dict[int, float]:
        out = {}
        for seed, rows in _by_seed(frame, self.arm):
            first = rows.filter(pl.col("round") == self.start)[self.metric]
            last = rows[self.metric][-1]
            if first.len() and first[0] is not None and last is not None and rows.height > 1:
                out[seed] = float(last) - float(first[0])
        return dict(sorted(out.items()))

    def text(self) -> str:
        return f"{self.metric}[{self.arm}]: final round - round {self.start}"


@dataclass(frozen=True)
class Curvature:
    """Per seed: b of the functional form Gao, Schulman & Hilton (2022) fit to the gold gain over
    d = sqrt(KL) over the rounds: best-of-n R(d) = d (a - b d), RL R(d) = d (a - b log d); b > 0
    means gold bends down as optimization proceeds (:func:`recsim.experiments.overoptimization.
    fit_gold_curve`; the gain is over gold = 0.5, the win rate of the reference policy)."""

    arm: str
    form: str = "bon"
    metric: str = "gold"

    def arms(self) -> tuple[str, ...]:
        return (self.arm,)

    def values(self, frame: pl.DataFrame) -> dict[int, float]:
        from recsim.experiments.overoptimization import fit_gold_curve

        out = {}
        for seed, rows in _by_seed(frame, self.arm):
            d, y = rows["sqrt_kl"].to_numpy(), rows[self.metric].to_numpy() - 0.5
            ok = np.isfinite(d) & np.isfinite(y)
            if ok.sum() >= 3:
                out[seed] = fit_gold_curve(d[ok], y[ok], self.form)[1]
        return dict(sorted(out.items()))

    def text(self) -> str:
        form = "d (a - b d)" if self.form == "bon" else "d (a - b log d)"
        return f"b of {self.metric}[{self.arm}] - 0.5 = {form} over the rounds, d = sqrt(KL)"


# ---------------------------------------------------------------------------------------------
# Studies and claims
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One world setting of a study: its name and the config overrides that make it."""

    name: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Study:
    """Arms of one scenario run over a grid of settings on ``seeds`` seeds (0..seeds-1).

    ``quick`` overrides are added to the first setting alone in ``recsim validate --quick`` (a
    check of the machinery at small sizes, on two seeds: not evidence)."""

    id: str
    scenario: str
    arms: tuple[str, ...]
    settings: tuple[Setting, ...]
    quick: tuple[str, ...] = ()
    seeds: int = 5
    about: str = ""


@dataclass(frozen=True)
class Claim:
    """A published effect: the paper, the claim in one sentence, the study that tests it, the
    statistic and the sign the paper claims for it (+1: above zero, -1: below)."""

    id: str
    paper: str
    claim: str
    study: str
    statistic: Statistic
    direction: int
    regime: str = ""
    effect: float | None = None
    """The paper's effect in the statistic's units, where it translates to them (None: it does
    not). A claim whose interval covers zero while its minimum detectable effect exceeds this is
    *under-powered* at the study's seed count, not refuted."""


# --- settings shared by several studies ---------------------------------------------------------

_LLM_SMALL = LLM_QUICK  # the LLM scenarios' small preset (`recsim run NAME --quick`)
_LLM_STRONG = ("llm.labeler.length_bias=3.0", "llm.labeler.sycophancy_bias=3.0")
_LLM_LONGER = ("llm.task.n_prompts=2048", "loop.rounds=8")
#: three LLM settings where a learned reward model (and so the labeler's biases) is in the loop:
#: small (1,024 prompts, 4 rounds); small with the labeler's length and sycophancy biases
#: doubled; twice the prompt pool and twice the rounds of optimization.
LLM_SETTINGS = (
    Setting("small", _LLM_SMALL),
    Setting("small-strong-bias", (*_LLM_SMALL, *_LLM_STRONG)),
    Setting("larger", (*_LLM_SMALL, *_LLM_LONGER)),
)
#: where the claims' arms never see the labeler (binary or RLCR rewards; a reward model that labels
#: its own pairs, with or without gold anchors) its biases do not reach them, so the second setting
#: is a harder world instead: chains of up to 6 steps instead of 4.
LLM_BINARY_SETTINGS = (
    Setting("small", _LLM_SMALL),
    Setting("small-harder", (*_LLM_SMALL, "llm.task.max_steps=6")),
    Setting("larger", (*_LLM_SMALL, *_LLM_LONGER)),
)
_LLM_TINY = (
    "loop.rounds=2",
    "llm.policy.sft_steps=100",
    "llm.task.n_prompts=512",
    "llm.task.n_eval_prompts=32",
    "llm.evaluation.pass_k_samples=8",
    "llm.labeler.initial_prompts=64",  # a check of the machinery: the first fit as small as the rest
)
_REC_TINY = ("world.n_users=300", "world.n_items=200", "loop.rounds=3", "metrics.panel_users=32")

# The position-bias grid: examination curve (1/k)^eta, by device (default mobile 1.2, desktop 0.6)
# x share of randomized slates x slate size, at 1,000 users x 500 items, 16 rounds; the claims read
# the mean of the last 6 (rounds 10-15), past the transient in which a tower arm and the plain arm
# pull apart (their per-round difference changes sign up to round ~7 at 6 seeds).
_ETA = {
    "weak": "behavior.eta={mobile: 0.6, desktop: 0.3}",
    "default": "behavior.eta={mobile: 1.2, desktop: 0.6}",
    "steep": "behavior.eta={mobile: 1.8, desktop: 1.0}",
}
_TOWER_GRID = tuple(
    Setting(
        f"eta-{bias}/explore{round(100 * share)}/K{k}",
        (eta, f"policy.exploration_share={share}", f"policy.slate_size={k}", "loop.rounds=16"),
    )
    for bias, eta in _ETA.items()
    for share in (0.0, 0.1)
    for k in (5, 10)
)

_LAST = 6  # the position claims read the mean of the last 6 rounds

STUDIES: dict[str, Study] = {
    s.id: s
    for s in (
        Study(
            "position-grid",
            "position-bias",
            (
                "mmoe-none-explore0",
                "mmoe-feature-explore0",
                "mmoe-shallow_tower-explore0",
                "mmoe-obs_dropout-explore0",
            ),
            _TOWER_GRID,
            quick=_REC_TINY,
            seeds=8,
            about="MMoE rankers retrained on their own position-biased logs (1,000 users x 500 items, "
            "16 rounds, effects read over rounds 10-15): bias strength x share of randomized users x "
            "slate size. The arms are the scenario's explore0 arms; each setting sets the share of "
            "randomized users itself.",
        ),
        Study(
            "ma-tasks",
            "mmoe-tasks",
            ("mmoe@0.5", "shared_bottom@0.5", "omoe@0.5", "mmoe@1", "shared_bottom@1", "omoe@1"),
            (
                Setting("ours-m4", ("correlations=[0.5, 1.0]",)),
                Setting("paper-m10-n10k", ("correlations=[0.5, 1.0]", "sine_terms=10", "n_train=10000")),
                Setting("small-data-n2k", ("correlations=[0.5, 1.0]", "n_train=2000")),
                Setting("sb-width16", ("correlations=[0.5, 1.0]", "shared_bottom_width=16")),
            ),
            quick=("n_train=1000", "n_test=500", "epochs=2", "dim=20"),
            about="The synthetic two-task regression of Ma et al. 2018 section 3.2 (d = 100, 8 experts "
            "of 16 units, towers of 8): sine terms, data size and the shared-bottom's width varied. "
            "Seeds are independent data sets and initializations (the paper's repeats).",
        ),
        Study(
            "chaney",
            "chaney",
            ("mf-implicit", "mf-impressions", "popularity", "random", "ideal"),
            (
                Setting("paper-100u", ()),
                Setting("no-popularity-prior", ("world.popularity_scale=0",)),
                Setting(
                    "unclustered-tastes",
                    ("world.n_clusters=1", "world.cluster_spread=1.0", "world.popularity_scale=0"),
                ),
            ),
            quick=("loop.rounds=14", "world.n_users=50", "metrics.panel_users=50"),
            about="Chaney et al.'s set-up (100 users, 20 attributes, 10 new items a round, 10 random "
            "start-up rounds then retraining every round, 100 rounds, one interaction per slate, no "
            "item twice) in three worlds whose truth is less and less shared between users: our "
            "default (8 taste clusters and an item-popularity prior), no popularity prior, and one "
            "spread-out cluster without the prior.",
        ),
        Study(
            "utility",
            "utility-weighted",
            ("weighted", "post-hoc"),
            (
                Setting("cost-10", ("cost_fn=10",)),
                Setting("cost-30", ("cost_fn=30",)),
                Setting("cost-30-small-data", ("cost_fn=30", "n_train=1000")),
            ),
            quick=("n_train=500", "n_test=500", "epochs=3"),
            about="Cost-weighted vs symmetric loss + post-hoc threshold (an MLP on a latent-feature "
            "task): false-negative cost and data size varied.",
        ),
        Study(
            "overoptimization",
            "llm-overoptimization",
            ("best-of-n",),
            (*LLM_SETTINGS, Setting("default", ())),
            quick=_LLM_TINY,
            about="Best-of-n, n doubling each round, against a reward model fitted once on base samples "
            "(n up to 8 in the small settings, 128 in larger, 256 at the scenario's default size).",
        ),
        Study(
            "calibration",
            "llm-calibration",
            ("binary", "rlcr"),
            (*LLM_BINARY_SETTINGS, Setting("default", ())),
            quick=_LLM_TINY,
        ),
        Study(
            "negative-reinforcement",
            "llm-negative-reinforcement",
            ("base", "psr", "nsr"),
            LLM_BINARY_SETTINGS,
            quick=_LLM_TINY,
        ),
        Study(
            "self-reward",
            "llm-self-reward",
            ("labeler", "self-reward", "anchored"),
            (*LLM_BINARY_SETTINGS, Setting("default", ())),
            quick=_LLM_TINY,
        ),
        Study("reasoning-rm", "llm-reasoning-rm", ("rm-1", "rm-8x4-meta"), LLM_SETTINGS, quick=_LLM_TINY),
        Study("critique", "llm-critique", ("grpo", "critique-truth"), LLM_BINARY_SETTINGS, quick=_LLM_TINY),
        Study(
            "llm-mitigations",
            "cross-domain",
            ("llm/none", "llm/invariance", "llm/gate", "llm/dense"),
            LLM_SETTINGS,
            quick=_LLM_TINY,
        ),
    )
}

_POSITION_REGIME = (
    "The boundary Zhang et al. (2023) predict: with the ranker's own slates alone (explore0) an "
    "item's position is decided by its score, so an additive position channel can absorb relevance "
    "as easily as bias; randomized slates (explore10) make position identifiable. Compare the "
    "explore0 and explore10 settings."
)

CLAIMS: dict[str, Claim] = {
    c.id: c
    for c in (
        Claim(
            "zhao-tower-vs-none",
            "Zhao et al., RecSys 2019",
            "A shallow position tower added to the click logit and dropped at serving ranks by "
            "relevance better than a ranker that ignores position, when trained on position-biased logs.",
            "position-grid",
            diff("mmoe-shallow_tower-explore0", "mmoe-none-explore0", "ndcg_truth", last=_LAST),
            +1,
            regime=_POSITION_REGIME,
        ),
        Claim(
            "zhao-tower-vs-feature",
            "Zhao et al., RecSys 2019",
            "The shallow tower beats position used as an ordinary input feature (position treated as "
            "1 at serving).",
            "position-grid",
            diff("mmoe-shallow_tower-explore0", "mmoe-feature-explore0", "ndcg_truth", last=_LAST),
            +1,
            regime=_POSITION_REGIME,
        ),
        Claim(
            "zhang-obs-dropout",
            "Zhang et al., KDD 2023",
            "When the logger ranks well, observation dropout on the bias tower keeps relevance out "
            "of it: the served relevance ranks better than with the plain shallow tower.",
            "position-grid",
            diff("mmoe-obs_dropout-explore0", "mmoe-shallow_tower-explore0", "ndcg_truth", last=_LAST),
            +1,
        ),
        Claim(
            "ma-mmoe-vs-shared-bottom",
            "Ma et al., KDD 2018",
            "At task correlation 0.5 MMoE reaches a lower loss than the parameter-matched shared-bottom.",
            "ma-tasks",
            diff("mmoe@0.5", "shared_bottom@0.5", "train_loss"),
            -1,
        ),
        Claim(
            "ma-mmoe-robust-to-correlation",
            "Ma et al., KDD 2018",
            "When the task correlation falls from 1.0 to 0.5, MMoE's loss rises less than one-gate MoE's.",
            "ma-tasks",
            Contrast(
                "train_loss", (("mmoe@0.5", 1.0), ("mmoe@1", -1.0), ("omoe@0.5", -1.0), ("omoe@1", 1.0))
            ),
            -1,
        ),
        Claim(
            "chaney-mf-homogenizes",
            "Chaney, Stewart & Engelhardt, RecSys 2018",
            "A recommender retrained on its own users' interactions makes neighbouring users' "
            "interaction histories more alike than the ideal recommender does.",
            "chaney",
            Level("mf-implicit", "homogenization"),
            +1,
            regime=(
                "Where tastes are clustered, nearest neighbours by true taste share most of their top "
                "items, so the ideal recommender's histories are already alike (its jaccard is the "
                "report's reference) and a learned recommender has little room above it; compare the "
                "unclustered-tastes setting. (An MF learned against impressions, mf-impressions, is "
                "further below: it tries never-shown items first, 0.75 of its impressions are items "
                "at most one round old, so its users' histories are near random.)"
            ),
        ),
        Claim(
            "chaney-popularity-homogenizes",
            "Chaney, Stewart & Engelhardt, RecSys 2018",
            "A popularity recommender homogenizes users more than the ideal recommender.",
            "chaney",
            Level("popularity", "homogenization"),
            +1,
            regime=(
                "Where the world has a strong popularity prior, true relevance itself favours popular "
                "items, so the ideal recommender already serves them to everyone (compare the "
                "no-popularity-prior setting)."
            ),
        ),
        Claim(
            "autor-post-hoc-threshold",
            "Autor, Caplin, Martin & Marx 2025",
            "Symmetric training with the decision threshold moved to c_FP / (c_FP + c_FN) reaches a "
            "lower expected cost than training on the cost-weighted loss.",
            "utility",
            diff("post-hoc", "weighted", "expected_cost"),
            -1,
            regime=(
                "The paper's mechanism, a weaker incentive to learn the useful feature, bites when data "
                "is scarce: with 1,000 examples a linear probe of the weighted learner's hidden layer "
                "finds the latent feature less often (0.872 vs 0.923, means over 5 seeds) and its cost "
                "is higher; with 4,000 both probes reach 0.94-0.95 and the costs are equal."
            ),
        ),
        Claim(
            "gao-proxy-gold-gap",
            "Gao, Schulman & Hilton 2022",
            "Optimizing against a learned reward model opens a gap between the proxy reward and the "
            "gold reward that grows with optimization.",
            "overoptimization",
            Change("best-of-n", "gap"),
            +1,
        ),
        Claim(
            "gao-gold-bends",
            "Gao, Schulman & Hilton 2022",
            "Best-of-n gold reward follows d (a - b d) in d = sqrt(KL) with b > 0: it rises, then bends.",
            "overoptimization",
            Curvature("best-of-n", "bon"),
            +1,
            regime=(
                "Holds at the scenario's default size, where the proxy learns (held-out gold "
                "accuracy 0.67-0.75 on 5 seeds): gold rises from 0.500 to 0.551 at n = 64 (sqrt KL "
                "1.8) and falls to 0.538 at n = 256 while proxy climbs to 0.83. The small settings "
                "stop at n = 8 (4 rounds) and larger at n = 128, where gold is 0.52-0.54 at the last "
                "round and the fitted curvature is not distinguishable from zero."
            ),
        ),
        Claim(
            "damani-rlcr-calibrates",
            "Damani et al. 2025",
            "Adding the Brier score of the stated confidence to the binary reward (RLCR) lowers the "
            "expected calibration error.",
            "calibration",
            diff("rlcr", "binary", "ece"),
            -1,
        ),
        Claim(
            "zhu-nsr-keeps-pass-at-k",
            "Zhu et al. 2025",
            "Negative-sample reinforcement keeps pass@k at large k above positive-sample reinforcement.",
            "negative-reinforcement",
            diff("nsr", "psr", "pass_at_16"),
            +1,
            regime=(
                "Found in the chain world (issue-15 study, 5 seeds): NSR pushes down every token of a "
                "wrong chain, the right steps before the first error included, so its step accuracy "
                "falls (-0.045 [-0.075, -0.015]), a credit-assignment cost a one-token answer does not "
                "have; and the RL budget (tens of updates) barely moves pass@1. The paper's regime, a "
                "strong base whose wrong samples are mostly right reasoning and hundreds of updates, is "
                "not reached."
            ),
        ),
        Claim(
            "zhu-psr-loses-pass-at-k",
            "Zhu et al. 2025",
            "Positive-sample reinforcement falls below the base policy at large k.",
            "negative-reinforcement",
            diff("psr", "base", "pass_at_16"),
            -1,
            regime=(
                "PSR narrows the answer distribution only as far as the RL budget moves the policy; "
                "compare the larger setting (twice the rounds)."
            ),
        ),
        Claim(
            "self-reward-gap-grows",
            "Self-improvement limits (self-rewarding loops)",
            "A reward model retrained on the policy's own judgments lets the proxy-gold gap grow.",
            "self-reward",
            Change("self-reward", "gap"),
            +1,
            regime=(
                "In the 4- and 8-round settings the gap grows (+0.026, +0.020, +0.077) but within "
                "the 5-seed MDE (0.06-0.11): under-powered, not refuted (before the reward-model fit "
                "changed: +0.084, +0.17, +0.26). Why it grows less per round was not measured; the "
                "default size (10 rounds), where it held before, has not been re-run."
            ),
        ),
        Claim(
            "self-reward-anchor-helps",
            "Self-improvement limits (external anchors)",
            "A 25% share of external (gold) labels keeps gold reward above the unanchored self-reward loop.",
            "self-reward",
            diff("anchored", "self-reward", "gold"),
            +1,
            regime=(
                "In the 4-round settings no arm's gold moves (0.49-0.50 from the first round to the "
                "last in every arm: 4 rounds of 8 GRPO steps barely change the policy), so there is "
                "no loss for an anchor to prevent. In the 8-round setting every arm's gold falls "
                "(means of 5 seeds, round 0 to 7: labeler 0.497 to 0.468, anchored 0.496 to 0.472, "
                "self-reward 0.496 to 0.478): the anchored model, three quarters labeler pairs, "
                "follows the labeler's loop down. The default size (10 rounds), where it held with "
                "the earlier 12-step fit, has not been re-run with the fit that learns."
            ),
        ),
        Claim(
            "reasoning-rm-accuracy",
            "Reward models that reason (RRM, RM-R1, DeepSeek-GRM)",
            "More test-time compute in the reward model (8 passes x 4 judgments with a meta-judge vs 1 "
            "pass) raises its accuracy against gold on held-out pairs.",
            "reasoning-rm",
            diff("rm-8x4-meta", "rm-1", "rm_accuracy_heldout"),
            +1,
            regime=(
                "Under-powered, not refuted: with pass j reading check j, the 8 x 4 budget reads every "
                "check of a 4-step chain and rm-1 only the first, and the first fit is ahead in 4 of 5 "
                "seeds of the small setting (0.69 vs 0.67), but held-out accuracy varies 0.52-0.82 "
                "between seeds, so the 5-seed MDE (0.10-0.15) exceeds the differences (+0.055, "
                "+0.034, +0.006). In the larger setting the deeper model's first fit is behind (0.57 "
                "vs 0.64): it trains at depths drawn from 1-8 with a quarter of the token states "
                "dropped, on the same 2,048 pairs."
            ),
        ),
        Claim(
            "critique-grpo-unsolved",
            "Zhang et al. 2025 (Critique-GRPO)",
            "Critiques with the ground truth leave fewer hard prompts unsolved than scalar-reward GRPO.",
            "critique",
            diff("critique-truth", "grpo", "unsolved_share_hard"),
            -1,
            regime=(
                "Found in the chain world: critiques are usable (refinements succeed 0.37 of the time "
                "with the ground truth, 0.12 with a binary critique), but what is learned from the "
                "refinements does not reach the first attempts on the hard prompts within tens of "
                "updates, the same budget limit as for NSR."
            ),
        ),
        Claim(
            "wang-invariance-length",
            "Wang et al. 2025",
            "An MMD invariance penalty across length bins makes the reward model pay less for length.",
            "llm-mitigations",
            diff("llm/invariance", "llm/none", "rm_sensitivity_length"),
            -1,
        ),
        Claim(
            "xu-gate-vs-dense",
            "Xu et al. 2025 (Direct Reasoning Optimization)",
            "Rubrics as hard gates on rollout groups leave a smaller proxy-gold gap than the same "
            "rubrics as a dense penalty the optimizer can trade off.",
            "llm-mitigations",
            diff("llm/gate", "llm/dense", "gap"),
            -1,
        ),
    )
}


def check_registry(
    studies: dict[str, Study] | None = None, claims: dict[str, Claim] | None = None
) -> list[str]:
    """Problems of the registry (empty when sound): every claim reads a known study and only its
    arms, has direction +1 or -1; every study has >= 3 settings and >= 5 seeds."""
    studies = STUDIES if studies is None else studies
    claims = CLAIMS if claims is None else claims
    problems = []
    for s in studies.values():
        if len(s.settings) < 3:
            problems.append(f"study {s.id}: {len(s.settings)} settings, need >= 3")
        if s.seeds < 5:
            problems.append(f"study {s.id}: {s.seeds} seeds, need >= 5")
        if len({x.name for x in s.settings}) != len(s.settings):
            problems.append(f"study {s.id}: setting names repeat")
    for c in claims.values():
        study = studies.get(c.study)
        if study is None:
            problems.append(f"claim {c.id}: unknown study {c.study!r}")
            continue
        missing = [a for a in c.statistic.arms() if a not in study.arms]
        if missing:
            problems.append(f"claim {c.id}: arms {missing} are not in study {c.study}")
        if c.direction not in (1, -1):
            problems.append(f"claim {c.id}: direction must be +1 or -1")
    return problems
