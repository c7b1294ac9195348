"""Reference baselines, each using only data from before every target's timestamp.

- `PopularityScorer`: most popular in the category: clicks + purchases in a trailing window before the target.
- `LastSearchScorer`: the user's last search (before the target) gives its organic results in position order,
  followed by popularity for the rest of the category.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.catalog import Catalog


@dataclass(frozen=True)
class PopularityConfig:
    window_days: float | None = 30.0  # None: all history before the target
    purchase_weight: float = 1.0  # a purchase counts this many clicks


class PopularityScorer:
    """Per-target popularity from interactions strictly before the target time, in the target's category."""

    def __init__(self, events: pd.DataFrame, catalog: Catalog, cfg: PopularityConfig = PopularityConfig()):
        inter = events[events["action"].isin(["click", "purchase"])]
        self.cfg = cfg
        rows = catalog.index_of(inter["item_id"])
        t = pd.to_datetime(inter["timestamp"], utc=True).astype("datetime64[ms, UTC]").astype("int64").to_numpy()
        purchase = inter["action"].to_numpy() == "purchase"
        order = np.argsort(t, kind="stable")
        self.t, self.rows, self.purchase = t[order], rows[order], purchase[order]
        self._cached: tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def _category(self, cat_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The category's interactions (times, columns of `cat_rows`, purchase flags), kept for the next batch:
        `evaluate` scores a category's batches one after another."""
        if self._cached is not None and self._cached[0] is cat_rows:
            return self._cached[1]
        col = np.full(self.rows.max() + 1 if len(self.rows) else 1, -1, dtype=np.int64)
        col[cat_rows[cat_rows < len(col)]] = np.flatnonzero(cat_rows < len(col))
        in_cat = col[self.rows] >= 0
        found = (self.t[in_cat], col[self.rows[in_cat]], self.purchase[in_cat])
        self._cached = (cat_rows, found)  # holds cat_rows, so its id cannot be reused while cached
        return found

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray) -> np.ndarray:
        t, cols, purchase = self._category(cat_rows)
        ts = pd.to_datetime(batch["target_ts"], utc=True).astype("datetime64[ms, UTC]").astype("int64").to_numpy()
        hi = np.searchsorted(t, ts, side="left")  # strictly before the target
        if self.cfg.window_days is None:
            lo = np.zeros_like(hi)
        else:
            lo = np.searchsorted(t, ts - int(self.cfg.window_days * 86_400_000), side="left")
        # One window slid forward through the batch's targets in time order: each target costs the interactions that
        # enter and leave its window, not a count over all of them. Counts are integers, so the sliding is exact.
        n = len(cat_rows)
        clicks, buys = np.zeros(n, np.int64), np.zeros(n, np.int64)
        out = np.empty((len(batch), n))
        a0 = b0 = 0
        for i in np.argsort(ts, kind="stable"):
            a, b = int(lo[i]), int(hi[i])
            if a >= b0:  # disjoint from the last window: start again
                clicks[:], buys[:] = 0, 0
                a0 = b0 = a
            for sl, sign in ((slice(b0, b), 1), (slice(a0, a), -1)):
                np.add.at(clicks, cols[sl][~purchase[sl]], sign)
                np.add.at(buys, cols[sl][purchase[sl]], sign)
            a0, b0 = a, b
            np.multiply(buys, self.cfg.purchase_weight, out=out[i])
            out[i] += clicks
        return out


class LastSearchScorer:
    """The last search's organic results in position order, then popularity."""

    def __init__(self, search_results: pd.DataFrame, popularity: PopularityScorer, catalog: Catalog):
        sr = search_results.sort_values(["search_id", "position"], kind="stable")
        self.results = {
            sid: rows for sid, rows in
            zip(sr["search_id"].unique(), np.split(catalog.index_of(sr["item_id"]),
                                                   np.flatnonzero(np.diff(sr["search_id"].to_numpy())) + 1),
                strict=True)
        } if len(sr) else {}
        self.popularity = popularity

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray) -> np.ndarray:
        scores = self.popularity(batch, cat_rows)
        bonus = scores.max(initial=0.0) + 1.0
        col = pd.Series(np.arange(len(cat_rows)), index=cat_rows)
        for i, (actions, sids) in enumerate(zip(batch["seq_actions"], batch["seq_search_ids"], strict=True)):
            last = [s for a, s in zip(actions, sids, strict=True) if a == "search"]
            if not last or last[-1] not in self.results:
                continue
            shown = self.results[last[-1]]
            shown_cols = col.reindex(shown).dropna().astype(np.int64).to_numpy()  # only this category's results
            scores[i, shown_cols] = bonus + (len(shown_cols) - np.arange(len(shown_cols)))  # position 1 highest
        return scores
