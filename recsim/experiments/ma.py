"""The synthetic multi-task experiment of Ma et al. (KDD 2018, section 3.2): MMoE vs one-gate MoE
vs shared-bottom as the correlation between two regression tasks varies.

Data (d = ``dim``): orthogonal unit vectors u1, u2; w1 = c u1, w2 = c (p u1 + sqrt(1 - p^2) u2),
so that cos(w1, w2) = p (the task correlation knob); x ~ N(0, I_d) and

    y_t = w_t . x + sum_{i=1..m} sin(alpha_i w_t . x + beta_i) + eps,   eps ~ N(0, sigma^2)

The paper gives no m, alpha, beta; as in public reproductions, c = 1, alpha_i = i,
beta_i = (i - 1)^2, sigma = 0.1 (variance 0.01), m = 4 by default (configurable). Models follow
the paper: 8 experts of one 16-unit layer, towers of 8 units, the shared-bottom parameter-matched,
all reading x directly. Trained with
Adam on the sum of the two tasks' squared errors; the test loss is the mean squared error over
both tasks on a held-out set.

One "arm" is a (model, correlation) pair; its "rounds" are epochs; its metrics are averaged over
``repeats`` seeds (``test_loss_std`` is the spread across seeds).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError

from recsim.core.config import ConfigError, Section, TrackingConfig, apply_overrides, describe_errors, flatten

if TYPE_CHECKING:  # torch and polars load only when the experiment runs (`recsim scenarios` stays fast)
    import polars as pl
    import torch

Model = Literal["mmoe", "omoe", "shared_bottom"]


class MaConfig(Section):
    """The synthetic multi-task experiment (Ma et al. 2018, section 3.2)."""

    seed: int = 0
    """Root seed of the data and the models."""
    dim: int = Field(100, gt=1)
    """Input dimension d."""
    n_train: int = Field(5_000, gt=0)
    """Training examples per (correlation, repeat)."""
    n_test: int = Field(2_000, gt=0)
    """Held-out examples per (correlation, repeat)."""
    correlations: list[float] = Field(default_factory=lambda: [0.5, 0.9, 1.0], min_length=1)
    """Task correlations p = cos(w1, w2), each in [-1, 1]."""
    models: list[Model] = Field(default_factory=lambda: ["mmoe", "omoe", "shared_bottom"], min_length=1)
    """Models to compare."""
    repeats: int = Field(5, gt=0)
    """Seeds per (model, correlation)."""
    epochs: int = Field(10, gt=0)
    """Passes over the training set (the run's "rounds")."""
    batch_size: int = Field(64, gt=0)
    """Examples per Adam step."""
    lr: float = Field(1e-3, gt=0)
    """Adam learning rate."""
    experts: int = Field(8, gt=0)
    """Experts (E)."""
    expert_dim: int = Field(16, gt=0)
    """Units of each expert's single layer."""
    tower_dim: int = Field(8, gt=0)
    """Units of each task tower."""
    shared_bottom_width: int | None = Field(None, gt=0)
    """Width of the shared-bottom's shared layer; None = parameter-matched to the MMoE (the
    paper's comparison); e.g. 16 = one expert's width (a common public reproduction)."""
    sine_terms: int = Field(4, ge=0)
    """m, the number of sine terms (with m = 10 the high-frequency terms act as noise that no
    model here learns, and the comparison drowns in it)."""
    scale: float = Field(1.0, gt=0)
    """c, the norm of the task weight vectors."""
    noise_std: float = Field(0.1, ge=0)
    """sigma, the label noise."""
    tracking: TrackingConfig = TrackingConfig()

    def model_post_init(self, _: Any) -> None:
        bad = [p for p in self.correlations if not -1 <= p <= 1]
        if bad:
            raise ValueError(f"correlations must lie in [-1, 1], got {bad}")


def make_tasks(config: MaConfig, correlation: float, repeat: int) -> tuple[torch.Tensor, ...]:
    """(x_train [n, d], y_train [n, 2], x_test, y_test) for one correlation and repeat."""
    import torch

    from recsim.core.rng import generator

    g = generator(config.seed, repeat, f"ma-data-{correlation}")
    d = config.dim
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g))
    u1, u2 = q[:, 0], q[:, 1]
    w = config.scale * torch.stack([u1, correlation * u1 + (1 - correlation**2) ** 0.5 * u2], dim=1)  # [d, 2]
    alpha = torch.arange(1, config.sine_terms + 1, dtype=torch.float32)  # [m]
    beta = torch.arange(config.sine_terms, dtype=torch.float32) ** 2

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, d, generator=g)
        z = x @ w  # [n, 2]
        sines = torch.sin(alpha * z.unsqueeze(-1) + beta).sum(-1)  # [n, 2]
        return x, z + sines + config.noise_std * torch.randn(n, 2, generator=g)

    return (*draw(config.n_train), *draw(config.n_test))


def train_one(
    config: MaConfig,
    model_name: Model,
    data: tuple[torch.Tensor, ...],
    seed_round: int,
    on_epoch: Callable[[int, float, float], None],
) -> float:
    """Train one model; calls ``on_epoch(epoch, train_loss, test_loss)``; returns the final test loss."""
    import torch

    from recsim.core.batches import minibatches
    from recsim.core.rng import generator
    from towers.mmoe import MultiTaskNet

    x_tr, y_tr, x_te, y_te = data
    gen = generator(config.seed, seed_round, f"ma-model-{model_name}")
    net = MultiTaskNet(
        config.dim,
        2,
        gen,
        arch=model_name,
        n_experts=config.experts,
        expert_dim=config.expert_dim,
        tower_dim=config.tower_dim,
        hidden_activation=False,
        bottom_width=config.shared_bottom_width,
    )
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    test = float("nan")
    for epoch in range(config.epochs):
        net.train()
        total = 0.0
        for b in minibatches(len(x_tr), config.batch_size, gen):
            loss = ((net(x_tr[b])[0] - y_tr[b]) ** 2).mean(0).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        net.eval()
        with torch.inference_mode():
            test = float(((net(x_te)[0] - y_te) ** 2).mean())
        on_epoch(epoch, total / len(x_tr) / 2, test)
    return test


class MaScenario:
    """A scenario object for ``recsim run mmoe-tasks`` (same interface as :class:`Scenario`)."""

    def __init__(self, name: str, description: str, base: dict[str, Any]) -> None:
        self.name, self.description, self.base = name, description, base
        self.plot = ("test_loss",)

    @property
    def arms(self) -> dict[str, dict[str, Any]]:
        config = MaConfig.model_validate(self.base)
        return {f"{m}@{p:g}": {} for p in config.correlations for m in config.models}

    def resolve(
        self,
        overrides: list[str] | tuple[str, ...] = (),
        *,
        rounds: int | None = None,
        seed: int | None = None,
    ) -> dict[str, MaConfig]:
        data = apply_overrides(dict(self.base), overrides)
        if rounds is not None:
            data["epochs"] = rounds
        if seed is not None:
            data["seed"] = seed
        try:
            return {"experiment": MaConfig.model_validate(data)}
        except ValidationError as exc:
            raise ConfigError("invalid config: " + describe_errors(exc, MaConfig)) from None

    def total_steps(self, configs: dict[str, MaConfig]) -> int:
        c = configs["experiment"]
        return len(c.models) * len(c.correlations) * c.epochs

    def tracking(self, configs: dict[str, MaConfig]) -> TrackingConfig:
        return configs["experiment"].tracking

    def run(
        self, configs: dict[str, MaConfig], out: Path, tracker: Any = None, on_round: Callable | None = None
    ) -> pl.DataFrame:
        """Every (model, correlation) arm over ``repeats`` data sets into ``out``: metrics.parquet
        (mean curves over repeats), final_test_loss.parquet, curves.png, summary.json."""
        import polars as pl

        from recsim.core.loop import metrics_frame
        from recsim.core.runner import RunRecord
        from recsim.io.logs import write_atomic
        from recsim.io.plots import plot_curves

        config = configs["experiment"]
        saved = {"scenario": self.name, "experiment": config.model_dump(mode="json")}
        with RunRecord(self.name, out, tracker, saved) as rec:
            rows: list[dict[str, Any]] = []
            finals: list[dict[str, Any]] = []
            for p in config.correlations:
                datasets = [make_tasks(config, p, r) for r in range(config.repeats)]
                for model in config.models:
                    arm_rows, arm_finals = self._arm(config, model, p, datasets, rec, on_round)
                    rows += arm_rows
                    finals += arm_finals
            frame = metrics_frame(rows)
            write_atomic(frame, out / "metrics.parquet")
            table = (
                pl.DataFrame(finals)
                .group_by("model", "correlation", maintain_order=True)
                .agg(
                    test_loss=pl.col("test_loss").mean(),
                    test_loss_std=pl.col("test_loss").std(),
                    repeats=pl.len(),
                )
                .sort("correlation", "model")
            )
            write_atomic(table, out / "final_test_loss.parquet")
            plot_curves(frame, ["test_loss", "train_loss"], out / "curves.png", title=self.name)
            final = {
                f"{r['model']}@{r['correlation']:g}": {
                    "test_loss": r["test_loss"],
                    "test_loss_std": r["test_loss_std"],
                }
                for r in table.iter_rows(named=True)
            }
            rec.summary(final=final)
            rec.finished(out / "final_test_loss.parquet")
        return frame

    def _arm(
        self,
        config: MaConfig,
        model: Model,
        p: float,
        datasets: list[tuple[torch.Tensor, ...]],
        rec: Any,
        on_round: Callable | None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One model at one correlation: its MLflow run, mean curves over the repeats (rows) and
        each repeat's final test loss."""
        import torch

        arm = f"{model}@{p:g}"
        rec.tracker.start_run(arm, arm, flatten(config), rec.arm_tags(arm, "synthetic"))
        curves = torch.zeros(config.repeats, config.epochs, 2)  # [R, epochs, (train, test)]
        finals = []
        for r, data in enumerate(datasets):

            def record(epoch: int, tr: float, te: float, r: int = r) -> None:
                curves[r, epoch] = torch.tensor([tr, te])

            final = train_one(config, model, data, r, record)
            finals.append({"model": model, "correlation": p, "repeat": r, "test_loss": final})
        rows = []
        for epoch in range(config.epochs):
            row = {
                "arm": arm,
                "domain": "synthetic",
                "round": epoch,
                "model": model,
                "correlation": p,
                "train_loss": float(curves[:, epoch, 0].mean()),
                "test_loss": float(curves[:, epoch, 1].mean()),
                "test_loss_std": float(curves[:, epoch, 1].std()) if config.repeats > 1 else 0.0,
            }
            rows.append(row)
            rec.tracker.log(row, epoch, key=arm)
            if on_round is not None:
                on_round(arm, epoch, row)
        rec.tracker.end_run(arm, [])
        return rows, finals

    def final(self, frame: pl.DataFrame) -> dict[str, dict[str, float | None]]:
        """arm -> final-epoch test loss (mean and std over repeats)."""
        from recsim.core.runner import final_table

        return final_table(frame, ["test_loss", "test_loss_std"])
