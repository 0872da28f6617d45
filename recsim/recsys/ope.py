"""Off-policy evaluation of slate policies from the simulator's logs, against the known truth.

A round's logged slates (``policy.log_candidates: true``) are read into :class:`LoggedSlates`:
n slates of K positions chosen from C candidates each. A target policy is a matrix
``P [n, K, C]`` = pi_e(candidate c at position k | slate s's user and candidates), so a
deterministic slate is one-hot and a uniformly random one is 1 / C everywhere. With the logged
propensity pi_b(a, k) of each shown item at its position (exact, :mod:`recsim.recsys.policy`),
the item-position importance weight of impression (s, k) is

    w_sk = pi_e(a_sk, k) / pi_b(a_sk, k).

The estimators (Open Bandit Pipeline's names; numpy, since OBP does not install on Python 3.11)
estimate the value V(pi_e) = E_s[sum_k E[click at k]] (expected clicks per slate):

* IPW (Horvitz & Thompson 1952; item-position form of Li et al. 2018):
  V_IPW = 1/n sum_s sum_k w_sk r_sk.
* SNIPW (self-normalized, Swaminathan & Joachims 2015), per position:
  V_SNIPW = sum_k (sum_s w_sk r_sk) / (sum_s w_sk).
* DR (doubly robust, Dudik, Langford & Li 2011) with a click model q(s, c, k):
  V_DR = 1/n sum_s [sum_k sum_c P_skc q_skc + sum_k w_sk (r_sk - q(s, a_sk, k))].

All three are unbiased (SNIPW consistent) when the click at a position depends only on the
user, the item and the position: the ``pbm`` and ``logit`` click models. Under ``cascade`` and
``choice`` an item's click depends on the rest of the slate and item-position weights are biased.
Intervals are 95% t-intervals over the n slates' contributions (for SNIPW, of its linearization
sum_k (w_sk r_sk - V_k w_sk) / mean_s w_sk); the n slates of a round are independent users
given the logger and the world. The true value is exact: sum_k sum_c P_skc e_skc, with
e_skc = P(click | candidate c at position k) from the logged true relevance and examination.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

__all__ = [
    "ESTIMATORS",
    "Estimate",
    "LoggedSlates",
    "click_probability",
    "deterministic",
    "dr",
    "fit_click_model",
    "ipw",
    "snipw",
    "true_value",
    "uniform",
]

SEPARABLE = ("pbm", "logit")  # click models under which item-position weights are unbiased


@dataclass(frozen=True)
class Estimate:
    """A value estimate with its 95% interval and the number of slates it used."""

    value: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class LoggedSlates:
    """One round's slates, as arrays (n slates, K positions, C candidates).

    Attributes:
        users: [n] user ids. device: [n] device index.
        items: [n, K] shown items. clicks: [n, K] 0/1. pscore: [n, K] pi_b(a_sk, k).
        examination: [n, K] true theta(k, device). candidates: [n, C] item ids.
        relevance: [n, C] true relevance of each candidate at the round (for the truth only).
        shown: [n, K] index of each shown item among its slate's candidates.
    """

    users: np.ndarray
    device: np.ndarray
    items: np.ndarray
    clicks: np.ndarray
    pscore: np.ndarray
    examination: np.ndarray
    candidates: np.ndarray
    relevance: np.ndarray
    shown: np.ndarray

    @classmethod
    def from_log(cls, frame: pl.DataFrame, devices: list[str] | tuple[str, ...]) -> LoggedSlates:
        """One round's log rows (with ``candidates`` and ``candidate_relevance``) -> slates."""
        if "candidates" not in frame.columns:
            raise ValueError("the log has no candidates: run with policy.log_candidates=true")
        frame = frame.sort("user", "position")
        k = int(frame["position"].max())
        n = frame.height // k
        grid = lambda col, dtype: frame[col].to_numpy().astype(dtype).reshape(n, k)  # noqa: E731
        first = frame.filter(pl.col("position") == 1)
        cand = np.stack(first["candidates"].to_numpy()).astype(np.int64)  # [n, C]
        items = grid("item", np.int64)
        match = items[:, :, None] == cand[:, None, :]  # [n, K, C]
        if not match.any(-1).all():
            raise ValueError("a shown item is missing from its slate's logged candidates")
        index = {d: i for i, d in enumerate(devices)}
        return cls(
            users=first["user"].to_numpy().astype(np.int64),
            device=first["device"].replace_strict(index, return_dtype=pl.Int64).to_numpy(),
            items=items,
            clicks=grid("click", np.float64),
            pscore=grid("propensity", np.float64),
            examination=grid("examination", np.float64),
            candidates=cand,
            relevance=np.stack(first["candidate_relevance"].to_numpy()).astype(np.float64),
            shown=match.argmax(-1),
        )

    @property
    def n(self) -> int:
        return len(self.users)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n, K, C)."""
        return (self.n, self.items.shape[1], self.candidates.shape[1])


# -- target policies ------------------------------------------------------------------------------


def uniform(slates: LoggedSlates) -> np.ndarray:
    """P [n, K, C] of K candidates drawn uniformly without replacement, in random order."""
    n, k, c = slates.shape
    return np.full((n, k, c), 1.0 / c)


def deterministic(slates: LoggedSlates, scores: np.ndarray) -> np.ndarray:
    """P [n, K, C] of the top-K candidates by ``scores`` [n, C] (ties: the earlier candidate)."""
    n, k, c = slates.shape
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # [n, K]
    out = np.zeros((n, k, c))
    np.put_along_axis(out, order[:, :, None], 1.0, axis=2)
    return out


# -- truth, clicks and the regression model -------------------------------------------------------


def click_probability(relevance: np.ndarray, examination: np.ndarray, model: str) -> np.ndarray:
    """P(click) of items of true relevance ``relevance`` at positions of examination
    ``examination`` (broadcast), from the simulator's own position-separable click model
    (:func:`recsim.recsys.behavior.click_probability`)."""
    if model not in SEPARABLE:
        raise ValueError(
            f"off-policy values need a position-separable click model {SEPARABLE}, got {model!r}"
        )
    from recsim.recsys.behavior import click_probability as per_impression

    return per_impression(model, torch.as_tensor(examination), torch.as_tensor(relevance)).numpy()


def true_value(slates: LoggedSlates, policy: np.ndarray, model: str) -> float:
    """V(pi_e) = mean_s sum_k sum_c P_skc P(click | c at k), exact from the logged truth."""
    e = click_probability(slates.relevance[:, None, :], slates.examination[:, :, None], model)  # [n, K, C]
    return float((policy * e).sum((1, 2)).mean())


@dataclass(frozen=True)
class ClickModel:
    """q(s, c, k) = sigmoid(b + beta_item + gamma_(position, device)): a logistic regression of
    clicks on item and position x device one-hots (scikit-learn), fitted on earlier logs."""

    intercept: float
    item: np.ndarray  # [N] item effects (0 for items the training rows never showed)
    cell: np.ndarray  # [K, V] position x device effects

    def predict(self, slates: LoggedSlates) -> np.ndarray:
        """q [n, K, C] for every candidate at every position of every slate."""
        logit = (
            self.intercept
            + self.item[slates.candidates][:, None, :]
            + self.cell[:, slates.device].T[:, :, None]
        )
        return 1.0 / (1.0 + np.exp(-logit))


def fit_click_model(train: LoggedSlates, n_items: int, n_devices: int) -> ClickModel:
    """The DR regression model from ``train``'s impressions (another round's slates)."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression

    n, k, _ = train.shape
    rows = np.arange(n * k)
    item = csr_matrix((np.ones(n * k), (rows, train.items.reshape(-1))), shape=(n * k, n_items))
    cell_index = (np.arange(k)[None, :] * n_devices + train.device[:, None]).reshape(-1)
    cell = csr_matrix((np.ones(n * k), (rows, cell_index)), shape=(n * k, k * n_devices))
    y = train.clicks.reshape(-1)
    if y.min() == y.max():  # one class only: a constant model
        p = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        return ClickModel(float(np.log(p / (1 - p))), np.zeros(n_items), np.zeros((k, n_devices)))
    reg = LogisticRegression(C=1.0, max_iter=500).fit(hstack([item, cell]).tocsr(), y)
    coef = reg.coef_[0]
    return ClickModel(float(reg.intercept_[0]), coef[:n_items], coef[n_items:].reshape(k, n_devices))


# -- estimators ----------------------------------------------------------------------------------


def _weights(slates: LoggedSlates, policy: np.ndarray) -> np.ndarray:
    """w [n, K] = pi_e(a_sk, k) / pi_b(a_sk, k)."""
    target = np.take_along_axis(policy, slates.shown[:, :, None], axis=2)[:, :, 0]
    return target / slates.pscore


def _mean_interval(contrib: np.ndarray, value: float | None = None) -> Estimate:
    from recsim.core.stats import t_quantile

    n = len(contrib)
    value = float(contrib.mean()) if value is None else value
    half = t_quantile(n - 1) * float(contrib.std(ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
    return Estimate(value, value - half, value + half, n)


def ipw(slates: LoggedSlates, policy: np.ndarray) -> Estimate:
    """Inverse propensity weighting: 1/n sum_s sum_k w_sk r_sk (see the module docstring).

    References: Horvitz & Thompson, JASA 1952; Li, Kiseleva, de Rijke et al., "Offline Evaluation
    of Ranking Policies with Click Models", KDD 2018 (the item-position form)."""
    return _mean_interval((_weights(slates, policy) * slates.clicks).sum(1))


def snipw(slates: LoggedSlates, policy: np.ndarray) -> Estimate:
    """Self-normalized IPW per position: sum_k (sum_s w_sk r_sk) / (sum_s w_sk); positions no
    logged impression can reach (sum_s w_sk = 0) add 0.

    References: Swaminathan & Joachims, "The Self-Normalized Estimator for Counterfactual
    Learning", NeurIPS 2015."""
    w = _weights(slates, policy)
    mass = w.mean(0)  # [K]
    safe = np.where(mass > 0, mass, 1.0)
    per_position = np.where(mass > 0, (w * slates.clicks).mean(0) / safe, 0.0)  # V_k
    value = float(per_position.sum())
    influence = ((w * slates.clicks - per_position * w) / safe).sum(1)  # the linearization
    return _mean_interval(influence + value, value)


def dr(slates: LoggedSlates, policy: np.ndarray, model: ClickModel) -> Estimate:
    """Doubly robust: 1/n sum_s [sum_k sum_c P_skc q_skc + sum_k w_sk (r_sk - q(s, a_sk, k))].

    References: Dudik, Langford & Li, "Doubly Robust Policy Evaluation and Learning", ICML 2011."""
    q = model.predict(slates)  # [n, K, C]
    q_shown = np.take_along_axis(q, slates.shown[:, :, None], axis=2)[:, :, 0]
    direct = (policy * q).sum((1, 2))
    correction = (_weights(slates, policy) * (slates.clicks - q_shown)).sum(1)
    return _mean_interval(direct + correction)


ESTIMATORS = ("ipw", "snipw", "dr")
