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
    at or before t (the first for a time before every start). Tie-aware when every part is (they are all of one
    kind). `lazy`: `scorers` are zero-argument factories, each called when its period first has a target (a seeded
    sample of targets may touch few periods)."""

    def __init__(self, starts: Sequence[pd.Timestamp], scorers: Sequence[Any], lazy: bool = False) -> None:
        if len(starts) != len(scorers) or not scorers:
            raise ValueError(f"need one scorer per start, got {len(scorers)} for {len(starts)}")
        if list(starts) != sorted(starts):
            raise ValueError("starts must be ascending")
        self.starts = tuple(pd.Timestamp(t) for t in starts)
        self._make = list(scorers) if lazy else None
        self._built: dict[int, Any] = {} if lazy else dict(enumerate(scorers))
        self.tie_aware = bool(getattr(self.part(len(scorers) - 1), "tie_aware", False))
        self.tie_aware &= all(getattr(s, "tie_aware", False) for s in self._built.values())

    def part(self, k: int) -> Any:
        """The k-th fit's scorer (built now if lazy and not yet built)."""
        if k not in self._built:
            self._built[k] = self._make[k]()  # type: ignore[index]
        return self._built[k]

    @property
    def parts(self) -> list[Any]:
        """The scorers built so far, in fit order (every one unless lazy)."""
        return [self._built[k] for k in sorted(self._built)]

    def split(self, batch: pd.DataFrame) -> list[tuple[Any, np.ndarray]]:
        """(the fit's scorer, the batch positions it scores) for each fit that has targets in the batch."""
        k = fit_index(batch["target_ts"], self.starts)  # (B,)
        return [(self.part(int(p)), np.flatnonzero(k == p)) for p in np.unique(k)]

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((len(batch), len(cat_rows)), np.float64)
        for part, rows in self.split(batch):
            sub = batch.iloc[rows]
            scores = part(sub, cat_rows, demote=demote[rows]) if self.tie_aware and demote is not None \
                else part(sub, cat_rows)
            out[rows] = np.asarray(scores, np.float64)
        return out


def split(scorer: Any, batch: pd.DataFrame) -> list[tuple[Any, np.ndarray]]:
    """`PeriodScorer.split`, and (the scorer, every position) for a scorer of one fit."""
    return scorer.split(batch) if isinstance(scorer, PeriodScorer) else [(scorer, np.arange(len(batch)))]


def parts(scorer: Any) -> list[Any]:
    """The per-fit scorers behind `scorer` that were built (itself alone when it is not a `PeriodScorer`)."""
    return scorer.parts if isinstance(scorer, PeriodScorer) else [scorer]


def by_fit(layout: Layout, make: Callable[[Layout], Scorer]) -> Scorer:
    """`make(layout)` for the layout's one fit, or a lazy `PeriodScorer` over `make` of each rolling refit's layout
    (the last fit's built at once; an earlier one when its period first has a target)."""
    fits = fit_layouts(layout)
    if len(fits) == 1:
        return make(fits[0][1])
    return PeriodScorer([t for t, _ in fits], [lambda lay=lay: make(lay) for _, lay in fits], lazy=True)
