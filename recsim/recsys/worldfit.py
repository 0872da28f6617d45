"""Worlds fitted to an interaction log: ``recsim world fit LOG --out WORLD``, ``world.source: WORLD``.

The fitted world has the synthetic world's form (:mod:`recsim.recsys.world`), so every recommender
scenario runs on it unchanged:

    rel(u, i) = sigmoid(a <x_u, y_i> + pop_i + b)        true P(click | examined)
    sat(u, i) = sigmoid(a_s <x_u, z_i> + b_s)            true P(satisfied | click)

Fitting (full-batch Adam over every (user, item) pair of the log's users and items; unit factors
as ``normalize(raw)``):

1. Click relevance: logistic matrix factorization of "u interacted with i" (every other pair a
   negative, as implicit-feedback MF, Johnson 2014) with a per-user offset c_u that absorbs how
   much each user rates. The world drops c_u: a user's volume is their *activity* (how often they
   come back, below), not their taste. b is then set so that the mean relevance over all pairs is
   ``click_rate`` (default: the log's density, the fitted model's own mean).
2. Satisfaction: on the rated pairs, logistic regression of ``rating >= satisfied_at`` on
   <x_u, z_i> (z_i a new unit factor started at y_i, x_u fixed) with a per-user offset d_u (harsh
   and lenient raters), dropped the same way; b_s is set so that the mean satisfaction over the
   rated pairs is the log's satisfied share. A click log without ratings keeps z_i = y_i.
3. Categories: the log's (an item's first genre for MovieLens), else k-means (scikit-learn) of
   the item factors; a user's cluster is the category they interacted with most.
4. Activity: how much each user comes back, by ``activity``: their interactions (the default:
   MovieLens users rate in bursts, the median user on one day, so their volume says more than
   their days) or their active days (distinct timestamp days). The loop samples
   ``loop.active_users`` users a round with probability proportional to it (without replacement).

A held-out check fits the same model on each user's earlier interactions and ranks their latest
``holdout`` share among the items they had not interacted with (recall@10 and AUC, beside the
popularity ranking). The world folder holds ``world.pt`` (tensors), ``users.parquet`` and
``items.parquet`` (the original ids, row = index) and ``card.json`` (how it was made);
:func:`save_world` writes it atomically.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import torch

from recsim.core.rng import SETUP_ROUND, generator
from recsim.recsys.datasets import InteractionLog

if TYPE_CHECKING:
    from recsim.config import SimConfig

__all__ = ["FitOptions", "FittedWorld", "fit_world", "read_card", "save_world", "world_fields"]

FORMAT = 1
PAIR_CHUNK = 1 << 22  # (user, item) pairs per chunk of the dense fit
VALID_SHARE = 0.1  # cells (click fit) or rated pairs (satisfaction fit) that choose the epochs
TENSORS = ("user_factors", "item_factors", "item_sat_factors", "item_popularity", "item_category")
TENSORS += ("user_cluster", "user_activity")


@dataclass(frozen=True)
class FitOptions:
    """How ``recsim world fit`` fits a world (every field is recorded in the card)."""

    dim: int = 16
    """Dimension of the fitted unit factors (D)."""
    epochs: int = 300
    """Full-batch Adam steps of each fit."""
    lr: float = 0.05
    """Adam learning rate."""
    satisfied_at: float = 4.0
    """A rating >= this is a satisfied consumption."""
    click_rate: float | None = None
    """Mean true relevance over all (user, item) pairs; None = the log's density."""
    clusters: int = 16
    """k-means categories when the log has none."""
    activity: str = "interactions"
    """A user's activity weight: "interactions" or "days" (distinct days with an interaction)."""
    holdout: float = 0.1
    """Share of each user's latest interactions held out for the ranking check (0 = none)."""
    seed: int = 0
    """Seed of the factors' initialization, the k-means and an untimed log's hold-out draw."""
    max_pairs: int = 200_000_000
    """Largest users x items the dense fit takes."""

    def __post_init__(self) -> None:
        checks = {  # field -> (valid, what is allowed)
            "dim": (self.dim > 0, "> 0"),
            "epochs": (self.epochs > 0, "> 0"),
            "lr": (self.lr > 0, "> 0"),
            "clusters": (self.clusters > 0, "> 0"),
            "holdout": (0 <= self.holdout < 1, "in [0, 1)"),
            "click_rate": (self.click_rate is None or 0 < self.click_rate < 1, "in (0, 1)"),
            "activity": (self.activity in ("interactions", "days"), "interactions or days"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class FittedWorld:
    """The fitted tensors (``TENSORS``, CPU) and the card that describes them."""

    tensors: dict[str, torch.Tensor]
    card: dict[str, Any]
    user_ids: pl.Series
    item_ids: pl.Series


# -- fitting -------------------------------------------------------------------------------------


def fit_world(log: InteractionLog, options: FitOptions | None = None) -> FittedWorld:
    """Fit a world to ``log`` (see the module docstring). Raises ValueError (one line) on a log
    too large for the dense fit."""
    opt = options or FitOptions()
    if opt.activity == "days" and not log.has_timestamps:
        raise ValueError(f"{log.name}: activity 'days' needs a timestamp on every row")
    n_users, n_items = log.n_users, log.n_items
    need_items = 2 if log.categories is not None else max(2, opt.clusters)
    if n_users < 2 or n_items < need_items:
        why = (
            f" (k-means makes --clusters {opt.clusters} categories of them)" if log.categories is None else ""
        )
        raise ValueError(
            f"{log.name}: {n_users} user(s) x {n_items} item(s) is too small to fit: it needs at least "
            f"2 users and {need_items} items{why}"
        )
    if n_users * n_items > opt.max_pairs:
        raise ValueError(
            f"{n_users} users x {n_items} items = {n_users * n_items:,} pairs exceeds max_pairs "
            f"{opt.max_pairs:,}: filter the log (e.g. users and items with enough interactions)"
        )
    pairs = (  # one row per (user, item): clicked if ever, its latest rating
        log.frame.sort("timestamp", nulls_last=True, maintain_order=True)
        .group_by("user", "item", maintain_order=True)
        .agg(pl.col("click").any(), pl.col("rating").drop_nulls().last(), pl.col("timestamp").max())
        .sort("user", "item")
    )
    hit = _col(pairs, "click")
    clicked = torch.zeros(n_users, n_items, dtype=torch.bool)
    clicked[_col(pairs, "user")[hit], _col(pairs, "item")[hit]] = True
    if not clicked.any():
        raise ValueError(f"{log.name}: no clicked or rated pair to fit")
    if clicked.all():
        raise ValueError(
            f"{log.name}: every user-item pair is clicked or rated, so nothing tells relevance apart: "
            "a log to fit needs pairs that were not consumed"
        )
    click = _fit_click(clicked, opt)
    density = float(clicked.float().mean())
    target = opt.click_rate if opt.click_rate is not None else density
    x, y = click["x"], click["y"]
    base = _calibrate(lambda b: _mean_relevance(x, y, click["a"], click["pop"], b), target)
    sat = _fit_satisfaction(log, pairs, x, y, opt)
    category, names, category_source = _categories(log, y, opt)
    card = {
        "format": FORMAT,
        "source": log.name,
        "sha256": log.sha256,
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": log.frame.height,
        "n_pairs_clicked": int(clicked.sum()),
        "density": density,
        "click_rate": target,
        "affinity_scale": click["a"],
        "base_logit": base,
        "click_loss": click["loss"],
        "click_epochs": click["epochs"],
        "satisfaction_scale": sat["a"],
        "satisfaction_logit": sat["b"],
        "satisfaction_loss": sat["loss"],
        "satisfaction_epochs": sat.get("epochs"),
        "satisfied_share": sat["share"],
        "has_ratings": log.has_ratings,
        "categories": names,
        "category_source": category_source,
        "activity": opt.activity,
        "options": asdict(opt),
    }
    tensors = {
        "user_factors": x,
        "item_factors": y,
        "item_sat_factors": sat["z"],
        "item_popularity": click["pop"],
        "item_category": category,
        "user_cluster": _user_clusters(pairs, category, n_users),
        "user_activity": _activity(log, opt.activity),
    }
    if opt.holdout > 0:
        card["heldout"] = heldout_ranking(log, opt)
    return FittedWorld(tensors, card, log.user_ids, log.item_ids)


def _unit_rows(raw: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm, as the drawn world's factors are."""
    return torch.nn.functional.normalize(raw, dim=-1)


def _col(frame: pl.DataFrame, name: str) -> torch.Tensor:
    return torch.from_numpy(frame[name].to_numpy(writable=True))


def _fit_click(clicked: torch.Tensor, opt: FitOptions) -> dict[str, Any]:
    """Dense logistic MF of clicked [U, N] -> unit x [U, D], y [N, D], a, pop [N], final loss,
    trained for the number of epochs at which a held-out tenth of the cells scored best."""
    g = generator(opt.seed, SETUP_ROUND, "world-fit-valid")
    valid = torch.rand(clicked.shape, generator=g) < VALID_SHARE
    epochs = _click_steps(clicked, opt, opt.epochs, valid)["best_epoch"]
    return {**_click_steps(clicked, opt, epochs, None), "epochs": epochs}


def _click_steps(
    clicked: torch.Tensor, opt: FitOptions, epochs: int, valid: torch.Tensor | None
) -> dict[str, Any]:
    """``epochs`` full-batch Adam steps on the cells of clicked [U, N] outside ``valid`` (None:
    all); with ``valid``, also the step after which its loss was lowest (``best_epoch``)."""
    n_users, n_items = clicked.shape
    g = generator(opt.seed, SETUP_ROUND, "world-fit")
    x_raw = torch.randn(n_users, opt.dim, generator=g).requires_grad_()
    y_raw = torch.randn(n_items, opt.dim, generator=g).requires_grad_()
    log_a = torch.tensor(math.log(3.0), requires_grad=True)
    rate = clicked.float().mean(1).clamp(1e-4, 1 - 1e-4)
    user_off = torch.logit(rate).requires_grad_()  # c_u, started at each user's own rate
    pop = torch.zeros(n_items, requires_grad=True)
    train = ~valid if valid is not None else torch.ones_like(clicked)

    def logit_of(s: int, e: int) -> torch.Tensor:  # [b, N] for users [s, e)
        return log_a.exp() * (_unit_rows(x_raw[s:e]) @ _unit_rows(y_raw).T) + pop + user_off[s:e, None]

    params = [x_raw, y_raw, log_a, user_off, pop]
    loss_value, best_epoch = _adam_on_cells(params, logit_of, clicked.float(), train, valid, epochs, opt.lr)
    with torch.no_grad():
        return {
            "x": _unit_rows(x_raw).detach(),
            "y": _unit_rows(y_raw).detach(),
            "a": float(log_a.detach().exp()),
            "pop": pop.detach().clone(),
            "loss": loss_value,
            "best_epoch": best_epoch,
        }


def _adam_on_cells(
    params: list[torch.Tensor],
    logit_of: Callable[[int, int], torch.Tensor],
    label: torch.Tensor,
    train: torch.Tensor,
    valid: torch.Tensor | None,
    epochs: int,
    lr: float,
) -> tuple[float, int]:
    """``epochs`` full-batch Adam steps on the mean binary cross-entropy over the ``train`` cells
    of label [U, N], the logits of users [s, e) given by ``logit_of(s, e)``, in chunks of users so
    that the [b, N] logits stay small -> (the last step's training loss, the number of steps after
    which the ``valid`` cells' loss was lowest: ``epochs`` without ``valid``, at least 1)."""
    adam = torch.optim.Adam(params, lr=lr)
    weight = train.float()
    n_train, n_valid = float(weight.sum()), float(valid.sum()) if valid is not None else 0.0
    step = max(1, PAIR_CHUNK // label.shape[1])
    loss_value, best, best_epoch = float("nan"), math.inf, epochs
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for epoch in range(1, epochs + 1):
        adam.zero_grad(set_to_none=True)
        total, held = 0.0, 0.0
        for s in range(0, label.shape[0], step):
            cell = bce(logit_of(s, s + step), label[s : s + step], reduction="none")  # [b, N]
            loss = (cell * weight[s : s + step]).sum() / n_train
            loss.backward()
            total += float(loss.detach())
            if valid is not None:
                held += float((cell.detach() * valid[s : s + step]).sum()) / n_valid
        if valid is not None and held < best:  # the loss of the parameters before this step
            best, best_epoch = held, epoch - 1
        adam.step()
        loss_value = total
    return loss_value, max(best_epoch, 1)


def _mean_relevance(x: torch.Tensor, y: torch.Tensor, a: float, pop: torch.Tensor, b: float) -> float:
    step = max(1, PAIR_CHUNK // len(y))
    total = sum(
        float(torch.sigmoid(a * (x[s : s + step] @ y.T) + pop + b).sum()) for s in range(0, len(x), step)
    )
    return total / (len(x) * len(y))


def _calibrate(mean_at: Any, target: float) -> float:
    """The intercept b at which ``mean_at(b)`` (increasing in b) equals ``target`` (bisection)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if mean_at(mid) < target else (low, mid)
    return (low + high) / 2


def _fit_satisfaction(
    log: InteractionLog, pairs: pl.DataFrame, x: torch.Tensor, y: torch.Tensor, opt: FitOptions
) -> dict[str, Any]:
    """Unit z [N, D], a_s, b_s, the loss and the satisfied share from the rated pairs."""
    rated = pairs.filter(pl.col("rating").is_not_null())
    if rated.height == 0:  # a click log: satisfaction appeal = click appeal, no data to say otherwise
        return {"z": y.clone(), "a": None, "b": None, "loss": None, "share": None}
    u, i = _col(rated, "user"), _col(rated, "item")
    happy = torch.from_numpy((rated["rating"] >= opt.satisfied_at).to_numpy(writable=True)).float()
    share = float(happy.mean())
    # Dense [U, N] label and masks: a gather's backward (index_put with accumulate) sums in a
    # thread-dependent order, a matrix product does not, so the fit repeats bit for bit.
    label = torch.zeros(len(x), len(y))
    label[u, i] = happy
    g = generator(opt.seed, SETUP_ROUND, "world-fit-valid")
    held = torch.zeros(len(x), len(y), dtype=torch.bool)
    held[u, i] = torch.rand(len(u), generator=g) < VALID_SHARE
    rated_cells = torch.zeros(len(x), len(y), dtype=torch.bool)
    rated_cells[u, i] = True
    epochs = _sat_steps(label, rated_cells & ~held, x, y, opt, opt.epochs, rated_cells & held)[2]
    z, a, _, loss = _sat_steps(label, rated_cells, x, y, opt, epochs, None)
    with torch.no_grad():
        affinity = a * (x[u] * z[i]).sum(-1)
    b = _calibrate(lambda b: float(torch.sigmoid(affinity + b).mean()), share)
    return {"z": z, "a": a, "b": b, "loss": loss, "share": share, "epochs": epochs}


def _sat_steps(
    label: torch.Tensor,
    train: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    opt: FitOptions,
    epochs: int,
    valid: torch.Tensor | None,
) -> tuple[torch.Tensor, float, int, float]:
    """``epochs`` Adam steps of the satisfaction logit on the ``train`` cells of label [U, N] ->
    (unit z [N, D], a_s, the step after which ``valid``'s loss was lowest, the training loss)."""
    z_raw = y.clone().requires_grad_()
    log_a = torch.tensor(math.log(3.0), requires_grad=True)
    user_off = torch.zeros(len(x), requires_grad=True)

    def logit_of(s: int, e: int) -> torch.Tensor:  # [b, N] for users [s, e)
        return log_a.exp() * (x[s:e] @ _unit_rows(z_raw).T) + user_off[s:e, None]

    loss_value, best_epoch = _adam_on_cells(
        [z_raw, log_a, user_off], logit_of, label, train, valid, epochs, opt.lr
    )
    return _unit_rows(z_raw).detach(), float(log_a.detach().exp()), best_epoch, loss_value


def _categories(log: InteractionLog, y: torch.Tensor, opt: FitOptions) -> tuple[torch.Tensor, list[str], str]:
    """[N] category index, the category names, and where they came from ("log" or "kmeans")."""
    if log.categories is not None:
        names = sorted(log.categories.unique().to_list())
        index = pl.Series(names).to_frame("category").with_row_index("k")
        k = log.categories.to_frame("category").join(index, on="category", how="left", maintain_order="left")
        return _col(k.with_columns(pl.col("k").cast(pl.Int64)), "k"), names, "log"
    from sklearn.cluster import KMeans

    n = min(opt.clusters, len(y))
    labels = KMeans(n, n_init=4, random_state=opt.seed).fit_predict(y.numpy())
    return torch.from_numpy(labels.astype("int64")), [f"cluster-{c}" for c in range(n)], "kmeans"


def _user_clusters(pairs: pl.DataFrame, category: torch.Tensor, n_users: int) -> torch.Tensor:
    """[U] each user's most interacted category (the smallest index among ties)."""
    counts = torch.zeros(n_users, int(category.max()) + 1)
    u = _col(pairs, "user")
    counts.index_put_((u, category[_col(pairs, "item")]), torch.ones(len(u)), accumulate=True)
    return counts.argmax(1)


def _activity(log: InteractionLog, kind: str) -> torch.Tensor:
    """[U] how often each user comes back: interactions, or active days."""
    f = log.frame
    if kind == "days":
        per_user = f.group_by("user").agg((pl.col("timestamp") // 86_400).n_unique().alias("n"))
    else:
        per_user = f.group_by("user").agg(pl.len().alias("n"))
    out = torch.zeros(log.n_users)
    out[_col(per_user, "user")] = _col(per_user, "n").float()
    return out


# -- the held-out ranking check ------------------------------------------------------------------


def split_holdout(log: InteractionLog, share: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(earlier, later) clicked pairs: each user's latest ``share`` of their clicked pairs (at least
    one kept for training), by timestamp, or in an order drawn from ``seed`` without timestamps."""
    pairs = log.frame.filter("click").unique(["user", "item"], keep="first", maintain_order=True)
    if log.has_timestamps:
        order = pl.col("timestamp")
    else:
        g = generator(seed, SETUP_ROUND, "world-holdout")
        order = pl.Series(torch.rand(pairs.height, generator=g, dtype=torch.float64).numpy())
    pairs = pairs.with_columns(order.alias("_o")).sort("user", "_o", "item")
    n = pl.len().over("user")
    pos = pl.int_range(pl.len()).over("user")
    later = pos >= (n - (n * share).floor().cast(pl.Int64).clip(0, n - 1))
    pairs = pairs.with_columns(later.alias("_later"))
    return pairs.filter(~pl.col("_later")).drop("_o", "_later"), pairs.filter("_later").drop("_o", "_later")


def heldout_ranking(log: InteractionLog, opt: FitOptions) -> dict[str, Any]:
    """Recall@10 and AUC of each user's held-out items among the items not in their training
    pairs, ranked by the relevance fitted on the earlier pairs and by training popularity (means
    over the users with a held-out item)."""
    train, test = split_holdout(log, opt.holdout, opt.seed)
    n_users, n_items = log.n_users, log.n_items
    seen = torch.zeros(n_users, n_items, dtype=torch.bool)
    seen[_col(train, "user"), _col(train, "item")] = True
    held = torch.zeros(n_users, n_items, dtype=torch.bool)
    held[_col(test, "user"), _col(test, "item")] = True
    fit = _fit_click(seen, opt)
    with torch.no_grad():
        fitted = fit["a"] * (fit["x"] @ fit["y"].T) + fit["pop"]  # c_u does not change a user's order
    popularity = seen.sum(0).float().expand(n_users, n_items)
    return {
        "users": int(held.any(1).sum()),
        "held_out_pairs": int(held.sum()),
        "fitted": _ranking(fitted, seen, held),
        "popularity": _ranking(popularity, seen, held),
    }


def _ranking(scores: torch.Tensor, seen: torch.Tensor, held: torch.Tensor, k: int = 10) -> dict[str, float]:
    """Mean over users with held-out items of recall@k and AUC (ties averaged) among unseen items."""
    from scipy.stats import rankdata

    users = held.any(1)
    s, seen, held = scores[users].double(), seen[users], held[users]
    s = s.masked_fill(seen, -math.inf)
    top = s.topk(k, dim=1).indices
    recall = held.gather(1, top).sum(1) / held.sum(1).clamp(max=k)
    ranks = torch.from_numpy(rankdata(s.numpy(), axis=1, method="average"))  # 1 = lowest; seen ones first
    n_pos = held.sum(1).double()
    n_neg = (~seen & ~held).sum(1).double()
    rank_sum = (ranks - seen.sum(1, keepdim=True)).masked_fill(~held, 0).sum(1)  # ranks among the unseen
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return {f"recall@{k}": float(recall.mean()), "auc": float(auc.mean())}


# -- the world folder ----------------------------------------------------------------------------


def save_world(fitted: FittedWorld, out: str | Path) -> Path:
    """Write ``world.pt``, ``users.parquet``, ``items.parquet`` and ``card.json`` into the new
    folder ``out``: all of them or none (written beside it, then renamed). Refuses one that exists."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        torch.save({k: fitted.tensors[k].contiguous() for k in TENSORS}, tmp / "world.pt")
        pl.DataFrame({"user_id": fitted.user_ids.cast(pl.String)}).write_parquet(tmp / "users.parquet")
        pl.DataFrame({"item_id": fitted.item_ids.cast(pl.String)}).write_parquet(tmp / "items.parquet")
        (tmp / "card.json").write_text(json.dumps(fitted.card, indent=2, sort_keys=True) + "\n")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_card(source: str | Path) -> dict[str, Any]:
    """A world folder's card (ValueError, one line, when the folder is not a fitted world)."""
    path = Path(source) / "card.json"
    if not path.is_file() or not (Path(source) / "world.pt").is_file():
        raise ValueError(
            f"world.source {str(source)!r} is not a fitted world (no card.json and world.pt): "
            "make one with `recsim world fit` (`make data` makes the movielens scenario's)"
        )
    card = json.loads(path.read_text())
    if card.get("format") != FORMAT:
        raise ValueError(f"world.source {str(source)!r}: card format {card.get('format')}, expected {FORMAT}")
    return card


def config_fields(card: dict[str, Any]) -> dict[str, Any]:
    """The ``world`` config fields a fitted world fixes (recorded in every run's config). A click
    log without ratings has no satisfaction fit: sat(u, i) = sigmoid(a <x_u, y_i> + b), the
    click relevance without the popularity offset."""
    sat = card["satisfaction_logit"]
    return {
        "n_users": card["n_users"],
        "n_items": card["n_items"],
        "dim": card["options"]["dim"],
        "n_clusters": len(card["categories"]),
        "affinity_scale": card["affinity_scale"],
        "base_logit": card["base_logit"],
        "satisfaction_logit": sat if sat is not None else card["base_logit"],
    }


def world_fields(config: SimConfig) -> dict[str, Any]:
    """The :class:`recsim.recsys.world.World` fields of ``config.world.source``'s fitted world, on
    the config's device (devices are drawn from ``world.devices`` as in a drawn world: the logs
    have none)."""
    w = config.world
    card = read_card(w.source)
    t = torch.load(Path(w.source) / "world.pt", weights_only=True)
    g = generator(config.seed, SETUP_ROUND, "world")
    names = tuple(w.devices)
    shares = torch.tensor([w.devices[n] for n in names], dtype=torch.float64)
    device = torch.multinomial(shares, card["n_users"], replacement=True, generator=g)
    dev = torch.device(config.device)
    sat_scale = card["satisfaction_scale"]
    return dict(
        user_factors=t["user_factors"].to(dev),
        user_cluster=t["user_cluster"].to(dev),
        user_device=device.to(dev),
        item_factors=t["item_factors"].to(dev),
        item_sat_factors=t["item_sat_factors"].to(dev),
        item_popularity=t["item_popularity"].to(dev),
        item_category=t["item_category"].to(dev),
        item_birth=torch.zeros(card["n_items"], dtype=torch.long, device=dev),
        device_names=names,
        affinity_scale=w.affinity_scale,
        base_logit=w.base_logit,
        satisfaction_logit=w.satisfaction_logit,
        drift_rate=w.drift_rate,
        satisfaction_scale=sat_scale if sat_scale is not None else w.affinity_scale,
        user_activity=t["user_activity"].to(dev),
    )
