"""Feature tables and a real Feast store (DuckDB offline, SQLite online) over a temp dir, on the tiny dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_repo.activity import COUNTS, DAY_MS, ActivityTable, activity_frame, event_keys
from feature_repo.features import SEQ_FEATURES, item_feature_table, user_sequence_table, write_feature_tables
from feature_repo.schema import CanonicalTables
from feature_repo.splits import leave_one_out, ordered_events
from feature_repo.store import FeatureRepo
from tests.conftest import at, make_tiny_tables


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.timestamp() * 1000)


def _expected_window(events: pd.DataFrame, user: str, upto: pd.Series, max_len: int) -> dict[str, list]:
    """Pure pandas: the user's events selected by the boolean `upto`, in (time, file) order, last `max_len`."""
    ev = ordered_events(events)
    ev = ev[(ev["user_id"] == user) & upto.reindex(ev.index, fill_value=False)].tail(max_len)
    return {
        "seq_actions": ev["action"].tolist(),
        "seq_item_ids": ev["item_id"].fillna("").tolist(),
        "seq_queries": ev["query"].fillna("").tolist(),
        "seq_search_ids": [int(s) if pd.notna(s) else -1 for s in ev["search_id"]],
        "seq_timestamps": [_ms(t) for t in ev["timestamp"]],
    }


def _history_strictly_before(
    events: pd.DataFrame, user: str, t: pd.Timestamp, max_len: int = 50
) -> dict[str, list]:
    ev = ordered_events(events)
    return _expected_window(events, user, ev["timestamp"] < t, max_len)


def test_user_sequence_table_windows_match_pandas(tiny_tables: CanonicalTables) -> None:
    events = tiny_tables.events
    table = user_sequence_table(events, max_len=3).to_pandas()
    # One snapshot per distinct (user, timestamp): u1 9, u2 3, u3 2, u4 2 (its two purchases share minute 41).
    assert len(table) == 16
    assert table.groupby("user_id").size().to_dict() == {"u1": 9, "u2": 3, "u3": 2, "u4": 2}
    ev = ordered_events(events)
    for row in table.itertuples(index=False):
        expected = _expected_window(events, row.user_id, ev["timestamp"] <= row.event_timestamp, 3)
        assert {c: list(getattr(row, c)) for c in SEQ_FEATURES} == expected, (
            row.user_id,
            row.event_timestamp,
        )


def test_user_sequence_table_truncation_keeps_the_most_recent(tiny_tables: CanonicalTables) -> None:
    table = user_sequence_table(tiny_tables.events, max_len=3).to_pandas()
    last_u1 = table[table["user_id"] == "u1"].iloc[-1]
    # u1's last three actions (minutes 20, 21, 22): search "sneakers" (id 3), click F2, purchase F2.
    assert pd.Timestamp(last_u1["event_timestamp"]) == at(22)
    assert list(last_u1["seq_actions"]) == ["search", "click", "purchase"]
    assert list(last_u1["seq_item_ids"]) == ["", "F2", "F2"]
    assert list(last_u1["seq_queries"]) == ["sneakers", "", ""]
    assert list(last_u1["seq_search_ids"]) == [3, -1, -1]
    assert list(last_u1["seq_timestamps"]) == [_ms(at(20)), _ms(at(21)), _ms(at(22))]
    # u4's minute-41 snapshot covers both purchases at that minute, in file order.
    u4 = table[table["user_id"] == "u4"]
    assert [list(s) for s in u4["seq_item_ids"]] == [["A1"], ["A1", "A1", "A2"]]
    full = user_sequence_table(tiny_tables.events).to_pandas()
    assert len(full[full["user_id"] == "u1"].iloc[-1]["seq_actions"]) == 9  # default max_len 50 keeps all


def test_item_feature_table(tiny_tables: CanonicalTables) -> None:
    df = item_feature_table(tiny_tables.items).to_pandas().set_index("item_id")
    assert len(df) == 9 and df.at["F3", "brand"] == "" and df.at["A1", "price"] == 90.0
    assert (df["event_timestamp"] == pd.Timestamp("2024-01-01", tz="UTC")).all()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> FeatureRepo:
    root = tmp_path_factory.mktemp("feast")
    t = make_tiny_tables()
    assert write_feature_tables(t.items, t.events, root / "features") == {
        "item_features": 9,
        "user_sequence": 16,
        "activity_windows": len(activity_frame(t.events, t.items)),
    }
    r = FeatureRepo(root / "features", root / "feast", online_items=True)  # item attributes online too
    r.apply()
    return r


def _registry(r: FeatureRepo) -> tuple[list[str], ...]:
    s = r.store
    return (
        sorted(e.name for e in s.list_entities()),
        sorted(v.name for v in s.list_feature_views()),
        sorted(f.name for f in s.list_feature_services()),
        sorted(d.name for d in s.list_data_sources()),
    )


def test_apply_is_idempotent(repo: FeatureRepo) -> None:
    before = _registry(repo)
    assert before[1:3] == (
        ["activity_windows", "item_attributes", "user_sequence"],
        ["item_context_v1", "prompt_context_v1", "ranking_context_v1", "sequence_training_v1"],
    )
    assert repo.apply() == sorted(repo.definitions)
    again = FeatureRepo(repo.feature_dir, repo.feast_dir, online_items=True)  # a fresh process, same registry
    assert again.apply() == sorted(repo.definitions)
    assert _registry(repo) == before and _registry(again) == before


def test_history_before_is_exactly_the_earlier_events(repo: FeatureRepo) -> None:
    t = make_tiny_tables()
    targets = leave_one_out(t.events, t.items).targets
    extra = pd.DataFrame({
        "user_id": ["u4", "u2", "u5", "u3", "u1"],
        # u4 just after its click; u2 before anything; u5 unknown; u3 after everything; u1 exactly at a click.
        "target_ts": [at(40.5), at(0), at(3), at(100), at(11)],
    })  # fmt: skip
    queries = pd.concat([targets[["user_id", "target_ts"]], extra], ignore_index=True)
    hist = repo.history_before(queries["user_id"], queries["target_ts"])
    assert hist["user_id"].tolist() == queries["user_id"].tolist()  # input order kept
    for q, h in zip(queries.itertuples(index=False), hist.itertuples(index=False), strict=True):
        expected = _history_strictly_before(t.events, q.user_id, q.target_ts)
        assert {c: list(getattr(h, c)) for c in SEQ_FEATURES} == expected, (q.user_id, q.target_ts)


def test_history_excludes_events_at_the_target_time(repo: FeatureRepo) -> None:
    hist = repo.history_before(pd.Series(["u4", "u1", "u2"]), pd.Series([at(41), at(12), at(5)]))
    # u4 at 41: both purchases are AT minute 41 -> only the click at 40.
    assert list(hist.loc[0, "seq_item_ids"]) == ["A1"] and list(hist.loc[0, "seq_actions"]) == ["click"]
    # u1 at 12 (the C1 purchase): the 5 events at minutes 0, 1, 2, 10, 11.
    assert list(hist.loc[1, "seq_timestamps"]) == [_ms(at(m)) for m in (0, 1, 2, 10, 11)]
    # u2's first event is at minute 5: nothing strictly before it -> empty lists, not None.
    assert all(hist.loc[2, c] == [] for c in SEQ_FEATURES)


def test_history_with_the_training_service(repo: FeatureRepo) -> None:
    hist = repo.history_before(pd.Series(["u1"]), pd.Series([at(2)]), service="sequence_training_v1")
    assert set(hist.columns) == {"user_id", "seq_actions", "seq_item_ids", "seq_timestamps"}
    assert list(hist.loc[0, "seq_item_ids"]) == ["", "F1"]


def test_online_after_materialize(repo: FeatureRepo) -> None:
    repo.materialize()
    online = repo.online(["u1", "u4", "nobody"])
    assert online["user_id"] == ["u1", "u4", "nobody"]
    # The latest snapshot: u1's whole 9-event sequence, u4's 3 events, nothing for an unknown user.
    assert online["seq_actions"][0] == ["search", "click", "purchase"] * 3
    assert online["seq_item_ids"][0] == ["", "F1", "F1", "", "C1", "C1", "", "F2", "F2"]
    assert online["seq_search_ids"][0] == [1, -1, -1, 2, -1, -1, 3, -1, -1]
    assert online["seq_item_ids"][1] == ["A1", "A1", "A2"]
    assert online["seq_timestamps"][1] == [_ms(at(40)), _ms(at(41)), _ms(at(41))]
    assert online["seq_actions"][2] is None
    items = repo.online_items(["F3", "C1", "nope"])
    assert items["title"] == ["Black boot", "Blue shirt", None]
    assert items["brand"][:2] == ["", "Zed"] and items["price"][:2] == [80.0, 20.0]
    assert items["category"][:2] == ["Footwear", "Clothing"]


def test_online_items_off_by_default(repo: FeatureRepo) -> None:
    default = FeatureRepo(repo.feature_dir, repo.feast_dir)  # not applied: the registry keeps online items
    assert default.definitions["item_attributes"].online is False
    assert default.definitions["user_sequence"].online is True
    with pytest.raises(RuntimeError, match="online_items=True"):
        default.online_items(["F1"])


def test_n_history_is_the_length_of_the_point_in_time_history(repo: FeatureRepo) -> None:
    t = make_tiny_tables()
    targets = leave_one_out(t.events, t.items).targets
    hist = repo.history_before(targets["user_id"], targets["target_ts"])
    assert hist["seq_actions"].map(len).tolist() == targets["n_history"].tolist()


def test_feature_dir_is_resolved(repo: FeatureRepo) -> None:
    assert (
        repo.feature_dir.is_absolute() and Path(repo.definitions["user_sequence_source"].path).is_absolute()
    )


def _direct_counts(t: CanonicalTables, key: str, when: pd.Timestamp) -> list[int]:
    """Pure numpy: the key's interactions / purchases in the 7 and 30 days before the start of `when`'s day."""
    keys, ms, buy = event_keys(t.events, t.items)
    day = int(pd.Timestamp(when).value // 1_000_000 // DAY_MS) * DAY_MS
    out = []
    for w in (7, 30):
        m = (keys == key) & (ms < day) & (ms >= day - w * DAY_MS)
        out.append((int(m.sum()), int((m & buy).sum())))
    return [out[0][0], out[1][0], out[0][1], out[1][1]]  # COUNTS order: n_7d, n_30d, buy_7d, buy_30d


def test_activity_windows_feast_point_in_time_equals_the_ranker_lookup(repo: FeatureRepo) -> None:
    """One definition: Feast's point-in-time join over the `activity_windows` view, the ranker's numpy as-of lookup
    and a direct count over the events agree, at times before, on and after the events' days, for keys of every
    kind (item, family, category, category attribute) and for a key nobody touched."""
    t = make_tiny_tables()
    table = ActivityTable.build(t.events, t.items)
    ev = t.events[t.events["action"].isin(["click", "purchase"])]
    fam = t.items.set_index("item_id")["family_id"]
    cat = t.items.set_index("item_id")["category"]
    item = str(ev["item_id"].iloc[0])
    keys = [f"item:{item}", f"family:{fam[item]}", f"cat:{cat[item]}",
            f"cat:{cat[item]}|color:{t.items.set_index('item_id').at[item, 'color']}", "item:never-touched"]
    first = pd.to_datetime(ev["timestamp"], utc=True).min()
    times = [first - pd.Timedelta(days=1), first, first + pd.Timedelta(days=1, hours=3), first + pd.Timedelta(days=8),
             first + pd.Timedelta(days=31), first + pd.Timedelta(days=40)]
    pairs = [(k, w) for k in keys for w in times]
    feast = repo.activity_as_of([k for k, _ in pairs], [w for _, w in pairs])
    ours = np.stack([table.lookup([k], w.value)[0] for k, w in pairs]).astype(int)
    direct = np.array([_direct_counts(t, k, w) for k, w in pairs])
    assert list(feast.columns) == list(COUNTS)
    np.testing.assert_array_equal(feast.to_numpy(), ours)
    np.testing.assert_array_equal(ours, direct)
    assert direct[:, 1].max() > 0  # the events do show up somewhere
    # Nothing from the event's own day: at `first` (the same day) every window is still empty.
    assert (direct[[keys.index(f"item:{item}") * len(times) + 1]] == 0).all()


def test_activity_table_read_through_its_cache(tmp_path: Path) -> None:
    """A second read of the same file comes from the cache with the same arrays and lookups; a rewritten file is
    read again; a damaged entry is rebuilt."""
    t = make_tiny_tables()
    path = tmp_path / "activity_windows.parquet"
    ActivityTable.build(t.events, t.items).frame.to_parquet(path, index=False)
    cache = tmp_path / "cache"
    first, second = ActivityTable.read(path, cache), ActivityTable.read(path, cache)
    assert first._frame is not None and second._frame is None  # the second one never read the parquet
    assert list(first.keys) == list(second.keys) and np.array_equal(first.comp, second.comp)
    assert np.array_equal(first.values, second.values)
    keys = list(first.keys)
    at_ns = np.full(len(keys), at(60 * 24).value)  # the next day: yesterday's events are in the windows
    assert np.array_equal(first.lookup(keys, at_ns), second.lookup(keys, at_ns)) and first.lookup(keys, at_ns).sum() > 0
    pd.testing.assert_frame_equal(second.frame, first.frame)  # read when asked for
    (entry,) = list(cache.glob("*.npz"))
    entry.write_bytes(b"damaged")
    assert list(ActivityTable.read(path, cache).keys) == keys
    ActivityTable.build(t.events.head(5), t.items).frame.to_parquet(path, index=False)  # a new file
    assert list(ActivityTable.read(path, cache).keys) != keys and len(list(cache.glob("*.npz"))) == 2
