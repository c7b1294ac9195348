"""Datasets cut from a canonical dataset, for the paper report's per-dataset tables (`evaluation.suite`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from feature_repo.schema import CanonicalTables


def category_subset(src: Path, dst: Path, category: str) -> Path:
    """`category` as a dataset of its own, as the paper evaluates one category at a time: its items; the clicks and
    purchases of them; the searches whose organic results showed one of them, with the results cut to those items
    (positions kept: the shop showed them there); and, where `src` ships an oracle, its rows for the category's
    purchases (a purchase's ceiling is over its category's items, so it holds in the subset). `dst` is rewritten."""
    src, dst = Path(src), Path(dst)
    tables = CanonicalTables.read(src)
    items = tables.items[tables.items["category"] == category].reset_index(drop=True)
    if items.empty:
        cats = sorted(tables.items["category"].dropna().unique())
        raise ValueError(f"{src} has no items in category {category!r}; it has {cats}")
    keep_items = set(items["item_id"])
    results = tables.search_results[tables.search_results["item_id"].isin(keep_items)].reset_index(drop=True)
    searches = set(results["search_id"])
    ev = tables.events
    keep = ev["item_id"].isin(keep_items) | ((ev["action"] == "search") & ev["search_id"].isin(searches))
    events = ev[keep].reset_index(drop=True)
    if dst.exists():
        shutil.rmtree(dst)
    CanonicalTables(items=items, events=events, search_results=results).write(dst)
    if (src / "oracle.parquet").exists():
        oracle = pd.read_parquet(src / "oracle.parquet")
        oracle[oracle["category"] == category].reset_index(drop=True).to_parquet(dst / "oracle.parquet", index=False)
    (dst / "subset.json").write_text(json.dumps({"source": str(src), "category": category,
                                                 "items": len(items), "events": len(events),
                                                 "searches": len(searches)}, indent=1))
    return dst
