"""Leave-one-out and cross-category splits on the tiny handmade dataset (expected rows worked out in conftest.py)."""

from __future__ import annotations

import pandas as pd

from feature_repo.schema import CanonicalTables
from feature_repo.splits import Splits, cross_category, leave_one_out, ordered_events
from tests.conftest import at


def _rows(df: pd.DataFrame, cols: list[str]) -> list[tuple]:
    return list(df[cols].itertuples(index=False, name=None))


def test_leave_one_out_targets(tiny_tables: CanonicalTables) -> None:
    s = leave_one_out(tiny_tables.events, tiny_tables.items)
    cols = ["user_id", "split", "target_item_id", "target_ts", "category", "n_history", "cold_start"]
    # u1 buys F1, C1, F2 -> test F2, val C1; u2 buys only C2 -> test only; u3 never buys -> nothing;
    # u4 buys A1 then A2 at the same minute -> file order decides: test A2, val A1.
    # n_history = events strictly before the target's timestamp (u4's A1 shares A2's minute, so it is not history). cold_start = the item is not clicked/purchased
    # in any training event: training clicks/purchases are F1 (u1, u3), C1 (u1), C2 (u2), A1 (u4), F3 (u3).
    assert _rows(s.targets, cols) == [
        ("u1", "test", "F2", at(22), "Footwear", 8, True),
        ("u2", "test", "C2", at(7), "Clothing", 2, False),
        ("u4", "test", "A2", at(41), "Accessories & Jewelry", 1, True),
        ("u1", "val", "C1", at(12), "Clothing", 5, False),
        ("u4", "val", "A1", at(41), "Accessories & Jewelry", 1, False),
    ]
    assert s.split("val")["user_id"].tolist() == ["u1", "u4"]
    assert "u2" not in set(s.split("val")["user_id"])  # a single purchase gives no validation row
    assert "u3" not in set(s.targets["user_id"])


def test_training_events_precede_each_users_first_target(tiny_tables: CanonicalTables) -> None:
    s = leave_one_out(tiny_tables.events, tiny_tables.items)
    train = s.train_events
    # u1: the 5 events before the val purchase (minute 12); u2: 2 before its test purchase; u3: all its events
    # (no purchase, still training data); u4: only the click before the tied purchases.
    assert _rows(train.sort_values(["user_id", "timestamp"], kind="stable"), ["user_id", "timestamp", "action"]) == [
        ("u1", at(0), "search"), ("u1", at(1), "click"), ("u1", at(2), "purchase"),
        ("u1", at(10), "search"), ("u1", at(11), "click"),
        ("u2", at(5), "search"), ("u2", at(6), "click"),
        ("u3", at(3), "click"), ("u3", at(30), "click"),
        ("u4", at(40), "click"),
    ]  # fmt: skip
    first_target = s.targets.groupby("user_id")["target_ts"].min()
    with_target = train[train["user_id"].isin(first_target.index)]
    assert (with_target["timestamp"] < with_target["user_id"].map(first_target)).all()
    assert "pos" not in train.columns
    assert sorted(s.train_items) == ["A1", "C1", "C2", "F1", "F3"]


def test_ties_keep_file_order(tiny_tables: CanonicalTables) -> None:
    # Swap u4's two same-minute purchases in the file: the test target follows the file, not the item id.
    ev = tiny_tables.events
    swapped = pd.concat([ev.iloc[:15], ev.iloc[[16, 15]]], ignore_index=True)
    s = leave_one_out(swapped, tiny_tables.items)
    u4 = s.targets[s.targets["user_id"] == "u4"].set_index("split")["target_item_id"].to_dict()
    assert u4 == {"test": "A1", "val": "A2"}
    # Time comes before file order: a shuffled table (that keeps A1's row before A2's) gives the same order.
    shuffled = ordered_events(ev.iloc[[15, 3, 16, 0, 8, 14, 1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13]])
    assert _rows(shuffled, ["user_id", "timestamp", "item_id"]) == _rows(
        ordered_events(ev), ["user_id", "timestamp", "item_id"]
    )
    assert shuffled.groupby("user_id")["pos"].max().to_dict() == {"u1": 8, "u2": 2, "u3": 1, "u4": 2}


def test_cross_category(tiny_tables: CanonicalTables) -> None:
    s = leave_one_out(tiny_tables.events, tiny_tables.items)
    x = cross_category(s, tiny_tables.items, train_category="Footwear", test_category="Clothing")
    assert isinstance(x, Splits)
    # Training keeps all searches (u1 x2, u2 x1) and only Footwear clicks/purchases (u1: F1 x2; u3: F1, F3).
    inter = x.train_events[x.train_events["action"] != "search"]
    assert sorted(inter["item_id"]) == ["F1", "F1", "F1", "F3"]
    assert (x.train_events["action"] == "search").sum() == 3
    # Targets: only the Clothing ones; C1 and C2 were Clothing interactions, dropped from training -> now cold.
    assert _rows(x.targets, ["user_id", "split", "target_item_id", "cold_start"]) == [
        ("u2", "test", "C2", True),
        ("u1", "val", "C1", True),
    ]
    assert set(s.targets["cold_start"]) == {True, False}  # the original split is untouched
