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
        w = np.where(inter["action"].to_numpy() == "purchase", cfg.purchase_weight, 1.0)
        order = np.argsort(t, kind="stable")
        self.t, self.rows, self.w = t[order], rows[order], w[order]

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray) -> np.ndarray:
        col = np.full(self.rows.max() + 1 if len(self.rows) else 1, -1, dtype=np.int64)
        col[cat_rows[cat_rows < len(col)]] = np.flatnonzero(cat_rows < len(col))
        in_cat = col[self.rows] >= 0
        t, cols, w = self.t[in_cat], col[self.rows[in_cat]], self.w[in_cat]
        ts = pd.to_datetime(batch["target_ts"], utc=True).astype("datetime64[ms, UTC]").astype("int64").to_numpy()
        hi = np.searchsorted(t, ts, side="left")  # strictly before the target
        if self.cfg.window_days is None:
            lo = np.zeros_like(hi)
        else:
            lo = np.searchsorted(t, ts - int(self.cfg.window_days * 86_400_000), side="left")
        out = np.zeros((len(batch), len(cat_rows)))
        for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
            out[i] = np.bincount(cols[a:b], weights=w[a:b], minlength=len(cat_rows))
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
