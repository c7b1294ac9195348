"""`category_subset`: one category of the tiny dataset as a dataset of its own, worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from feature_repo.schema import CanonicalTables
from feature_repo.subsets import category_subset, tile_dataset
from tests.conftest import at, make_tiny_tables


def test_footwear_alone(tmp_path: Path) -> None:
    """Footwear: items F1-F3; searches 1 (F1, F2 at 1 and 2; C3 dropped) and 3 (F3, F2); u1's two footwear
    searches, clicks and purchases and u3's two clicks; u2 and u4 bought no footwear and searched none."""
    src = tmp_path / "src"
    make_tiny_tables().write(src)
    pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["F2", "C2"], "timestamp": [at(22), at(7)],
                  "category": ["Footwear", "Clothing"], "exp_ndcg10": [.3, .4]}).to_parquet(src / "oracle.parquet")
    dst = category_subset(src, tmp_path / "dst", "Footwear")
    t = CanonicalTables.read(dst)
    assert sorted(t.items["item_id"]) == ["F1", "F2", "F3"]
    assert list(zip(t.search_results["search_id"], t.search_results["item_id"], t.search_results["position"],
                    strict=True)) == [(1, "F1", 1), (1, "F2", 2), (3, "F3", 1), (3, "F2", 2)]
    got = list(zip(t.events["user_id"], t.events["action"], t.events["item_id"].fillna("-"), strict=True))
    assert got == [("u1", "search", "-"), ("u1", "click", "F1"), ("u1", "purchase", "F1"), ("u1", "search", "-"),
                   ("u1", "click", "F2"), ("u1", "purchase", "F2"), ("u3", "click", "F1"), ("u3", "click", "F3")]
    assert pd.read_parquet(dst / "oracle.parquet")["item_id"].tolist() == ["F2"]
    assert json.loads((dst / "subset.json").read_text())["events"] == 8
    category_subset(src, dst, "Footwear")  # rewritten, not appended to
    assert len(CanonicalTables.read(dst).events) == 8
    with pytest.raises(ValueError, match="no items in category 'Shoes'"):
        category_subset(src, tmp_path / "x", "Shoes")


def test_tiles_are_disjoint_copies(tmp_path: Path) -> None:
    src = tmp_path / "src"
    base = make_tiny_tables()
    base.write(src)
    t = CanonicalTables.read(tile_dataset(src, tmp_path / "k3", 3))
    assert len(t.items) == 27 and t.items["item_id"].is_unique and t.items["family_id"].nunique() == 27
    assert len(t.events) == 3 * len(base.events) and t.events["user_id"].nunique() == 12
    assert t.events["session_id"].nunique() == 3 * base.events["session_id"].nunique()
    assert t.search_results["search_id"].nunique() == 3 * base.search_results["search_id"].nunique()
    copy2 = t.events[t.events["user_id"].str.endswith("~2")]
    assert copy2["item_id"].dropna().str.endswith("~2").all() and copy2["query"].dropna().tolist() == \
        base.events["query"].dropna().tolist()  # the same texts, the same clock
    assert (copy2["timestamp"].to_numpy() == base.events["timestamp"].to_numpy()).all()
    assert copy2["search_id"].isna().sum() == base.events["search_id"].isna().sum()  # null stays null
    # every search result joins to its own copy's search event
    ev = t.events.dropna(subset=["search_id"]).set_index("search_id")["user_id"]
    assert (t.search_results["user_id"].to_numpy() == ev.loc[t.search_results["search_id"]].to_numpy()).all()
