"""H&M Personalized Fashion (Kaggle) sample -> the canonical tables.

Inputs (see /work/shared/data/README.md, `real/hm/`): `transactions.csv`, `articles.csv` (the purchased articles,
10-digit string ids) and `articles_full_catalog.parquet` (105,542 articles, numeric ids).

The loader maps faithfully and drops nothing: questionable rows (duplicates, unparseable dates, articles missing
from the catalog) are passed through for the ingest validator to quarantine; `LoadReport` counts them.

Mapping choices
- events: every transaction row -> one `purchase` (user_id=customer_id, item_id=article_id zero-padded to 10
  digits; query/search_id null). `price` and `sales_channel_id` are not in the canonical schema and are dropped.
- timestamps: H&M has day resolution, and the day is kept (midnight UTC) with no artificial offsets: a user's
  day is one moment (`feature_repo.moments`). The order of the rows inside a day is not known, so nothing bought
  that day counts as history of a target bought that day. Within a day, rows keep file order (it picks the target:
  the last purchase of the user's last moment).
- a repeated row of the same (customer, article, day) is one purchase of several units: it is passed through, and
  ingest quarantines it as `repeat_in_moment` (docs/data.md: 3,146 such rows, 2,894 of them exact duplicates).
- session_id: one session per (user, UTC day), numbered 1.. globally in chronological order of the session's
  first event (ties by user_id), like the synthetic sets' global session ids.
- events are returned sorted by (user_id, timestamp).
- items: catalog="full" -> the whole catalog parquet (plus any `articles.csv` article missing from it);
  catalog="purchased" -> `articles.csv` restricted to the purchased articles.
- category = product_group_name, H&M's own values (e.g. "Garment Upper body"; not the four `CATEGORIES` of the
  synthetic sets), subcategory = product_type_name, brand = "H&M", color = colour_group_name.
- title = "{prod_name} {product_type_name} - {colour_group_name}"; the type is left out when prod_name already
  contains it (e.g. "Basic Sweater", not "Basic Sweater Sweater"). detail_desc is not used: titles stay short.
- family_id = product_code, or article_id[:7] (the product code prefix) when there is no product_code column.
- gender: Baby/Children or a "Kids ..." section -> kids; Menswear or a "Men ..."/"Denim Men" section -> men;
  Ladieswear or a "Ladies ..."/"Womens ..." section -> women; anything else (most of Divided) -> unisex.
- size, material, season, occasion = "" (not in the data).
- price = median transaction price of the article in this sample (Kaggle prices are normalised, about 0.03);
  0.0 for never-bought articles.
- created_at = the dataset start 2018-09-20 for every article: H&M publishes no release dates, and a date derived
  from transactions (the first purchase day) would come from after earlier targets' times, so a candidate filter
  on it would remove items that were on sale then and keep the one the target's own purchase dated. Every
  article therefore counts as on sale from the start.
- search_results: empty (no search data), with canonical dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from feature_repo.schema import SCHEMAS, CanonicalTables

HM_BRAND = "H&M"
HM_DATASET_START = pd.Timestamp("2018-09-20", tz="UTC")
RESOLUTION = "day"

# First match wins: (index_group_name values, section_name prefixes) -> gender.
_GENDER_RULES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("kids", ("Baby/Children",), ("Kids", "Baby", "Young", "Boys", "Girls")),
    ("men", ("Menswear",), ("Men ", "Mens ", "Denim Men")),
    ("women", ("Ladieswear",), ("Ladies", "Womens")),
)


@dataclass(frozen=True)
class LoadReport:
    """What a loader saw: input size, output size, and counts of rows the validator may want to look at."""

    source: str
    resolution: str  # the timestamps' resolution (`feature_repo.moments`): "day" for H&M and Amazon 2018
    n_input_rows: int
    n_events: int
    n_users: int
    n_items: int
    n_exact_duplicate_rows: int  # input rows identical to an earlier row in every column
    n_repeat_key_rows: int  # rows repeating an earlier (user, item, timestamp): ingest quarantines them
    n_same_moment_rows: int  # rows sharing (user, timestamp) with an earlier row: basket-mates of one moment
    n_missing_timestamps: int  # unparseable input timestamps, passed through as NaT
    n_event_items_not_in_items: int  # events whose item_id has no row in `items`
    notes: tuple[str, ...] = ()


def empty_table(table: str) -> pd.DataFrame:
    """An empty canonical table with the canonical dtypes."""
    return SCHEMAS[table].empty_table().to_pandas()


def build_purchase_events(user_id: pd.Series, item_id: pd.Series, timestamp: pd.Series) -> pd.DataFrame:
    """Purchase events in the canonical layout: the given timestamps (ties kept, file order within them), daily
    sessions, sorted by user and time."""
    raw = pd.DataFrame(
        {"user_id": user_id.to_numpy(), "item_id": item_id.to_numpy(), "raw_ts": timestamp.to_numpy()}
    )
    raw["raw_ts"] = pd.to_datetime(raw["raw_ts"], utc=True).astype("datetime64[ms, UTC]")
    raw = raw.sort_values(["user_id", "raw_ts"], kind="stable", na_position="last").reset_index(drop=True)
    ts = raw["raw_ts"]

    day = raw["raw_ts"].dt.floor("D")
    key = pd.DataFrame({"user_id": raw["user_id"], "day": day, "ts": ts})
    starts = key.groupby(["user_id", "day"], dropna=False, sort=False)["ts"].min().reset_index()
    starts = starts.sort_values(["ts", "user_id"], kind="stable", na_position="last").reset_index(drop=True)
    starts["session_id"] = np.arange(1, len(starts) + 1, dtype="int64")
    session = key.merge(starts[["user_id", "day", "session_id"]], on=["user_id", "day"], how="left")

    return pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(object),
            "session_id": session["session_id"].astype("int64").to_numpy(),
            "timestamp": ts,
            "action": "purchase",
            "item_id": raw["item_id"].astype(object),
            "query": pd.Series([None] * len(raw), dtype=object),
            "search_id": pd.Series([pd.NA] * len(raw), dtype="Int64"),
        }
    )


def _pad_article_id(s: pd.Series) -> pd.Series:
    return s.astype("string").str.strip().str.zfill(10).astype(object)


def _gender(index_group: str, section: str) -> str:
    for gender, groups, prefixes in _GENDER_RULES:
        if index_group in groups or section.startswith(prefixes):
            return gender
    return "unisex"


def _title(prod_name: str, product_type: str, colour: str) -> str:
    head = prod_name
    if product_type and product_type.lower() not in prod_name.lower():
        head = f"{prod_name} {product_type}".strip()
    return f"{head} - {colour}" if colour else head


def _read_articles(data_dir: Path, catalog: str, purchased: set[str]) -> pd.DataFrame:
    csv = pd.read_csv(data_dir / "articles.csv", dtype=str, keep_default_na=False)
    csv["article_id"] = _pad_article_id(csv["article_id"])
    if catalog == "purchased":
        return csv[csv["article_id"].isin(purchased)]
    full = pd.read_parquet(data_dir / "articles_full_catalog.parquet")
    full["article_id"] = _pad_article_id(full["article_id"])
    extra = csv[~csv["article_id"].isin(set(full["article_id"]))]
    return pd.concat([full, extra], ignore_index=True)


def _build_items(articles: pd.DataFrame, tx: pd.DataFrame) -> pd.DataFrame:
    def col(name: str) -> pd.Series:
        if name not in articles.columns:
            return pd.Series([""] * len(articles), index=articles.index, dtype=object)
        return articles[name].fillna("").astype(str).str.strip()

    ids = articles["article_id"]
    prod, ptype, colour = col("prod_name"), col("product_type_name"), col("colour_group_name")
    family = col("product_code").str.zfill(7) if "product_code" in articles.columns else ids.str[:7]
    bought = tx.groupby("article_id")
    price = ids.map(bought["price"].median()).fillna(0.0).astype("float64")
    n = len(articles)
    return pd.DataFrame(
        {
            "item_id": ids.to_numpy(),
            "family_id": family.to_numpy(),
            "title": [_title(p, t, c) for p, t, c in zip(prod, ptype, colour, strict=True)],
            "brand": [HM_BRAND] * n,
            "category": col("product_group_name").to_numpy(),
            "subcategory": ptype.to_numpy(),
            "color": colour.to_numpy(),
            "size": [""] * n,
            "material": [""] * n,
            "gender": [
                _gender(g, s) for g, s in zip(col("index_group_name"), col("section_name"), strict=True)
            ],
            "season": [""] * n,
            "occasion": [""] * n,
            "price": price.to_numpy(),
            "created_at": [HM_DATASET_START] * n,  # no release dates (see the module docstring)
        }
    ).astype({"created_at": "datetime64[ms, UTC]"})


def load_hm_with_report(
    data_dir: Path, *, catalog: Literal["full", "purchased"] = "full"
) -> tuple[CanonicalTables, LoadReport]:
    """Load the H&M sample as canonical tables, with a report of what was seen (see the module docstring)."""
    if catalog not in ("full", "purchased"):
        raise ValueError(f"catalog must be 'full' or 'purchased', got {catalog!r}")
    data_dir = Path(data_dir)
    tx = pd.read_csv(
        data_dir / "transactions.csv",
        dtype={"t_dat": str, "customer_id": str, "article_id": str},
        keep_default_na=False,
    )
    tx["article_id"] = _pad_article_id(tx["article_id"])
    tx["day"] = pd.to_datetime(tx["t_dat"], utc=True, errors="coerce", format="%Y-%m-%d")
    tx["price"] = pd.to_numeric(tx["price"], errors="coerce")

    events = build_purchase_events(tx["customer_id"], tx["article_id"], tx["day"])
    items = _build_items(_read_articles(data_dir, catalog, set(tx["article_id"])), tx)

    raw_cols = [c for c in tx.columns if c != "day"]
    report = LoadReport(
        source=f"hm:{data_dir}",
        resolution=RESOLUTION,
        n_input_rows=len(tx),
        n_events=len(events),
        n_users=events["user_id"].nunique(),
        n_items=len(items),
        n_exact_duplicate_rows=int(tx.duplicated(raw_cols).sum()),
        n_repeat_key_rows=int(tx.duplicated(["customer_id", "article_id", "t_dat"]).sum()),
        n_same_moment_rows=int(tx[tx["day"].notna()].duplicated(["customer_id", "day"]).sum()),
        n_missing_timestamps=int(tx["day"].isna().sum()),
        n_event_items_not_in_items=int((~events["item_id"].isin(set(items["item_id"]))).sum()),
        notes=(
            "timestamps are days: a customer's day is one moment (same-day rows share its timestamp)",
            "a repeated (customer, article, day) row is one purchase of several units: ingest quarantines it",
            f"catalog={catalog}; price is the median normalised transaction price, 0.0 if never bought",
        ),
    )
    return CanonicalTables(items=items, events=events, search_results=empty_table("search_results")), report


def load_hm(data_dir: Path, *, catalog: Literal["full", "purchased"] = "full") -> CanonicalTables:
    """Load the H&M sample (`transactions.csv`, `articles.csv`, `articles_full_catalog.parquet`) as canonical tables."""
    return load_hm_with_report(data_dir, catalog=catalog)[0]
