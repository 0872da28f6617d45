"""Scenario types of the LLM-reward domain that add scenario-level analysis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsim.scenario import Scenario


def fit_gold_curve(d: np.ndarray, gain: np.ndarray, form: str) -> tuple[float, float, float]:
    """Least-squares fit of gold gain against d = sqrt(KL) (Gao, Schulman & Hilton 2022).

    best-of-n: R(d) = d (a - b d); RL: R(d) = d (a - b log d). Returns (a, b, r2); points with
    d = 0 carry no information on a and b and are dropped for the RL form (log 0).
    """
    from sklearn.linear_model import LinearRegression

    keep = d > 0 if form == "rl" else np.ones_like(d, dtype=bool)
    d, gain = d[keep], gain[keep]
    second = d**2 if form == "bon" else d * np.log(d)
    x = np.stack([d, -second], 1)
    model = LinearRegression(fit_intercept=False).fit(x, gain)
    a, b = (float(v) for v in model.coef_)
    return a, b, float(model.score(x, gain))


class OveroptimizationScenario(Scenario):
    """Arms ``best-of-n`` and ``grpo``; after the run, fits each arm's gold gain over sqrt(KL) and
    writes ``overoptimization_fit.json`` (coefficients a, b, the peak a / 2b for best-of-n, r2)."""

    def post(self, frame: pl.DataFrame, out: Path) -> dict[str, float]:
        results: dict[str, Any] = {}
        for arm, form in (("best-of-n", "bon"), ("grpo", "rl")):
            part = frame.filter(pl.col("arm") == arm).sort("round")
            if part.height < 2:  # two coefficients
                continue
            d = part["sqrt_kl"].to_numpy()
            gold0 = 0.5  # gold is a win rate against the reference policy: 0.5 at d = 0
            a, b, r2 = fit_gold_curve(d, part["gold"].to_numpy() - gold0, form)
            results[f"{arm}.gold_a"], results[f"{arm}.gold_b"], results[f"{arm}.gold_r2"] = a, b, r2
            if form == "bon" and b > 0:
                results[f"{arm}.gold_peak_d"] = a / (2 * b)
            pa, pb, pr2 = fit_gold_curve(d, part["proxy"].to_numpy() - gold0, form)
            results[f"{arm}.proxy_a"], results[f"{arm}.proxy_b"], results[f"{arm}.proxy_r2"] = pa, pb, pr2
        clean = {k: (v if np.isfinite(v) else None) for k, v in results.items()}
        (out / "overoptimization_fit.json").write_text(json.dumps(clean, indent=2))
        return results
