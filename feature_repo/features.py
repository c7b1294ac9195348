"""Feature tables for Feast, built from the canonical parquet: item attributes and user-sequence snapshots.

`user_sequence` holds one snapshot per (user, timestamp): the user's last `max_len` actions up to and including that
timestamp, as aligned lists. A point-in-time join at `T - 1 µs` therefore returns exactly the events strictly before
`T`. Events sharing a timestamp collapse into one snapshot, so a target never sees an event at its own timestamp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.schema import ITEM_ATTRIBUTES
from feature_repo.splits import ordered_events

SEQ_FEATURES = ("seq_actions", "seq_item_ids", "seq_queries", "seq_search_ids", "seq_timestamps")
DEFAULT_MAX_LEN = 50
JUST_BEFORE = pd.Timedelta(microseconds=1)


def item_feature_table(items: pd.DataFrame) -> pa.Table:
    """Item attributes keyed by item_id, valid from the item's `created_at`."""
    df = items[["item_id", *ITEM_ATTRIBUTES]].copy()
    df["event_timestamp"] = pd.to_datetime(items["created_at"], utc=True).astype("datetime64[us, UTC]")
    return pa.Table.from_pandas(df, preserve_index=False)


def user_sequence_table(events: pd.DataFrame, max_len: int = DEFAULT_MAX_LEN) -> pa.Table:
    """One row per (user, timestamp) with the last `max_len` actions up to it (see module docstring)."""
    ev = ordered_events(events)
    n = len(ev)
    actions = ev["action"].to_numpy(dtype=object)
    item_ids = ev["item_id"].fillna("").to_numpy(dtype=object)
    queries = ev["query"].fillna("").to_numpy(dtype=object)
    search_ids = ev["search_id"].fillna(-1).astype("int64").to_numpy()
    ts_ms = ev["timestamp"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    # Keep the last event of each (user, timestamp) run; its window covers every event at that timestamp.
    user = ev["user_id"].to_numpy(dtype=object)
    last_of_run = np.ones(n, dtype=bool)
    last_of_run[:-1] = (user[:-1] != user[1:]) | (ts_ms[:-1] != ts_ms[1:])
    rows = np.flatnonzero(last_of_run)
    user_start = rows - ev["pos"].to_numpy()[rows]  # row index of each user's first event
    start = np.maximum(rows - max_len + 1, user_start)
    offsets = np.concatenate([[0], np.cumsum(rows - start + 1)])
    take = np.concatenate([np.arange(s, r + 1) for s, r in zip(start, rows, strict=True)]) if len(rows) else np.array([], int)

    def lists(values: np.ndarray, typ: pa.DataType) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values[take], typ))

    return pa.table(
        {
            "user_id": pa.array(user[rows], pa.string()),
            "event_timestamp": pa.array(ev["timestamp"].to_numpy()[rows]).cast(pa.timestamp("us", tz="UTC")),
            "seq_actions": lists(actions, pa.string()),
            "seq_item_ids": lists(item_ids, pa.string()),
            "seq_queries": lists(queries, pa.string()),
            "seq_search_ids": lists(search_ids, pa.int64()),
            "seq_timestamps": lists(ts_ms, pa.int64()),
        }
    )


def write_feature_tables(items: pd.DataFrame, events: pd.DataFrame, out_dir: Path,
                         max_len: int = DEFAULT_MAX_LEN) -> dict[str, int]:
    """Write `item_features.parquet`, `user_sequence.parquet` and `activity_windows.parquet`; returns row counts."""
    from feature_repo.activity import activity_frame

    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, table in (("item_features", item_feature_table(items)),
                        ("user_sequence", user_sequence_table(events, max_len)),
                        ("activity_windows", pa.Table.from_pandas(activity_frame(events, items), preserve_index=False))):
        tmp = out_dir / f"{name}.parquet.tmp"
        pq.write_table(table, tmp)
        tmp.replace(out_dir / f"{name}.parquet")
        counts[name] = table.num_rows
    return counts
