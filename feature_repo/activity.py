"""Point-in-time activity aggregates: interactions per item, per product family and per attribute in trailing windows.

One definition serves training, evaluation and serving. `activity_frame(events, items)` writes daily snapshot rows:
a row (activity_key, event_timestamp = day D at 00:00 UTC) holds the clicks + purchases and the purchases of that key in
`[D - 7 days, D)` and `[D - 30 days, D)`, so every count is from strictly before any time on day D. A key gets a row
on every day its windows are non-zero, and one more on the day they fall back to zero. So the latest row at or
before t (Feast's point-in-time join with ttl 0) is exactly the windows as of t's day. The frame is the source of
the Feast feature view `activity_windows` (`feature_repo.definitions`), and `ActivityTable.lookup(keys, t)` is that
same as-of join in numpy, which the ranker reads at training, evaluation and request time (a test checks it
against Feast's `get_historical_features`).

Keys are strings in one namespace:
- `item:<item_id>`, `family:<family_id>`: popularity and its trend;
- `cat:<category>` and `cat:<category>|<attribute>:<value>` for season, occasion and colour: what share of a
  category's recent interactions have each value (the season, occasions and colour trends at the target time).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo.layout import cache_root

DAY_MS = 86_400_000
WINDOWS = (7, 30)  # days
KEY = "activity_key"  # the Feast join key
COUNTS = ("n_7d", "n_30d", "buy_7d", "buy_30d")  # interactions / purchases in each window
TREND_ATTRIBUTES = ("season", "occasion", "color")
CACHE_VERSION = "a1"  # bump when the table's arrays change meaning: older cache entries are then ignored
_SHIFT = 42  # composite sort key: key code << 42 | epoch ms (ms < 2**42 until the year 2109)


def event_keys(events: pd.DataFrame, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (key, time ms, is purchase) the interactions contribute to: (m,) object, (m,) int64, (m,) bool."""
    inter = events[events["action"].isin(["click", "purchase"])]
    attrs = items.set_index("item_id")
    ids = inter["item_id"].astype(str).to_numpy()
    t = pd.DatetimeIndex(pd.to_datetime(inter["timestamp"], utc=True)).as_unit("ms").asi8
    buy = inter["action"].to_numpy() == "purchase"
    known = pd.Index(attrs.index).get_indexer(ids) >= 0
    ids, t, buy = ids[known], t[known], buy[known]
    cat = attrs["category"].reindex(ids).astype(str).to_numpy()
    parts = [np.char.add("item:", ids.astype(str)).astype(object), np.char.add("cat:", cat.astype(str)).astype(object)]
    if "family_id" in attrs:
        parts.append(np.char.add("family:", attrs["family_id"].reindex(ids).astype(str).to_numpy().astype(str))
                     .astype(object))
    for a in TREND_ATTRIBUTES:
        if a in attrs:
            val = attrs[a].reindex(ids).fillna("").astype(str).to_numpy()
            parts.append(pd.Series(cat).str.cat(pd.Series(val), sep=f"|{a}:").radd("cat:").to_numpy(object))
    n = len(parts)
    return np.concatenate(parts), np.tile(t, n), np.tile(buy, n)


def activity_frame(events: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Daily snapshot rows (activity_key, event_timestamp, n_7d, n_30d, buy_7d, buy_30d) of every key (see module doc)."""
    keys, t, buy = event_keys(events, items)
    if len(keys) == 0:
        return pd.DataFrame({KEY: pd.Series([], dtype=str), "event_timestamp": pd.Series([], dtype="datetime64[ms, UTC]"),
                             **{c: pd.Series([], dtype=np.int64) for c in COUNTS}})
    code, uniq = pd.factorize(keys, sort=True)
    order = np.lexsort((t, code))
    code, t, buy = code[order], t[order], buy[order]
    comp = (code.astype(np.int64) << _SHIFT) | t  # (m,) sorted
    buy_cum = np.concatenate([[0], np.cumsum(buy)])  # purchases among the first i sorted events
    # Snapshot days: the 1..max(window)+1 days after each (key, event day). The last is the day the windows fall
    # back to zero, so every row is either non-zero or that transition.
    day = t // DAY_MS
    span = max(WINDOWS) + 1
    key_day = np.unique((code.astype(np.int64) << 20) | day)  # (u,) distinct (key, event day)
    snap = np.unique((key_day[:, None] + np.arange(1, span + 1)).ravel())  # (r,) key << 20 | snapshot day
    s_code, s_day = snap >> 20, snap & ((1 << 20) - 1)
    base = s_code << _SHIFT
    hi = np.searchsorted(comp, base | (s_day * DAY_MS), side="left")  # events of the key before day D
    out = {KEY: np.asarray(uniq, dtype=object)[s_code],
           "event_timestamp": pd.to_datetime(s_day * DAY_MS, unit="ms", utc=True).astype("datetime64[ms, UTC]")}
    for w in WINDOWS:
        lo = np.searchsorted(comp, base | ((s_day - w) * DAY_MS), side="left")
        out[f"n_{w}d"] = (hi - lo).astype(np.int64)
        out[f"buy_{w}d"] = (buy_cum[hi] - buy_cum[lo]).astype(np.int64)
    return pd.DataFrame(out)[[KEY, "event_timestamp", *COUNTS]]


class ActivityTable:
    """As-of lookups in an `activity_frame`: the latest row at or before each time, zeros for unknown keys."""

    def __init__(self, frame: pd.DataFrame | None, arrays: tuple[pd.Index, np.ndarray, np.ndarray] | None = None,
                 path: Path | None = None) -> None:
        if frame is not None:
            code, uniq = pd.factorize(frame[KEY], sort=True)
            ms = pd.DatetimeIndex(pd.to_datetime(frame["event_timestamp"], utc=True)).as_unit("ms").asi8
            order = np.lexsort((ms, code))
            arrays = (pd.Index(uniq), (code[order].astype(np.int64) << _SHIFT) | ms[order],
                      frame[list(COUNTS)].to_numpy(np.float32)[order])
        if arrays is None:
            raise ValueError("an ActivityTable needs its frame or its arrays")
        self.keys, self.comp, self.values = arrays  # distinct keys; (r,) sorted (key, ms); (r, 4) counts
        self._frame, self._path = frame, path
        # `read`'s key of the file this table came from (path, size, modification time), for caches of what is
        # derived from it; None for a table built in memory
        self.source_key: str | None = None

    @property
    def frame(self) -> pd.DataFrame:
        """The snapshot rows (read from the file when the table came from the cache)."""
        if self._frame is None:
            if self._path is None:
                raise ValueError("this ActivityTable has no frame")
            self._frame = pd.read_parquet(self._path)
        return self._frame

    @property
    def row_codes(self) -> np.ndarray:
        """(r,) each row's key code (its index in `keys`), rows sorted by (key, time) as `values`."""
        return self.comp >> _SHIFT

    @property
    def row_ms(self) -> np.ndarray:
        """(r,) each row's snapshot time, epoch ms, in the order of `values`."""
        return self.comp & ((1 << _SHIFT) - 1)

    @classmethod
    def build(cls, events: pd.DataFrame, items: pd.DataFrame) -> ActivityTable:
        return cls(activity_frame(events, items))

    @classmethod
    def read(cls, path: Path, cache: Path | None = None) -> ActivityTable:
        """The table of an `activity_windows.parquet`. Its sorted arrays are kept in `$FASHIONREC_CACHE/activity`
        (keyed by the file's path, size and modification time), so the next process that reads the same file (a
        service's start, each rolling refit's ranking stage) skips the factorizing and sorting."""
        path = Path(path)
        st = path.stat()
        key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{CACHE_VERSION}".encode()).hexdigest()
        entry = (Path(cache) if cache is not None else cache_root() / "activity") / f"{key}.npz"
        if entry.exists():
            try:
                with np.load(entry, allow_pickle=False) as z:
                    keys = bytes(z["keys"]).decode("utf-8").split("\x00") if len(z["keys"]) else []
                    table = cls(None, (pd.Index(np.asarray(keys, dtype=object)), z["comp"], z["values"]), path)
                    table.source_key = key
                    return table
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is built again
        table = cls(pd.read_parquet(path), path=path)
        table.source_key = key
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_suffix(f".{os.getpid()}.tmp.npz")
            blob = "\x00".join(map(str, table.keys)).encode("utf-8")
            np.savez(tmp, keys=np.frombuffer(blob, np.uint8), comp=table.comp, values=table.values)
            tmp.replace(entry)
        except OSError:
            pass  # a read-only cache: read the file each time
        return table

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.frame.to_parquet(path, index=False)
        return path

    def lookup(self, keys: Sequence[str] | np.ndarray, t_ns: np.ndarray | int) -> np.ndarray:
        """(n, 4) float32 counts (`COUNTS`) of each key as of each time (epoch ns, one per key or one for all)."""
        keys = np.asarray(keys, dtype=object)
        if len(keys) == 0 or len(self.comp) == 0:
            return np.zeros((len(keys), len(COUNTS)), np.float32)
        return self.lookup_codes(self.codes(keys), t_ns)

    def codes(self, keys: Sequence[str] | np.ndarray) -> np.ndarray:
        """Each key's code in this table (-1: unknown), for `lookup_codes`: what a caller that looks the same keys
        up many times computes once. (n,) int64"""
        return self.keys.get_indexer(np.asarray(keys, dtype=object)).astype(np.int64)

    def lookup_codes(self, code: np.ndarray, t_ns: np.ndarray | int) -> np.ndarray:
        """`lookup` by the keys' `codes`. (n, 4) float32"""
        code = np.asarray(code, np.int64)
        out = np.zeros((len(code), len(COUNTS)), np.float32)
        if len(code) == 0 or len(self.comp) == 0:
            return out
        if np.ndim(t_ns) == 0 and len(code) > 1:  # one time for all: each distinct key once, in ascending order
            uniq, inv = np.unique(code, return_inverse=True)
            if len(uniq) < len(code):
                return self.lookup_codes(uniq, t_ns)[inv.reshape(-1)]
        ms = np.broadcast_to(np.asarray(t_ns, np.int64) // 1_000_000, code.shape)
        q = (np.maximum(code, 0).astype(np.int64) << _SHIFT) | np.maximum(ms, 0)
        i = np.searchsorted(self.comp, q, side="right") - 1  # latest row at or before (key, t)
        ok = (code >= 0) & (i >= 0)
        ok[ok] &= (self.comp[i[ok]] >> _SHIFT) == code[ok]
        out[ok] = self.values[i[ok]]
        return out
