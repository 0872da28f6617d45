"""Worlds fitted to interaction logs: reading logs, recovering a planted world, the world folder,
``world.source`` in configs, activity-weighted users, the fit report and ``recsim world fit``."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsim.config import ConfigError, validate
from recsim.recsys.datasets import LogError, _indexed, movielens_wheel, read_log
from recsim.recsys.world import World
from recsim.recsys.worldfit import FitOptions, fit_world, save_world, split_holdout

FAST = FitOptions(dim=4, epochs=60, holdout=0.0)


def _planted(seed: int, n_users: int = 800, n_items: int = 150, exposure: tuple[float, float] = (1.0, 0.25)):
    """A drawn world and a log sampled from it: the first half of the users see each item with
    probability ``exposure[0]``, the rest with ``exposure[1]``, each seen pair clicked with its
    true relevance and rated 5 (satisfied, with its true satisfaction) or 2."""
    cfg = validate(
        {
            "seed": seed,
            "world": {"n_users": n_users, "n_items": n_items, "dim": 8},
            "metrics": {"panel_users": 16},
        }
    )
    world = World.create(cfg)
    g = torch.Generator().manual_seed(seed + 1000)
    users, items = torch.arange(n_users), torch.arange(n_items).expand(n_users, -1)
    rel, sat = world.relevance(users, items), world.satisfaction(users, items)
    seen = torch.where(users[:, None] < n_users // 2, *exposure)
    click = torch.rand(rel.shape, generator=g) < seen * rel
    happy = torch.rand(rel.shape, generator=g) < sat
    u, i = click.nonzero(as_tuple=True)
    frame = pl.DataFrame(
        {
            "user": u.numpy().astype(str),
            "item": i.numpy().astype(str),
            "rating": torch.where(happy[u, i], 5.0, 2.0).numpy(),
            "click": None,
            "timestamp": torch.randint(0, 10**6, (len(u),), generator=g).numpy(),
        },
        schema_overrides={"click": pl.Float64},
    )
    return rel, sat, _indexed(frame, None, "planted", "planted")


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def _tiny_log(tmp_path, n_users: int = 100, n_items: int = 200):
    """A CSV log whose first 50 users have 10x the interactions of the others."""
    g = torch.Generator().manual_seed(7)
    rows = []
    for heavy, per_user in ((True, 40), (False, 4)):
        users = torch.arange(50) + (0 if heavy else 50)
        picks = torch.rand(50, n_items, generator=g).argsort(1)[:, :per_user]
        rows.append(
            pl.DataFrame({"uid": users.repeat_interleave(per_user).numpy(), "iid": picks.flatten().numpy()})
        )
    frame = pl.concat(rows).with_columns(
        (pl.col("iid") % 5 + 1).cast(pl.Float64).alias("stars"), (pl.col("iid") % 3).cast(str).alias("genre")
    )
    path = tmp_path / "log.csv"
    frame.write_csv(path)
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fit_recovers_a_planted_world(seed):
    """Fitted relevance and satisfaction follow the truth, heavy users are not made more relevant
    (their 4x volume is activity), and the held-out ranking beats popularity. Over seeds 0-2 the
    correlations were 0.74-0.80 and 0.47-0.59, the heavy / light relevance ratio 1.02-1.07 and
    the AUC margin 0.03-0.09; the bounds leave room for another machine's float rounding."""
    rel, sat, log = _planted(seed)
    fitted = fit_world(log, FitOptions(dim=8, seed=seed))
    t, card = fitted.tensors, fitted.card
    uid = torch.from_numpy(log.user_ids.cast(pl.Int64).to_numpy())
    iid = torch.from_numpy(log.item_ids.cast(pl.Int64).to_numpy())
    true_rel, true_sat = rel[uid][:, iid], sat[uid][:, iid]
    affinity = t["user_factors"] @ t["item_factors"].T
    fit_rel = torch.sigmoid(card["affinity_scale"] * affinity + t["item_popularity"] + card["base_logit"])
    sat_affinity = t["user_factors"] @ t["item_sat_factors"].T
    fit_sat = torch.sigmoid(card["satisfaction_scale"] * sat_affinity + card["satisfaction_logit"])
    assert _corr(fit_rel.logit(), true_rel.logit()) > 0.65
    assert _corr(fit_sat.logit(), true_sat.logit()) > 0.35
    heavy = uid < 400
    assert 0.9 < float(fit_rel[heavy].mean() / fit_rel[~heavy].mean()) < 1.15
    assert abs(float(fit_rel.mean()) - card["density"]) < 1e-3  # calibrated to the log's density
    assert float(t["user_activity"][heavy].mean() / t["user_activity"][~heavy].mean()) > 3
    held = card["heldout"]
    assert held["fitted"]["auc"] > held["popularity"]["auc"] + 0.01


@pytest.mark.parametrize("seed", [0, 1])
def test_early_stopping_keeps_sparse_users_from_being_overfit(seed):
    """200 users, the light half seeing a tenth of the items (about 4 clicks each): 300 unstopped
    epochs made the light users' fitted relevance 3x the heavy users' (ratio 0.28-0.37 on seeds
    0-3; the truth's is 1.00 +- 0.01); stopped at the held-out tenth's best epoch, 0.995-1.009."""
    rel, _, log = _planted(seed, n_users=200, exposure=(0.6, 0.1))
    fitted = fit_world(log, FitOptions(dim=8, seed=seed, holdout=0.0))
    t, card = fitted.tensors, fitted.card
    fit_rel = torch.sigmoid(
        card["affinity_scale"] * t["user_factors"] @ t["item_factors"].T
        + t["item_popularity"]
        + card["base_logit"]
    )
    heavy = torch.from_numpy(log.user_ids.cast(pl.Int64).to_numpy()) < 100
    assert 0.85 < float(fit_rel[heavy].mean() / fit_rel[~heavy].mean()) < 1.15
    assert card["click_epochs"] < 300


def test_click_rate_sets_the_mean_relevance_and_nothing_else():
    _, _, log = _planted(0, n_users=100, n_items=60)
    a = fit_world(log, FAST)
    b = fit_world(log, FitOptions(dim=4, epochs=60, holdout=0.0, click_rate=0.3))
    t = b.tensors
    rel = torch.sigmoid(
        b.card["affinity_scale"] * t["user_factors"] @ t["item_factors"].T
        + t["item_popularity"]
        + b.card["base_logit"]
    )
    assert abs(float(rel.mean()) - 0.3) < 1e-4
    assert b.card["base_logit"] > a.card["base_logit"]
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_holdout_keeps_each_users_earliest_and_splits_by_time():
    _, _, log = _planted(1, n_users=60, n_items=40)
    train, test = split_holdout(log, 0.2, seed=0)
    pairs = log.frame.unique(["user", "item"])
    assert train.height + test.height == pairs.height
    assert set(train["user"]) == set(pairs["user"])  # every user keeps at least one pair
    last_train = train.group_by("user").agg(pl.col("timestamp").max())
    first_test = test.group_by("user").agg(pl.col("timestamp").min())
    joined = last_train.join(first_test, on="user", suffix="_test")
    assert (joined["timestamp"] <= joined["timestamp_test"]).all()


# -- reading logs -------------------------------------------------------------------------------


def test_a_generic_csv_and_its_parquet_read_the_same(tmp_path):
    path = _tiny_log(tmp_path)
    cols = {"user": "uid", "item": "iid", "rating": "stars", "category": "genre"}
    a = read_log(path, columns=cols)
    pl.read_csv(path).write_parquet(tmp_path / "log.parquet")
    b = read_log(tmp_path / "log.parquet", columns=cols)
    assert a.frame.equals(b.frame) and a.user_ids.equals(b.user_ids)
    assert a.n_users == 100 and a.frame.height == 50 * 44 and a.frame["click"].all()
    assert a.user_ids.cast(pl.Int64).is_sorted()  # numeric ids in numeric order
    assert a.categories is not None and set(a.categories) == {"0", "1", "2"} and not a.has_timestamps


BAD_LOGS = [
    ("missing.csv", "generic", {}, "no such file"),
    ("log.csv", "other", {}, "preset must be one of generic, movielens"),
    ("log.csv", "generic", {}, "no user column 'user'"),
    ("log.csv", "generic", {"user": "uid", "item": "iid"}, "needs a rating or a click column"),
    ("log.csv", "generic", {"user": "uid", "item": "iid", "click": "stars"}, "click must be 0 or 1"),
    ("log.csv", "generic", {"person": "uid"}, "unknown names ['person']"),
    ("log.csv", "movielens", {}, "expected u.data's 4 tab-separated columns"),
]


@pytest.mark.parametrize(("name", "preset", "columns", "message"), BAD_LOGS)
def test_bad_logs_are_refused_in_one_line(tmp_path, name, preset, columns, message):
    _tiny_log(tmp_path)
    with pytest.raises(LogError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        read_log(tmp_path / name, preset, columns)
    assert "\n" not in str(info.value)


def test_movielens_100k_from_the_wheel():
    try:
        wheel = movielens_wheel()
    except LogError:
        pytest.skip("make data has not fetched MovieLens-100k")
    log = read_log(wheel, "movielens")
    assert (log.n_users, log.n_items, log.frame.height) == (943, 1682, 100_000)
    assert set(log.frame["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0} and log.has_timestamps
    assert log.categories is not None and {"Drama", "Comedy", "Action"} <= set(log.categories)
    assert log.frame.group_by("user").len()["len"].min() == 20  # MovieLens-100k: >= 20 ratings a user


def test_grouplens_files_read_as_the_wheel_does(tmp_path):
    """GroupLens' own layout (u.data, u.item with 19 genre flags), written from the wheel's
    RecBole files, gives the same interactions and categories."""
    import zipfile

    from recsim.recsys.datasets import GENRES, ML100K

    try:
        wheel = movielens_wheel()
    except LogError:
        pytest.skip("make data has not fetched MovieLens-100k")
    with zipfile.ZipFile(wheel) as z:
        inter, item = (
            pl.read_csv(z.read(f"{ML100K}.{ext}"), separator="\t", infer_schema_length=0, quote_char=None)
            for ext in ("inter", "item")
        )
    inter.write_csv(tmp_path / "u.data", separator="\t", include_header=False)
    genres = item["class:token_seq"].str.split(" ")
    flags = pl.DataFrame({g: genres.list.contains(g).cast(pl.Int8) for g in GENRES})
    meta = pl.concat(
        [item.select(pl.col("item_id:token"), *(pl.lit("x").alias(c) for c in "abcd")), flags],
        how="horizontal",
    )
    meta.write_csv(tmp_path / "u.item", separator="|", include_header=False)
    ours, theirs = read_log(tmp_path / "u.data", "movielens"), read_log(wheel, "movielens")
    assert ours.frame.equals(theirs.frame) and ours.item_ids.equals(theirs.item_ids)
    assert ours.categories is not None and ours.categories.equals(theirs.categories)


# -- the world folder, configs and the loop ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world")
    log = read_log(_tiny_log(tmp), columns={"user": "uid", "item": "iid", "rating": "stars"})
    fitted = fit_world(log, FitOptions(dim=4, epochs=60, clusters=5))
    return save_world(fitted, tmp / "w"), log, fitted


def test_a_saved_world_loads_as_the_config_world(tiny_world):
    path, log, fitted = tiny_world
    assert sorted(p.name for p in path.iterdir()) == [
        "card.json",
        "items.parquet",
        "users.parquet",
        "world.pt",
    ]
    with pytest.raises(FileExistsError):
        save_world(fitted, path)
    cfg = validate(
        {"world": {"source": str(path), "n_users": 5000, "n_items": 7}, "metrics": {"panel_users": 16}}
    )
    assert (cfg.world.n_users, cfg.world.n_items, cfg.world.dim, cfg.world.n_clusters) == (100, 200, 4, 5)
    assert cfg.world.affinity_scale == fitted.card["affinity_scale"]
    world = World.create(cfg)
    assert torch.equal(world.item_factors, fitted.tensors["item_factors"])
    assert torch.equal(world.user_activity, fitted.tensors["user_activity"])
    assert world.satisfaction_scale == fitted.card["satisfaction_scale"]
    users, items = torch.arange(3), torch.arange(5).expand(3, -1)
    t, c = fitted.tensors, fitted.card
    sat = torch.sigmoid(
        c["satisfaction_scale"] * t["user_factors"][:3] @ t["item_sat_factors"][:5].T
        + c["satisfaction_logit"]
    )
    assert torch.allclose(world.satisfaction(users, items), sat, atol=1e-6)
    assert fitted.card["category_source"] == "kmeans" and len(fitted.card["categories"]) == 5


@pytest.mark.parametrize(
    ("world", "message"),
    [
        ({"source": "/nonexistent/world"}, "is not a fitted world"),
        ({"new_items_per_round": 3}, "new_items_per_round must be 0 with world.source"),
    ],
)
def test_bad_sources_are_refused_in_one_line(tiny_world, world, message):
    data = {"source": str(tiny_world[0]), **world}
    with pytest.raises(ConfigError, match=message) as info:
        validate({"world": data, "metrics": {"panel_users": 16}})
    assert "\n" not in str(info.value)


def test_active_users_follow_the_fitted_activity(tiny_world, tmp_path):
    """Users 0-49 have 10x the interactions of users 50-99: drawing 20 of 100 a round in
    proportion (without replacement) picks a heavy user first with probability 10/11 and at
    least 30/34 at the 20th draw, so the heavy half holds about 90% of the slates; uniform
    draws would give 50% (binomial sd over 200 draws: 0.035)."""
    import recsim

    result = recsim.run(
        {"name": "t", "arms": {"pop": {"ranker": {"name": "popularity"}}}},
        overrides={
            "world.source": str(tiny_world[0]),
            "loop.rounds": 10,
            "loop.active_users": 20,
            "metrics.panel_users": 16,
            "policy.n_candidates": 50,
        },
        tracking=False,
        out=tmp_path / "run",
    )
    logs = result.logs().select("user", "round").unique().collect()
    assert logs.height == 10 * 20
    assert (logs["user"] < 50).mean() > 0.8


def test_the_fit_report_compares_the_log_and_the_simulation(tiny_world):
    from recsim.experiments.fitted import fit_report

    path, log, _ = tiny_world
    report = fit_report(path, log, rounds=3, active_share=0.3)
    table = report["table"]
    assert set(table) == {"log", "random", "popularity"}
    assert table["log"]["satisfied_share"] == pytest.approx(float((log.frame["rating"] >= 4).mean()))
    for arm in ("random", "popularity"):
        assert 0 <= table[arm]["ks_item_share"] <= 1 and 0 < table[arm]["ctr"] < 1
    assert table["popularity"]["item_gini"] > table["random"]["item_gini"]  # the loop concentrates
    assert {"report.md", "report.json", "report.png"} <= {p.name for p in path.iterdir()}
    assert json.loads((path / "report.json").read_text())["table"] == json.loads(json.dumps(table))


# -- the command ---------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recsim", "world", "fit", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv"], "no such file"),
        (["log.csv", "--preset", "x"], "preset must be one of"),
        (["log.csv", "--columns", "user"], "--columns takes ours=theirs pairs"),
        (
            ["log.csv", "--columns", "user=uid,item=iid,rating=stars", "--holdout", "1.5"],
            "holdout must be in [0, 1), got 1.5",
        ),
        (
            ["log.csv", "--columns", "user=uid,item=iid,rating=stars", "--activity", "weeks"],
            "activity must be interactions or days, got 'weeks'",
        ),
    ],
)
def test_world_fit_refuses_bad_input_with_status_2(tmp_path, args, message):
    _tiny_log(tmp_path)
    res = _cli(*[str(tmp_path / a) if a.endswith(".csv") else a for a in args], "--out", str(tmp_path / "w"))
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_world_fit_writes_a_world_that_runs(tmp_path):
    log = _tiny_log(tmp_path)
    out = tmp_path / "w"
    cols = "user=uid,item=iid,rating=stars,category=genre"
    res = _cli(
        str(log), "--out", str(out), "--columns", cols, "--dim", "4", "--epochs", "40", "--report-rounds", "2"
    )
    assert res.returncode == 0, res.stderr
    assert {"card.json", "world.pt", "report.md", "report.png"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "card.json").read_text())["categories"] == ["0", "1", "2"]
    again = _cli(str(log), "--out", str(out), "--columns", cols)
    assert again.returncode == 2 and "exists" in again.stderr


def test_the_movielens_fit_repeats_bit_for_bit():
    """100,000 rated pairs: enough for torch to split a gather's backward over threads, whose
    summation order then varies between runs; the dense fits do not."""
    try:
        wheel = movielens_wheel()
    except LogError:
        pytest.skip("make data has not fetched MovieLens-100k")
    log = read_log(wheel, "movielens")
    a, b = (fit_world(log, FitOptions(epochs=30, holdout=0.0)) for _ in range(2))
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert a.card == b.card


LOOP_ON_FITTED = [
    "metrics.panel_users=16",
    "loop.rounds=2",
    "loop.active_users=40",
    "policy.n_candidates=30",
    "policy.ivf_lists=8",
    "policy.ivf_probe=2",
    "policy.explore_candidates=10",
    "metrics.panel_items=40",
    "tracking.enabled=false",
]


@pytest.mark.parametrize("name", ["feedback-loop", "exploration", "chaney", "ope", "scale", "movielens"])
def test_recommender_scenarios_run_on_a_fitted_world(tiny_world, tmp_path, name):
    """Every arm on the fitted world's 100 users and 200 items (a growing catalogue, chaney's
    ``new_items_per_round``, is refused with a source: a fitted catalogue is fixed)."""
    from recsim.scenario import builtin_scenarios

    sc = builtin_scenarios()[name]
    extra = ["world.new_items_per_round=0"] if name == "chaney" else []
    configs = sc.resolve([f"world.source={tiny_world[0]}", *LOOP_ON_FITTED, *extra])
    assert all(c.world.n_users == 100 and c.world.n_items == 200 for c in configs.values())
    frame = sc.run(configs, tmp_path / name)
    assert set(frame["arm"]) == set(sc.arms) and frame["gold"].is_finite().all()


def test_a_click_log_without_ratings_fits_and_runs(tmp_path):
    """Impressions with 0/1 clicks: only clicked pairs are positives, satisfaction appeal is the
    click appeal (no ratings to fit), and the world runs."""
    g = torch.Generator().manual_seed(3)
    users = torch.randint(0, 60, (3000,), generator=g)
    items = torch.randint(0, 80, (3000,), generator=g)
    clicks = (torch.rand(3000, generator=g) < 0.2 + 0.6 * (items < 20)).int()
    pl.DataFrame({"user": users.numpy(), "item": items.numpy(), "click": clicks.numpy()}).write_parquet(
        tmp_path / "clicks.parquet"
    )
    log = read_log(tmp_path / "clicks.parquet")
    assert not log.has_ratings and log.frame["click"].dtype == pl.Boolean
    fitted = fit_world(log, FitOptions(dim=4, epochs=80, holdout=0.0))
    card, t = fitted.card, fitted.tensors
    assert card["satisfaction_scale"] is None and torch.equal(t["item_sat_factors"], t["item_factors"])
    assert card["n_pairs_clicked"] < log.frame.unique(["user", "item"]).height
    pop = t["item_popularity"]
    assert pop[:20].mean() > pop[20:].mean() + 0.5  # items 0-19 are clicked 4x as often
    cfg = validate(
        {"world": {"source": str(save_world(fitted, tmp_path / "w"))}, "metrics": {"panel_users": 16}}
    )
    assert cfg.world.satisfaction_logit == card["base_logit"]
    assert World.create(cfg).satisfaction_scale == card["affinity_scale"]


_CORRUPT = {  # a bad cell -> what the error says about it
    "abc": "'abc' is not a number",
    "NaN": "is not finite",
    "inf": "is not finite",
    "-inf": "is not finite",
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.integers(2, 30),
    at=st.integers(0, 29),
    column=st.sampled_from(["rating", "timestamp", "user", "item"]),
    bad=st.sampled_from(sorted(_CORRUPT) + [""]),
)
def test_any_bad_cell_of_a_log_is_named_by_its_line_and_column(tmp_path, rows, at, column, bad):
    at = at % rows
    lines = ["user,item,rating,timestamp"] + [f"{i},{100 + i},{1 + i % 5},{1000 + i}" for i in range(rows)]
    cells = lines[at + 1].split(",")
    cells[["user", "item", "rating", "timestamp"].index(column)] = bad
    lines[at + 1] = ",".join(cells)
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n")
    if bad == "" and column in ("rating", "timestamp"):  # a missing rating or time is allowed
        read_log(path)
        return
    if bad == "":
        message = f"is empty (every row needs a {column})"
    elif column in ("user", "item"):  # any text is an id
        read_log(path)
        return
    elif column == "timestamp":  # a non-finite number in it makes the column float: not an integer
        message = "is not an integer"
    else:
        message = _CORRUPT[bad]
    with pytest.raises(LogError) as info:
        read_log(path)
    text = str(info.value)
    assert f"line {at + 2}, column {column!r}" in text and message in text and "\n" not in text, text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "user,item,rating\n1,10,4\n",
            "1 user(s) x 1 item(s) is too small to fit: it needs at least 2 users",
        ),
        ("user,item,rating\n1,10,4\n2,11,abc\n", "line 3, column 'rating': 'abc' is not a number"),
        ("user,item,rating\n1,10,4\n2,11,NaN\n", "line 3, column 'rating': nan is not finite"),
        (
            "user,item,click\n" + "".join(f"{u},{i},1\n" for u in range(3) for i in range(20)),
            "every user-item pair",
        ),
    ],
)
def test_world_fit_refuses_logs_it_cannot_fit_with_status_2(tmp_path, text, message):
    (tmp_path / "log.csv").write_text(text)
    res = _cli(str(tmp_path / "log.csv"), "--out", str(tmp_path / "w"), "--no-report")
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "w").exists()
