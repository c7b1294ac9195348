"""Weekly snapshots of the query-product memory: a coarser leakage-free memory than `AsOfMemory` (an ablation).

A target at time t only ever sees the latest snapshot with cutoff <= t, so it misses the searches between that
cutoff and t, such as the user's own recent ones; `models.text.memory.AsOfMemory` is exact and the default.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.common import utc
from models.text.encoder import TextEncoder
from models.text.memory import MemoryConfig, QueryProductMemory, aggregate_query_products


class TimeSlicedMemory:
    """Query-product-memory snapshots at increasing cutoffs; `for_time(t)` never shows a search at/after t."""

    def __init__(self, snapshots: Sequence[QueryProductMemory], encoder: TextEncoder) -> None:
        self.snapshots = sorted(snapshots, key=lambda m: m.built_before)
        self.cutoffs = [m.built_before for m in self.snapshots]
        self.encoder = encoder
        self._empty = QueryProductMemory([], np.zeros((0, encoder.dim), np.float32), pd.Timestamp.min.tz_localize("UTC"),
                                         encoder)

    @classmethod
    def build(
        cls,
        search_results: pd.DataFrame,
        encoder: TextEncoder,
        every: pd.Timedelta = pd.Timedelta(days=7),
        cfg: MemoryConfig = MemoryConfig(),
        end: pd.Timestamp | str | None = None,
    ) -> TimeSlicedMemory:
        """Snapshots at first-search-day + every, + 2 every, ... up to one past `end` (default: the last search)."""
        ts = search_results["timestamp"]
        if len(ts) == 0:
            return cls([], encoder)
        start = utc(ts.min()).floor("D")
        stop = utc(end) if end is not None else utc(ts.max())
        cutoffs = pd.date_range(start + every, stop + every, freq=every)
        records = [aggregate_query_products(search_results, c, cfg) for c in cutoffs]
        # Each distinct query text is embedded once and shared by every snapshot that holds it.
        texts = sorted({r.query for rs in records for r in rs})
        keys = encoder.encode(texts) if texts else np.zeros((0, encoder.dim), np.float32)  # (U, d)
        row = {t: i for i, t in enumerate(texts)}
        snaps = [
            QueryProductMemory(rs, keys[[row[r.query] for r in rs]] if rs else np.zeros((0, encoder.dim)), c, encoder)
            for c, rs in zip(cutoffs, records, strict=True)
        ]
        return cls(snaps, encoder)

    def for_time(self, t: pd.Timestamp | str | int) -> QueryProductMemory:
        """The latest snapshot with cutoff <= t (an empty memory if none): it holds only searches before t."""
        i = bisect_right(self.cutoffs, utc(t))
        return self.snapshots[i - 1] if i > 0 else self._empty
