"""Interaction logs read from disk, for worlds fitted to data (:mod:`recsim.recsys.worldfit`).

An :class:`InteractionLog` is one row per (user, item) interaction with the users and items
re-indexed ``0..U-1`` and ``0..N-1`` (in order of their original ids), a ``rating`` or a
``click``, an optional ``timestamp`` (seconds), and each item's category where the data has one.

Layouts read:

* ``generic``: a Parquet or CSV file with columns ``user``, ``item``, and ``rating`` and / or
  ``click`` (0/1), optional ``timestamp`` and ``category`` (names can be mapped, see
  :func:`read_log`).
* ``movielens``: MovieLens-100k as the ``recbole==1.2.1`` wheel ships it
  (``recbole/dataset_example/ml-100k/ml-100k.inter`` and ``.item``, read from the wheel with
  :mod:`zipfile`), a RecBole atomic ``.inter`` file (its ``.item`` beside it), or GroupLens'
  own ``u.data`` (tab-separated user, item, rating, timestamp; ``u.item`` beside it). An item's
  category is its first listed genre.

MovieLens may not be redistributed, so the data is never part of the repository: ``make data``
fetches the wheel from the package index into ``data/`` (:func:`movielens_wheel` finds it).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

__all__ = ["PRESETS", "InteractionLog", "LogError", "movielens_wheel", "read_log"]

PRESETS = ("generic", "movielens")
ML100K = "recbole/dataset_example/ml-100k/ml-100k"
WHEEL = "recbole-1.2.1-py3-none-any.whl"
GENRES = (  # u.item's 19 genre flags, in file order
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy "
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
).split()


class LogError(ValueError):
    """An interaction log that cannot be read (one line, naming the file and the problem)."""


@dataclass(frozen=True)
class InteractionLog:
    """A log re-indexed for fitting.

    Attributes:
        frame: one row per interaction: ``user`` and ``item`` (int64 indexes), ``rating``
            (float64, null without ratings), ``click`` (bool), ``timestamp`` (int64 seconds or null).
        user_ids: [U] the original user ids, in index order.
        item_ids: [N] the original item ids, in index order.
        categories: [N] each item's category name, or None when the log has none.
        name: what was read (file name, and the member for a wheel).
        sha256: hash of the bytes read, for the world's card.
    """

    frame: pl.DataFrame
    user_ids: pl.Series
    item_ids: pl.Series
    categories: pl.Series | None
    name: str
    sha256: str

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def has_ratings(self) -> bool:
        return self.frame["rating"].null_count() < self.frame.height

    @property
    def has_timestamps(self) -> bool:
        return self.frame["timestamp"].null_count() == 0


def data_dir() -> Path:
    """Where ``make data`` puts the fetched files: ``$RECSIM_DATA`` or the repository's ``data/``."""
    env = os.environ.get("RECSIM_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def movielens_wheel() -> Path:
    """The ``recbole==1.2.1`` wheel that ``make data`` fetched (LogError when it is absent)."""
    path = data_dir() / WHEEL
    if not path.is_file():
        raise LogError(f"{path} not found: run `make data` (fetches MovieLens-100k at set-up)")
    return path


def read_log(
    path: str | Path, preset: str = "generic", columns: dict[str, str] | None = None
) -> InteractionLog:
    """Read an interaction log; ``columns`` maps our names (user, item, rating, click, timestamp,
    category) to the file's for the generic layout. Raises :class:`LogError` (one line)."""
    path = Path(path)
    if preset not in PRESETS:
        raise LogError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if not path.is_file():
        raise LogError(f"{path}: no such file")
    if preset == "movielens":
        frame, items, digest, name = _movielens(path)
    else:
        frame, items, digest, name = _generic(path, columns or {})
    return _indexed(frame, items, digest, name)


# -- layouts ------------------------------------------------------------------------------------


def _generic(path: Path, columns: dict[str, str]) -> tuple[pl.DataFrame, pl.DataFrame | None, str, str]:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        raw = (
            pl.read_parquet(io.BytesIO(data))
            if parquet
            else pl.read_csv(io.BytesIO(data), infer_schema_length=10_000)
        )
    except Exception as exc:  # noqa: BLE001  polars raises several kinds; one line names the file
        raise LogError(f"{path}: cannot read as {'Parquet' if parquet else 'CSV'}: {exc}") from None
    unknown = set(columns) - {"user", "item", "rating", "click", "timestamp", "category"}
    if unknown:
        raise LogError(
            f"columns: unknown names {sorted(unknown)} (use user, item, rating, click, timestamp, category)"
        )
    name_of = {k: columns.get(k, k) for k in ("user", "item", "rating", "click", "timestamp", "category")}
    for need in ("user", "item"):
        if name_of[need] not in raw.columns:
            raise LogError(f"{path}: no {need} column {name_of[need]!r} (columns: {', '.join(raw.columns)})")
    if name_of["rating"] not in raw.columns and name_of["click"] not in raw.columns:
        raise LogError(f"{path}: needs a rating or a click column (columns: {', '.join(raw.columns)})")
    where = (lambda i: f"line {i + 2}") if not parquet else (lambda i: f"row {i + 1}")  # noqa: E731
    _check_values(raw, name_of, path, where)
    pick = lambda key, dtype: (  # noqa: E731
        pl.col(name_of[key]).cast(dtype) if name_of[key] in raw.columns else pl.lit(None, dtype)
    )
    frame = raw.select(
        pl.col(name_of["user"]).cast(pl.String).alias("user"),
        pl.col(name_of["item"]).cast(pl.String).alias("item"),
        pick("rating", pl.Float64).alias("rating"),
        pick("click", pl.Float64).alias("click"),
        pick("timestamp", pl.Int64).alias("timestamp"),
    )
    items = None
    if name_of["category"] in raw.columns:
        items = raw.select(
            pl.col(name_of["item"]).cast(pl.String).alias("item"),
            pl.col(name_of["category"]).cast(pl.String).alias("category"),
        ).unique("item", keep="first")
    return frame, items, digest, path.name


def _check_values(
    raw: pl.DataFrame, name_of: dict[str, str], path: Path, where: Callable[[int], str]
) -> None:
    """Every row has a user and an item; rating, click and timestamp are numbers (finite, and a
    whole number for the timestamp). A LogError names the first bad row, its column and value."""

    def first(bad: pl.Series, column: str, why: str) -> None:
        if bad.any():
            i = int(bad.arg_true()[0])
            value = raw[column][i]
            what = f"{value!r} {why}" if value is not None and str(value).strip() else why
            raise LogError(f"{path}: {where(i)}, column {column!r}: {what}")

    for key in ("user", "item"):
        column = name_of[key]
        values = raw[column]
        empty = values.is_null()
        if values.dtype == pl.String:
            empty = empty | (values.str.strip_chars() == "")
        first(empty, column, f"is empty (every row needs a {key})")
    for key, dtype in (("rating", pl.Float64), ("click", pl.Float64), ("timestamp", pl.Int64)):
        column = name_of[key]
        if column not in raw.columns:
            continue
        values = raw[column]
        cast = values.cast(dtype, strict=False)
        first(
            values.is_not_null() & cast.is_null(),
            column,
            f"is not {'an integer' if dtype == pl.Int64 else 'a number'}",
        )
        if dtype == pl.Float64:
            first(cast.is_not_null() & ~cast.is_finite(), column, "is not finite")


def _movielens(path: Path) -> tuple[pl.DataFrame, pl.DataFrame | None, str, str]:
    if path.suffix == ".whl":
        try:
            with zipfile.ZipFile(path) as z:
                inter, item = z.read(f"{ML100K}.inter"), z.read(f"{ML100K}.item")
        except (zipfile.BadZipFile, KeyError) as exc:
            raise LogError(f"{path}: not a wheel with MovieLens-100k ({ML100K}.inter): {exc}") from None
        return (*_recbole(inter, item), f"{path.name}:{ML100K}.inter")
    if path.suffix == ".inter":
        item_path = path.with_suffix(".item")
        return (
            *_recbole(path.read_bytes(), item_path.read_bytes() if item_path.is_file() else None),
            path.name,
        )
    return _grouplens(path)


def _recbole(inter: bytes, item: bytes | None) -> tuple[pl.DataFrame, pl.DataFrame | None, str]:
    """RecBole atomic files: tab-separated, typed headers (``user_id:token``)."""
    raw = pl.read_csv(io.BytesIO(inter), separator="\t", infer_schema_length=0, quote_char=None)
    raw = raw.rename({c: c.split(":")[0] for c in raw.columns})
    if not {"user_id", "item_id", "rating"} <= set(raw.columns):
        raise LogError(f"RecBole .inter needs user_id, item_id and rating columns, got {raw.columns}")
    frame = raw.select(
        pl.col("user_id").alias("user"),
        pl.col("item_id").alias("item"),
        pl.col("rating").cast(pl.Float64),
        pl.lit(None, pl.Float64).alias("click"),
        pl.col("timestamp").cast(pl.Float64).cast(pl.Int64)
        if "timestamp" in raw.columns
        else pl.lit(None, pl.Int64),
    )
    items = None
    if item is not None:
        meta = pl.read_csv(io.BytesIO(item), separator="\t", infer_schema_length=0, quote_char=None)
        meta = meta.rename({c: c.split(":")[0] for c in meta.columns})
        if "class" in meta.columns:
            first = pl.col("class").str.split(" ").list.first()
            items = meta.select(pl.col("item_id").alias("item"), first.fill_null("unknown").alias("category"))
    digest = hashlib.sha256(inter + (item or b"")).hexdigest()
    return frame, items, digest


def _grouplens(path: Path) -> tuple[pl.DataFrame, pl.DataFrame | None, str, str]:
    """GroupLens' ``u.data`` (user, item, rating, timestamp; tab-separated, no header) and ``u.item``."""
    data = path.read_bytes()
    raw = pl.read_csv(io.BytesIO(data), separator="\t", has_header=False, infer_schema_length=0)
    if raw.width != 4:
        raise LogError(f"{path}: expected u.data's 4 tab-separated columns, got {raw.width}")
    raw.columns = ["u", "i", "r", "t"]
    frame = raw.select(
        pl.col("u").cast(pl.String).alias("user"),
        pl.col("i").cast(pl.String).alias("item"),
        pl.col("r").cast(pl.Float64).alias("rating"),
        pl.lit(None, pl.Float64).alias("click"),
        pl.col("t").cast(pl.Int64).alias("timestamp"),
    )
    items, extra = None, b""
    meta_path = path.with_name("u.item")
    if meta_path.is_file():
        extra = meta_path.read_bytes()
        meta = pl.read_csv(
            io.BytesIO(extra), separator="|", has_header=False, encoding="latin1", quote_char=None
        )
        flags = meta.select(meta.columns[-len(GENRES) :]).to_numpy()
        first = pl.Series(GENRES).gather(flags.argmax(1))  # the first flagged genre ("unknown" if none)
        items = pl.DataFrame({"item": meta[meta.columns[0]].cast(pl.String), "category": first})
    return frame, items, hashlib.sha256(data + extra).hexdigest(), path.name


def _indexed(frame: pl.DataFrame, items: pl.DataFrame | None, digest: str, name: str) -> InteractionLog:
    """Drop rows without user or item, re-index both in order of their ids, derive ``click``."""
    frame = frame.drop_nulls(["user", "item"])
    if frame.height == 0:
        raise LogError(f"{name}: no interactions")
    if frame["click"].null_count() == frame.height:  # a rating log: every rated pair was consumed
        frame = frame.with_columns(pl.lit(True).alias("click"))
    else:
        bad = frame.filter(~pl.col("click").is_in([0.0, 1.0]) | pl.col("click").is_null()).height
        if bad:
            raise LogError(f"{name}: click must be 0 or 1 on every row ({bad} rows are not)")
        frame = frame.with_columns(pl.col("click") == 1.0)

    def ordered(col: str) -> pl.Series:
        ids = frame[col].unique()
        numeric = ids.str.to_integer(strict=False)
        return ids.sort() if numeric.null_count() else ids.gather(numeric.arg_sort())

    user_ids, item_ids = ordered("user"), ordered("item")
    users = pl.DataFrame({"user": user_ids, "u": pl.int_range(0, len(user_ids), eager=True, dtype=pl.Int64)})
    index = pl.DataFrame({"item": item_ids, "i": pl.int_range(0, len(item_ids), eager=True, dtype=pl.Int64)})
    out = (
        frame.join(users, on="user")
        .join(index, on="item")
        .select(pl.col("u").alias("user"), pl.col("i").alias("item"), "rating", "click", "timestamp")
        .sort("user", "item", "timestamp")
    )
    categories = None
    if items is not None:
        categories = index.join(items, on="item", how="left").sort("i")["category"].fill_null("unknown")
    return InteractionLog(out, user_ids, item_ids, categories, name, digest)
