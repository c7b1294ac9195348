"""Helpers every offline scorer shares: the per-category batches `evaluate` iterates, and ranked lists as scores."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from models.catalog import Catalog

LIST_BONUS = 3.0  # listed items score above this; every cosine is <= 1
# The most (target, item) cells one batch scores at once: 2^25 float64 scores are 268 MB. A batch of 256 targets
# fits medium-s0's largest category (92k items); on a catalog four times that size a batch shrinks to 91 targets,
# so evaluation memory stays flat as the catalog grows.
MAX_CELLS = 1 << 25


def category_batches(targets: pd.DataFrame, catalog: Catalog, batch_size: int = 256,
                     max_cells: int | None = MAX_CELLS) -> Iterator[tuple[str, np.ndarray, pd.DataFrame, np.ndarray]]:
    """(category, target positions, batch, the category's catalog rows) per category (sorted) and batch, in the
    order `evaluate` scores them. A batch holds at most `batch_size` targets and, where `max_cells` is set, at most
    `max_cells` (target, item) cells (never fewer than one target)."""
    for cat, idx in targets.groupby("category", sort=True).indices.items():
        cat_rows = catalog.rows[cat]
        step = batch_size if max_cells is None else max(1, min(batch_size, max_cells // max(len(cat_rows), 1)))
        for start in range(0, len(idx), step):
            b = idx[start:start + step]
            yield cat, b, targets.iloc[b], cat_rows


def in_sorted(values: np.ndarray, sorted_rows: np.ndarray) -> np.ndarray:
    """`np.isin(values, sorted_rows)` for an ascending `sorted_rows` (a category's catalog rows), by binary search:
    its cost is the values' (log the category), where `np.isin` reads the whole category on every call."""
    values = np.asarray(values)
    if len(sorted_rows) == 0:
        return np.zeros(values.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_rows, values), len(sorted_rows) - 1)
    return sorted_rows[pos] == values


def list_scores(combined: Sequence[Sequence[int]], fallback: np.ndarray) -> np.ndarray:
    """Full score matrix: list items score above everything, in list order; the rest keep `fallback` order."""
    scores = np.asarray(fallback, dtype=np.float64).copy()  # (B, n), cosines in [-1, 1]
    for b, cols in enumerate(combined):
        scores[b, list(cols)] = LIST_BONUS + np.arange(len(cols), 0, -1)
    return scores


def rows_to_scores(ranked_rows: Sequence[np.ndarray], cat_rows: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """`list_scores` for lists of catalog rows: the rows as columns of the (ascending) category rows. (B, n_cat)"""
    cols = [np.searchsorted(cat_rows, r).tolist() for r in ranked_rows]  # cat_rows ascending (Catalog.rows)
    return list_scores(cols, fallback)
