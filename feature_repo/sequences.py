"""A user's sequence as Feast serves it (`feature_repo.features.SEQ_FEATURES`: aligned lists of actions, item ids,
queries, search ids and epoch ms, oldest first), read the same way by every consumer: the ID models, the retrieval
lists, the ranking stage, the prompts and the service.

The batch helpers take the list columns of a frame of targets (one row per target); `UserSequence` is one row, from
a target or from the online store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.text.tokenizer import normalize_text

ITEM_ACTIONS = ("click", "purchase")


def item_sequences(actions: Sequence[Sequence[str]], item_ids: Sequence[Sequence[str]]) -> list[list[str]]:
    """The clicked/purchased item ids of each action list, oldest first."""
    return [[i for a, i in zip(acts, items, strict=True) if a in ITEM_ACTIONS]
            for acts, items in zip(actions, item_ids, strict=True)]


def item_times(actions: Sequence[Sequence[str]], times: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """The epoch ms of each clicked/purchased item of each action list (aligned with `item_sequences`)."""
    return [np.array([t for a, t in zip(acts, ts, strict=True) if a in ITEM_ACTIONS], np.int64)
            for acts, ts in zip(actions, times, strict=True)]


def last_search_queries(actions: Sequence[Sequence[str]], queries: Sequence[Sequence[str | None]]) -> list[str | None]:
    """Each history's last non-empty search query (None if the user never searched)."""
    out: list[str | None] = []
    for acts, qs in zip(actions, queries, strict=True):
        last = None
        for a, q in zip(acts, qs, strict=True):
            if a == "search" and q is not None and normalize_text(str(q)):
                last = str(q)
        out.append(last)
    return out


def history_arrays(actions: list, item_ids: list, timestamps: list, index: pd.Index
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clicked/purchased catalog rows of one history (oldest first), whether each was a purchase, and its ms."""
    picked = [(i, a == "purchase", int(t)) for a, i, t in zip(actions, item_ids, timestamps, strict=True)
              if a in ("click", "purchase") and i]
    if not picked:
        return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64)
    rows = index.get_indexer(np.asarray([p[0] for p in picked], dtype=object))
    keep = rows >= 0
    return (rows[keep].astype(np.int64), np.array([p[1] for p in picked], bool)[keep],
            np.array([p[2] for p in picked], np.int64)[keep])


@dataclass(frozen=True)
class UserSequence:
    """One user's aligned action lists, oldest first (missing lists are filled: no item, no query, search id -1)."""

    actions: tuple[str, ...]
    item_ids: tuple[str | None, ...]
    queries: tuple[str | None, ...]
    search_ids: tuple[int, ...]
    timestamps_ms: tuple[int, ...]

    @classmethod
    def from_features(cls, features: Mapping[str, Sequence], row: int = 0) -> UserSequence:
        """Row `row` of Feast features (`get_online_features(...).to_dict()`: a list per feature); an unknown user
        (None lists) is an empty sequence."""
        def col(name: str) -> list:
            values = features.get(name) or [None]
            return list(values[row] or []) if row < len(values) else []

        actions = [str(a) for a in col("seq_actions")]
        n = len(actions)

        def fill(values: list, default: object) -> list:
            return values if len(values) == n else [default] * n

        items = [str(i) if i else None for i in fill(col("seq_item_ids"), None)]
        queries = [str(q) if q else None for q in fill(col("seq_queries"), None)]
        sids = [int(s) if s is not None else -1 for s in fill(col("seq_search_ids"), -1)]
        times = [int(t) if t is not None else 0 for t in fill(col("seq_timestamps"), 0)]
        return cls(tuple(actions), tuple(items), tuple(queries), tuple(sids), tuple(times))

    def __len__(self) -> int:
        return len(self.actions)

    def items(self) -> list[str]:
        """The clicked/purchased item ids, oldest first."""
        return [i for a, i in zip(self.actions, self.item_ids, strict=True) if a in ITEM_ACTIONS and i]

    def item_events(self) -> tuple[list[str], list[bool], list[int]]:
        """The clicked/purchased item ids, whether each was a purchase, and its epoch ms."""
        picked = [(i, a == "purchase", t) for a, i, t in zip(self.actions, self.item_ids, self.timestamps_ms,
                                                           strict=True) if a in ITEM_ACTIONS and i]
        return [p[0] for p in picked], [p[1] for p in picked], [p[2] for p in picked]

    def searches(self) -> list[tuple[int, int]]:
        """The logged searches as (search id, epoch ms), oldest first."""
        return [(s, t) for a, s, t in zip(self.actions, self.search_ids, self.timestamps_ms, strict=True)
                if a == "search" and s >= 0]

    def searched_queries(self) -> list[str]:
        """The non-empty search queries, oldest first."""
        return [q for a, q in zip(self.actions, self.queries, strict=True) if a == "search" and q and normalize_text(q)]

    def last_query(self) -> str | None:
        """The last non-empty search query (None if the user never searched)."""
        found = self.searched_queries()
        return found[-1] if found else None
