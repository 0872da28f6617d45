"""A run's logs in the Open Bandit Pipeline's bandit-feedback layout: ``recsim export obp``.

One row per impression (OBP's "round"), in the order (round, user, position). Keys (OBP's own
first, then what only a simulator can add):

| key | shape | meaning |
|---|---|---|
| n_rounds | scalar | impressions (rows) |
| n_actions | scalar | items in the catalogue |
| action | [n] int64 | the item shown |
| position | [n] int64 | its slot, 0-based |
| reward | [n] int64 | click (0/1) |
| pscore | [n] float64 | pi_b(action at position \\| context): the logging policy's exact propensity |
| context | [n, V] float64 | the user's device, one-hot (the observable user feature) |
| action_context | [n_actions, G] float64 | each item's category, one-hot |
| slate_id | [n] int64 | the slate (round, user) of the row, 0.. |
| pscore_item_position | [n] float64 | = pscore (OBP's slate key for the item-position marginal) |
| user, round | [n] int64 | who and when |
| exploration | [n] bool | the slate was a random one |
| policy_id | [n] int64 | index into ``policies``: the logging policy of the row's round |
| policies | [R] str | each round's logging policy, described |
| examination | [n] float64 | true theta(position, device) |
| expected_reward_action | [n] float64 | true P(click) of the row's action at its position |
| candidates | [n, C] int64 | the slate's candidates (runs with ``policy.log_candidates``) |
| expected_reward | [n, C] float64 | true P(click) had each candidate been shown at the row's position |

``expected_reward*`` exist for the position-separable click models (pbm, logit), where a row's
click depends on its own item and position only. The ``.npz`` and its schema card
(``<name>.schema.json``: the keys, shapes, the arm's config and where it came from) are written
to temporary names and renamed, so both exist or neither does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsim.core.config import ConfigError, load_yaml

__all__ = ["export_obp", "load_obp"]

KEYS = {
    "n_rounds": "impressions (rows)",
    "n_actions": "items in the catalogue",
    "action": "the item shown",
    "position": "its slot, 0-based",
    "reward": "click (0/1)",
    "pscore": "pi_b(action at position | context), exact",
    "context": "the user's device, one-hot",
    "action_context": "each item's category, one-hot",
    "slate_id": "the slate (round, user) of the row",
    "pscore_item_position": "= pscore (item-position marginal of the slate policy)",
    "user": "user id",
    "round": "round of the loop",
    "exploration": "the slate was a random one",
    "policy_id": "index into policies: the row's logging policy",
    "policies": "each round's logging policy",
    "examination": "true theta(position, device)",
    "expected_reward_action": "true P(click) of the row's action at its position",
    "candidates": "the slate's candidates",
    "expected_reward": "true P(click) had each candidate been shown at the row's position",
}


def _policy(config: Any, round_: int) -> str:
    p, rc = config.policy, config.ranker
    if round_ < p.startup_rounds:
        return f"round {round_}: uniformly random slates (start-up)"
    start = max(0, round_ - rc.window) if rc.window else 0
    return (
        f"round {round_}: {rc.name} fitted on rounds {start}..{round_ - 1}, epsilon {p.epsilon}, "
        f"exploration share {p.exploration_share}"
    )


def _rows(run: Path, arm: str, seed: int | None, round_: int | None) -> tuple[Any, pl.DataFrame, int]:
    """The arm's config, its log rows for (seed, round) and the seed, or ConfigError."""
    from recsim.config import validate
    from recsim.io.logs import scan_logs

    path = run / "config.yaml"
    if not path.is_file() or not (run / "logs").is_dir():
        raise ConfigError(f"{run} is not a run folder with logs (no config.yaml and logs/)")
    data = load_yaml(path.read_text())
    arms = data.get("arms", {})
    if arm not in arms:
        raise ConfigError(f"--arm must be one of {', '.join(arms)}, got {arm!r}")
    config = validate(arms[arm], arm)
    if config.domain != "recsys":
        raise ConfigError(f"arm '{arm}' is an {config.domain} arm; only recommender logs export to OBP")
    seeds = data.get("seeds") or [config.seed]
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise ConfigError(f"--seed must be one of {seeds}, got {seed}")
    logs = scan_logs(run / "logs").filter((pl.col("arm") == arm) & (pl.col("seed") == seed))
    if round_ is not None:
        logs = logs.filter(pl.col("round") == round_)
    frame = logs.collect().sort("round", "user", "position")
    if frame.height == 0:
        where = f"round {round_}" if round_ is not None else "any round"
        raise ConfigError(f"no log rows for arm '{arm}', seed {seed}, {where}")
    return config, frame, seed


def export_obp(
    run: str | Path, arm: str, out: str | Path, seed: int | None = None, round_: int | None = None
) -> dict[str, Any]:
    """Write ``out`` (.npz) and ``<out>.schema.json``; return the schema card. Raises ConfigError
    (one line) on a bad run, arm, seed or round, or an ``out`` that exists."""
    from recsim.recsys.ope import SEPARABLE, click_probability
    from recsim.recsys.world import World

    run, out = Path(run), Path(out)
    card_path = out.with_suffix(".schema.json")
    if out.suffix != ".npz":
        raise ConfigError(f"--out must end in .npz, got {out}")
    if out.exists() or card_path.exists():
        raise ConfigError(f"{out} or {card_path} exists; choose a new name")
    config, frame, seed = _rows(run, arm, seed, round_)
    world = World.create(config)
    devices = list(world.device_names)
    n_actions = world.n_items_total
    slate = frame.select(pl.struct("round", "user").rank("dense").cast(pl.Int64) - 1).to_series()
    device = frame["device"].replace_strict({d: i for i, d in enumerate(devices)}, return_dtype=pl.Int64)
    rounds = sorted(frame["round"].unique().to_list())
    category = world.item_category.cpu().numpy()
    arrays: dict[str, Any] = {
        "n_rounds": np.int64(frame.height),
        "n_actions": np.int64(n_actions),
        "action": frame["item"].to_numpy().astype(np.int64),
        "position": frame["position"].to_numpy().astype(np.int64) - 1,
        "reward": frame["click"].to_numpy().astype(np.int64),
        "pscore": frame["propensity"].to_numpy().astype(np.float64),
        "context": np.eye(len(devices))[device.to_numpy()],
        "action_context": np.eye(int(category.max()) + 1)[category],
        "slate_id": slate.to_numpy(),
        "user": frame["user"].to_numpy().astype(np.int64),
        "round": frame["round"].to_numpy().astype(np.int64),
        "exploration": frame["exploration"].to_numpy(),
        "policy_id": np.searchsorted(rounds, frame["round"].to_numpy()).astype(np.int64),
        "policies": np.array([_policy(config, r) for r in rounds]),
        "examination": frame["examination"].to_numpy().astype(np.float64),
    }
    arrays["pscore_item_position"] = arrays["pscore"]
    model = config.behavior.model
    notes = []
    if model in SEPARABLE:
        rel = frame["true_relevance"].to_numpy().astype(np.float64)
        arrays["expected_reward_action"] = click_probability(rel, arrays["examination"], model)
    else:
        notes.append(f"no expected_reward: the {model} click model is not position-separable")
    if "candidates" in frame.columns:
        per_slate = frame.select(pl.col("candidates", "candidate_relevance").forward_fill())
        arrays["candidates"] = np.stack(per_slate["candidates"].to_numpy()).astype(np.int64)
        if model in SEPARABLE:
            cand_rel = np.stack(per_slate["candidate_relevance"].to_numpy()).astype(np.float64)
            arrays["expected_reward"] = click_probability(cand_rel, arrays["examination"][:, None], model)
    else:
        notes.append("no candidates or expected_reward: the run did not set policy.log_candidates=true")
    card = {
        "format": "open-bandit-pipeline bandit_feedback (+ simulator truth)",
        "run": str(run.resolve()),
        "arm": arm,
        "seed": seed,
        "rounds": rounds,
        "click_model": model,
        "devices": devices,
        "keys": {
            k: {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype), "meaning": KEYS[k]}
            for k, v in arrays.items()
        },
        "notes": notes,
        "config": config.model_dump(mode="json"),
    }
    _write_both(out, card_path, arrays, card)
    return card


def _write_both(out: Path, card_path: Path, arrays: dict[str, Any], card: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_npz, tmp_card = out.with_name(f".{out.name}.tmp.npz"), card_path.with_name(f".{card_path.name}.tmp")
    try:
        np.savez_compressed(tmp_npz, **arrays)
        tmp_card.write_text(json.dumps(card, indent=2) + "\n")
        os.replace(tmp_npz, out)
        os.replace(tmp_card, card_path)
    finally:
        for tmp in (tmp_npz, tmp_card):
            tmp.unlink(missing_ok=True)


def load_obp(path: str | Path) -> dict[str, Any]:
    """An exported file as OBP's ``bandit_feedback`` dict (scalars as ints)."""
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    for key in ("n_rounds", "n_actions"):
        out[key] = int(out[key])
    return out
