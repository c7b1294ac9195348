"""Helpers every offline scorer shares: the per-category batches `evaluate` iterates, and ranked lists as scores."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from models.catalog import Catalog

LIST_BONUS = 3.0  # listed items score above this; every cosine is <= 1


def category_batches(targets: pd.DataFrame, catalog: Catalog, batch_size: int = 256
                     ) -> Iterator[tuple[str, np.ndarray, pd.DataFrame, np.ndarray]]:
    """(category, target positions, batch, the category's catalog rows) per category (sorted) and batch, in the
    order `evaluate` scores them."""
    for cat, idx in targets.groupby("category", sort=True).indices.items():
        cat_rows = catalog.rows[cat]
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            yield cat, b, targets.iloc[b], cat_rows


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
