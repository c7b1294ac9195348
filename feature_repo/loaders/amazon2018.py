"""Amazon Reviews 2018, AMAZON_FASHION 5-core (`AMAZON_FASHION_5.json`) -> the canonical tables.

The file is a pretty-printed stream of JSON objects (not JSON lines); `iter_json_objects` reads it (and JSON lines)
with `json.JSONDecoder.raw_decode`. Nothing is dropped: duplicate reviews and reviews with missing fields are passed
through for the ingest validator; `LoadReport` counts them.

Mapping choices
- events: every review -> one `purchase` (user_id=reviewerID, item_id=asin, timestamp=unixReviewTime as UTC;
  query/search_id null). Rating and review text are not in the canonical schema and are dropped.
- timestamps have day resolution and are kept as days, exactly as for H&M: a user's day is one moment, with
  file order inside it. A second review of the same asin by the same user on the same day is passed through and
  quarantined by ingest as `repeat_in_moment`. The file is not time-sorted per user; events are sorted by
  (user_id, timestamp). Sessions: one per (user, UTC day), global ids 1.. in chronological order.
- items: one per asin seen in the reviews (there is no metadata file). family_id = asin (no parent asin).
- category = "Clothing" for all, subcategory = "" (AMAZON_FASHION has no subcategory metadata here).
- style keys carry a trailing colon and values a leading space (`{"Size:": " Big Boys"}`); both are stripped.
  color = the asin's most common "Color" value, size = its most common "Size" (or "Size Name") value; ties go to
  the value seen first in the file; "" when an asin has none. Other style keys ("Style") are ignored.
- title = "Amazon Fashion item {asin}" plus " ({color}, {size})" from what exists: there are no real titles.
- brand, material, gender, season, occasion = "" (unknown); price = 0.0 (unknown).
- created_at = the first review time in the file, for every asin: there are no release dates, and an asin's own
  first review comes from after earlier targets' times (see the H&M loader).
- search_results: empty, with canonical dtypes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from feature_repo.loaders.hm import RESOLUTION, LoadReport, build_purchase_events, empty_table
from feature_repo.schema import CanonicalTables

AMAZON_FASHION_CATEGORY = "Clothing"
AMAZON_FASHION_FILE = "AMAZON_FASHION_5.json"
_SIZE_KEYS = ("Size", "Size Name")


def iter_json_objects(text: str) -> Iterator[dict]:
    """Yield each top-level JSON value of a concatenated stream (pretty-printed objects or JSON lines)."""
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed JSON stream at char {e.pos}: {e.msg}") from e
        yield obj


def parse_style(style: object) -> dict[str, str]:
    """`{"Size:": " Big Boys"}` -> `{"Size": "Big Boys"}`; anything that is not a dict gives `{}`."""
    if not isinstance(style, dict):
        return {}
    return {str(k).strip().rstrip(":").strip(): str(v).strip() for k, v in style.items() if v is not None}


def _most_common(values: list[str]) -> str:
    """The most frequent non-empty value; ties go to the value seen first."""
    counts = Counter(v for v in values if v)
    return max(counts, key=counts.__getitem__) if counts else ""  # max keeps the first of equal keys


def _title(asin: str, color: str, size: str) -> str:
    detail = ", ".join(v for v in (color, size) if v)
    return f"Amazon Fashion item {asin}" + (f" ({detail})" if detail else "")


def load_amazon2018_with_report(path: Path) -> tuple[CanonicalTables, LoadReport]:
    """Load `AMAZON_FASHION_5.json` (or a directory holding it) as canonical tables, with a load report."""
    path = Path(path)
    if path.is_dir():
        path = path / AMAZON_FASHION_FILE
    reviews = list(iter_json_objects(path.read_text(encoding="utf-8")))
    styles = [parse_style(r.get("style")) for r in reviews]
    raw = pd.DataFrame(
        {
            "user_id": [r.get("reviewerID") for r in reviews],
            "item_id": [r.get("asin") for r in reviews],
            "unix": pd.to_numeric(
                pd.Series([r.get("unixReviewTime") for r in reviews], dtype=object), errors="coerce"
            ),
            "color": [s.get("Color", "") for s in styles],
            "size": [next((s[k] for k in _SIZE_KEYS if s.get(k)), "") for s in styles],
            "style": [json.dumps(r.get("style"), sort_keys=True) for r in reviews],
            "text": [json.dumps([r.get("overall"), r.get("summary"), r.get("reviewText")]) for r in reviews],
        }
    )
    raw["ts"] = pd.to_datetime(raw["unix"], unit="s", utc=True).astype("datetime64[ms, UTC]")

    events = build_purchase_events(raw["user_id"], raw["item_id"], raw["ts"])

    by_item = raw[raw["item_id"].notna()].groupby("item_id", sort=False)
    color = by_item["color"].agg(lambda s: _most_common(list(s)))
    size = by_item["size"].agg(lambda s: _most_common(list(s)))
    asins = color.index.astype(str)
    n = len(asins)
    items = pd.DataFrame(
        {
            "item_id": list(asins),
            "family_id": list(asins),
            "title": [_title(a, c, z) for a, c, z in zip(asins, color, size, strict=True)],
            "brand": [""] * n,
            "category": [AMAZON_FASHION_CATEGORY] * n,
            "subcategory": [""] * n,
            "color": list(color),
            "size": list(size),
            "material": [""] * n,
            "gender": [""] * n,
            "season": [""] * n,
            "occasion": [""] * n,
            "price": [0.0] * n,
            "created_at": [raw["ts"].min()] * n,  # no release dates (see the module docstring)
        }
    ).astype({"price": "float64", "created_at": "datetime64[ms, UTC]"})

    timed = raw[raw["ts"].notna()]
    report = LoadReport(
        source=f"amazon2018:{path}",
        resolution=RESOLUTION,
        n_input_rows=len(raw),
        n_events=len(events),
        n_users=events["user_id"].nunique(),
        n_items=len(items),
        n_exact_duplicate_rows=int(raw.duplicated(["user_id", "item_id", "unix", "style", "text"]).sum()),
        n_repeat_key_rows=int(raw.duplicated(["user_id", "item_id", "unix"]).sum()),
        n_same_moment_rows=int(timed.duplicated(["user_id", "ts"]).sum()),
        n_missing_timestamps=int(raw["ts"].isna().sum()),
        n_event_items_not_in_items=int((~events["item_id"].isin(set(items["item_id"]))).sum()),
        notes=(
            "reviews stand in for purchases; timestamps are days: a user's day is one moment",
            "exact duplicates compare user, asin, time, style, rating, summary and text",
            "no metadata: category 'Clothing', synthetic titles, price 0.0",
        ),
    )
    return CanonicalTables(items=items, events=events, search_results=empty_table("search_results")), report


def load_amazon2018(path: Path) -> CanonicalTables:
    """Load `AMAZON_FASHION_5.json` (a pretty-printed stream of review objects) as canonical tables."""
    return load_amazon2018_with_report(path)[0]
