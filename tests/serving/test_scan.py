"""The half-precision pre-scan (`serving.scan.ScanTable`): the same rows and scores as a float32 scan of the whole
table, ties included, within the error bound it relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serving.scan import HALF_EPS, ScanTable


def _table(n: int, d: int, seed: int, unit: bool = True) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True) if unit else x * 0.3


def _full(matrix: np.ndarray, v: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    scores = matrix @ v
    floor = np.partition(scores, len(scores) - m)[len(scores) - m]
    top = np.flatnonzero(scores >= floor)
    return top, scores[top]


@pytest.mark.parametrize(("d", "unit"), [(128, True), (64, True), (64, False)])
def test_the_pre_scan_finds_the_full_scans_rows_and_scores(d: int, unit: bool) -> None:
    matrix = _table(20_000, d, seed=d, unit=unit)
    table = ScanTable.build(np.arange(len(matrix)), matrix, min_rows=1000)
    assert table.half is not None
    rng = np.random.default_rng(1)
    for trial in range(30):
        v = matrix[rng.integers(len(matrix))] + rng.standard_normal(d).astype(np.float32) * 0.2  # (d,) not unit
        m = (1, 10, 105)[trial % 3]
        got, scores = table.top(v, m)
        want, want_scores = _full(matrix, v, m)
        assert got.tolist() == want.tolist(), trial
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-6)  # the last bit may differ (subset BLAS)
        # The bound the pre-scan relies on holds over every row.
        approx = torch.mv(table.half, torch.from_numpy(v).half()).float().numpy()
        assert np.abs(approx - matrix @ v).max() <= HALF_EPS * np.linalg.norm(v) * table.max_norm / 4


def test_ties_at_the_cut_are_all_returned_and_small_tables_scan_in_float32() -> None:
    base = _table(5000, 32, seed=3)
    matrix = np.concatenate([base, base[:50], base[:50]])  # rows 0-49 three times: exact ties everywhere
    table = ScanTable.build(np.arange(len(matrix)), matrix, min_rows=1000)
    v = base[7]
    got, scores = table.top(v, 2)  # row 7 and its two copies tie at the top: all three, not two
    assert got.tolist() == [7, 5007, 5057] and np.all(scores == scores[0])
    small = ScanTable.build(np.arange(100), base[:100])
    assert small.half is None and small.top(v, 1)[0].tolist() == [7]
    empty = ScanTable.empty(32)
    assert empty.top(v, 5)[0].size == 0
