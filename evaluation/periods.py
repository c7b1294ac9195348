"""Rolling refits in evaluation: each test target is scored by the fit of its period.

With rolling refits (`feature_repo.splits`, "Rolling refits") the test period has several ID-model fits, each
scoring the targets from its start until the next one. `by_fit` builds one scorer per fit over the fit's layout
(`feature_repo.splits.fit_layouts`) and, when there is more than one, joins them in a `PeriodScorer`, which splits every
batch by target time and hands each part to its fit's scorer. Without rolling refits it returns the one scorer
unchanged, so every caller reads the same with and without them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from evaluation.metrics import Scorer
from feature_repo.layout import Layout
from feature_repo.splits import fit_index, fit_layouts


class PeriodScorer:
    """An evaluation `Scorer` over several fits: a target at time t is scored by `scorers[k]`, k the latest `starts`
    at or before t (the first for a time before every start). Tie-aware when every part is."""

    def __init__(self, starts: Sequence[pd.Timestamp], scorers: Sequence[Any]) -> None:
        if len(starts) != len(scorers) or not scorers:
            raise ValueError(f"need one scorer per start, got {len(scorers)} for {len(starts)}")
        if list(starts) != sorted(starts):
            raise ValueError("starts must be ascending")
        self.starts = tuple(pd.Timestamp(t) for t in starts)
        self.parts = list(scorers)
        self.tie_aware = all(getattr(s, "tie_aware", False) for s in self.parts)

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> np.ndarray:
        k = fit_index(batch["target_ts"], self.starts)  # (B,)
        out = np.empty((len(batch), len(cat_rows)), np.float64)
        for p in np.unique(k):
            rows = np.flatnonzero(k == p)
            part, sub = self.parts[p], batch.iloc[rows]
            scores = part(sub, cat_rows, demote=demote[rows]) if self.tie_aware and demote is not None \
                else part(sub, cat_rows)
            out[rows] = np.asarray(scores, np.float64)
        return out


def parts(scorer: Any) -> list[Any]:
    """The per-fit scorers behind `scorer` (itself alone when it is not a `PeriodScorer`)."""
    return list(scorer.parts) if isinstance(scorer, PeriodScorer) else [scorer]


def by_fit(layout: Layout, make: Callable[[Layout], Scorer]) -> Scorer:
    """`make(layout)` for the layout's one fit, or a `PeriodScorer` over `make` of each rolling refit's layout."""
    fits = fit_layouts(layout)
    if len(fits) == 1:
        return make(fits[0][1])
    return PeriodScorer([t for t, _ in fits], [make(lay) for _, lay in fits])
