"""Utility-weighted loss vs symmetric loss + post-hoc threshold (Autor, Caplin, Martin, Marx 2025,
"Misaligned by design").

A decision with costs c_FP (act when y = 0) and c_FN (do not act when y = 1). Two learners of the
same MLP on the same data:

- weighted: binary cross-entropy with weight c_FN on positives and c_FP on negatives, then act
  when p > 1/2 (the cost enters the training objective);
- post-hoc: plain cross-entropy, then act when p > c_FP / (c_FP + c_FN) (the Bayes threshold).

Both are scored on the same expected cost per decision on held-out data. A linear probe (logistic
regression, scikit-learn) of the hidden layer measures how well each learned the useful latent
feature z (is z > 0?): the weighted loss gives a weaker incentive to learn it.

Data: x ~ N(0, I_d); z = <u, x> with a unit u; y ~ Bernoulli(sigmoid(sharpness * z + offset)).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from recsim.core.batches import minibatches
from recsim.core.config import Section
from recsim.core.rng import generator


class UtilityConfig(Section):
    """The utility-weighted vs post-hoc threshold experiment."""

    seed: int = 0
    """Root seed."""
    dim: int = Field(20, gt=0)
    """Input dimension d."""
    hidden: int = Field(16, gt=0)
    """Hidden units of the MLP (the probed representation)."""
    n_train: int = Field(4000, gt=0)
    """Training examples."""
    n_test: int = Field(4000, gt=0)
    """Held-out examples (cost and probe)."""
    sharpness: float = Field(3.0, gt=0)
    """How strongly the latent z decides y."""
    offset: float = Field(-1.5, description="")
    """Intercept of the label logit (base rate below one half)."""
    cost_fp: float = Field(1.0, gt=0)
    """Cost of acting when y = 0."""
    cost_fn: float = Field(10.0, gt=0)
    """Cost of not acting when y = 1."""
    epochs: int = Field(20, gt=0)
    """Training passes."""
    lr: float = Field(3e-3, gt=0)
    """Adam learning rate."""
    repeats: int = Field(3, gt=0)
    """Seeds."""


def _data(cfg: UtilityConfig, repeat: int) -> tuple[torch.Tensor, ...]:
    g = generator(cfg.seed, repeat, "utility-data")
    u = torch.randn(cfg.dim, generator=g)
    u = u / u.norm()
    n = cfg.n_train + cfg.n_test
    x = torch.randn(n, cfg.dim, generator=g)
    z = x @ u
    y = (torch.rand(n, generator=g) < torch.sigmoid(cfg.sharpness * z + cfg.offset)).float()
    return x[: cfg.n_train], y[: cfg.n_train], x[cfg.n_train :], y[cfg.n_train :], z[cfg.n_train :]


def expected_cost(act: torch.Tensor, y: torch.Tensor, cost_fp: float, cost_fn: float) -> float:
    """Mean cost per decision: c_FP 1[act, y = 0] + c_FN 1[not act, y = 1]."""
    return float((cost_fp * (act & (y == 0)) + cost_fn * (~act & (y == 1))).float().mean())


def run_utility(cfg: UtilityConfig) -> list[dict[str, Any]]:
    """One row per (learner, repeat): expected cost, threshold, probe accuracy, log loss."""
    from sklearn.linear_model import LogisticRegression

    rows = []
    for repeat in range(cfg.repeats):
        x_tr, y_tr, x_te, y_te, z_te = _data(cfg, repeat)
        for learner in ("weighted", "post-hoc"):
            g = generator(cfg.seed, repeat, f"utility-{learner}")
            net = torch.nn.Sequential(
                torch.nn.Linear(cfg.dim, cfg.hidden), torch.nn.ReLU(), torch.nn.Linear(cfg.hidden, 1)
            )
            for p in net.parameters():
                torch.nn.init.normal_(p, std=0.3, generator=g)
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
            w = (
                torch.where(y_tr > 0, cfg.cost_fn, cfg.cost_fp)
                if learner == "weighted"
                else torch.ones_like(y_tr)
            )
            w = w / w.mean()  # same overall loss scale for both learners
            for _ in range(cfg.epochs):
                for b in minibatches(cfg.n_train, 128, g):
                    logit = net(x_tr[b]).squeeze(1)
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y_tr[b], weight=w[b])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                p = torch.sigmoid(net(x_te).squeeze(1))
                hidden = torch.relu(net[0](x_te)).numpy()
            threshold = 0.5 if learner == "weighted" else cfg.cost_fp / (cfg.cost_fp + cfg.cost_fn)
            half = len(hidden) // 2
            probe = LogisticRegression(max_iter=1000).fit(hidden[:half], (z_te[:half] > 0).numpy())
            rows.append(
                {
                    "learner": learner,
                    "repeat": repeat,
                    "expected_cost": expected_cost(p > threshold, y_te, cfg.cost_fp, cfg.cost_fn),
                    "threshold": threshold,
                    "probe_accuracy": float(probe.score(hidden[half:], (z_te[half:] > 0).numpy())),
                    "log_loss": float(
                        torch.nn.functional.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), y_te)
                    ),
                }
            )
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """learner -> mean of each measure over repeats."""
    out: dict[str, dict[str, float]] = {}
    for learner in ("weighted", "post-hoc"):
        part = [r for r in rows if r["learner"] == learner]
        out[learner] = {
            k: float(np.mean([r[k] for r in part])) for k in ("expected_cost", "probe_accuracy", "log_loss")
        }
    return out


class UtilityScenario:
    """``recsim run utility-weighted``: the two learners as arms, repeats as rounds (same interface
    as :class:`recsim.scenario.Scenario`)."""

    plot = ("expected_cost", "probe_accuracy", "log_loss")

    def __init__(self, name: str, description: str, base: dict[str, Any]) -> None:
        self.name, self.description, self.base = name, description, base
        self.arms = {"weighted": {}, "post-hoc": {}}

    def resolve(
        self, overrides: Any = (), *, rounds: int | None = None, seed: int | None = None
    ) -> dict[str, Any]:
        from pydantic import ValidationError

        from recsim.core.config import ConfigError, TrackingConfig, apply_overrides, describe_errors

        data = apply_overrides(dict(self.base), overrides)
        tracking = TrackingConfig(**data.pop("tracking", {}))
        if rounds is not None:
            data["repeats"] = rounds
        if seed is not None:
            data["seed"] = seed
        try:
            return {"experiment": UtilityConfig.model_validate(data), "tracking": tracking}
        except ValidationError as exc:
            raise ConfigError("invalid config: " + describe_errors(exc, UtilityConfig)) from None

    def total_steps(self, configs: dict[str, Any]) -> int:
        return 2 * configs["experiment"].repeats

    def tracking(self, configs: dict[str, Any]) -> Any:
        return configs["tracking"]

    def run(self, configs: dict[str, Any], out: Any, tracker: Any = None, on_round: Any = None) -> Any:
        """Both learners over ``repeats`` data sets into ``out``: metrics.parquet, curves.png,
        summary.json (means over repeats)."""
        import polars as pl

        from recsim.core.config import flatten
        from recsim.core.runner import RunRecord
        from recsim.io.logs import write_atomic
        from recsim.io.plots import plot_curves

        cfg: UtilityConfig = configs["experiment"]
        with RunRecord(
            self.name, out, tracker, {"scenario": self.name, "experiment": cfg.model_dump()}
        ) as rec:
            rows = run_utility(cfg)
            frame = (
                pl.DataFrame(
                    [
                        {
                            "arm": r["learner"],
                            "domain": "synthetic",
                            "round": r["repeat"],
                            **{k: v for k, v in r.items() if k not in ("learner", "repeat")},
                        }
                        for r in rows
                    ]
                )
                .with_columns(pl.col("round").cast(pl.Int32))
                .sort("arm", "round")
            )
            for arm in self.arms:
                rec.tracker.start_run(arm, arm, flatten(cfg), rec.arm_tags(arm, "synthetic"))
                for row in frame.filter(pl.col("arm") == arm).iter_rows(named=True):
                    rec.tracker.log(row, row["round"], key=arm)
                    if on_round is not None:
                        on_round(arm, row["round"], row)
                rec.tracker.end_run(arm, [])
            write_atomic(frame, out / "metrics.parquet")
            plot_curves(frame, list(self.plot), out / "curves.png", title=self.name)
            rec.summary(final=summarize(rows))
            rec.finished()
        return frame

    def final(self, frame: Any) -> dict[str, dict[str, float | None]]:
        """learner -> mean over repeats."""
        import polars as pl

        means = frame.group_by("arm", maintain_order=True).agg(pl.col(list(self.plot)).mean())
        return {r["arm"]: {m: r[m] for m in self.plot} for r in means.iter_rows(named=True)}
