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


def tile_dataset(src: Path, dst: Path, k: int) -> Path:
    """`src` repeated `k` times with disjoint user, item, family, session and search ids (copy j's ids end in
    `~j`, its integer ids are offset by j times the largest), on the same clock: k times the volume with the same
    distribution, for growth measurements (`benchmarks/scale.py --tile K`). Titles and queries are copied as they
    are, so each title appears k times in its category (a retrieval by title alone cannot tell the copies apart;
    quality at k > 1 is not comparable with k = 1). The oracle, where `src` has one, is tiled the same way."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    src, dst = Path(src), Path(dst)
    t = CanonicalTables.read(src)
    if k == 1:
        out = t
    else:
        sess = int(max(t.events["session_id"].max(), t.search_results["session_id"].max())) + 1
        srch = int(max(t.events["search_id"].max(), t.search_results["search_id"].max())) + 1
        sfx = lambda s, j: s.astype("string") + f"~{j}"  # noqa: E731 - nulls stay null
        items, events, results = [], [], []
        for j in range(k):
            items.append(t.items.assign(item_id=sfx(t.items["item_id"], j), family_id=sfx(t.items["family_id"], j)))
            events.append(t.events.assign(user_id=sfx(t.events["user_id"], j), item_id=sfx(t.events["item_id"], j),
                                          session_id=t.events["session_id"] + j * sess,
                                          search_id=t.events["search_id"] + j * srch))
            results.append(t.search_results.assign(
                user_id=sfx(t.search_results["user_id"], j), item_id=sfx(t.search_results["item_id"], j),
                session_id=t.search_results["session_id"] + j * sess, search_id=t.search_results["search_id"] + j * srch))
        # each user's events stay in time order (the schema's promise): copies one after another
        out = CanonicalTables(items=pd.concat(items, ignore_index=True), events=pd.concat(events, ignore_index=True),
                              search_results=pd.concat(results, ignore_index=True))
    if dst.exists():
        shutil.rmtree(dst)
    out.write(dst)
    if (src / "oracle.parquet").exists():
        o = pd.read_parquet(src / "oracle.parquet")
        tiles = [o] if k == 1 else [o.assign(user_id=o["user_id"].astype(str) + f"~{j}",
                                             item_id=o["item_id"].astype(str) + f"~{j}") for j in range(k)]
        pd.concat(tiles, ignore_index=True).to_parquet(dst / "oracle.parquet", index=False)
    (dst / "subset.json").write_text(json.dumps({"source": str(src), "tile": k, "items": len(out.items),
                                                 "events": len(out.events)}, indent=1))
    return dst
