"""Exact top-k over a category's vector table, with a half-precision pre-scan.

A request's ID and title searches scan their category's table (one matrix-vector product each). On medium-s0 the
clothing title table is 92k x 128 float32, 47 MB: the scan is bound by memory bandwidth, and it is the largest part
of a request. The pre-scan reads a float16 copy (half the bytes; torch's CPU kernel multiplies it with float32
accumulation) and keeps every row whose approximate score is within twice the error bound of the approximate m-th
best. Those rows are re-scored in float32 and cut at the exact m-th best, ties included.

Why it is exact: every float16 score is within `eps` of the float32 one (`HALF_EPS` times |q| times the largest
row norm: the inputs' rounding, 2 x 2^-11 relative, and the output's, 2^-11). A row among the exact top m scores at
least the exact m-th best s_m, so its approximate score is at least s_m - eps; and the approximate m-th best is at
most s_m + eps. So every such row is within 2 eps of the approximate m-th best, and is re-scored.

The re-score multiplies the kept rows only. A BLAS product over a subset of rows can round the last bit of a score
differently from the product over all of them (as the evaluation's matrix-matrix product already does against
serving's matrix-vector one); `tests/serving/test_scan.py` checks the rows and the scores against the full scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# |float16 score - float32 score| <= HALF_EPS * |q| * max|x|. The analysis gives 3 x 2^-11 (0.0015) with float32
# accumulation; 2^-7 leaves a margin of 5x for a kernel that rounds partial sums. Measured: at most 3e-4.
HALF_EPS = 2.0**-7
MIN_ROWS = 8192  # below this a float32 scan is as fast and there is nothing to gain


@dataclass(frozen=True)
class ScanTable:
    """One category's table: its catalog rows, their float32 vectors, and (large tables) a float16 copy."""

    rows: np.ndarray  # (n,) catalog rows, ascending
    matrix: np.ndarray  # (n, d) float32, C-contiguous
    half: torch.Tensor | None  # (n, d) float16, None: scanned in float32 alone
    max_norm: float  # the largest row norm (the pre-scan's error bound scales with it)

    @classmethod
    def build(cls, rows: np.ndarray, matrix: np.ndarray, min_rows: int = MIN_ROWS) -> ScanTable:
        m = np.ascontiguousarray(matrix, np.float32)
        half = torch.from_numpy(m).to(torch.float16) if len(m) >= min_rows else None
        # the largest row norm, for the error bound (einsum: no (n, d) temporary; its rounding is far inside the
        # bound's margin)
        max_norm = float(np.sqrt(np.einsum("ij,ij->i", m, m).max())) if len(m) else 0.0
        return cls(rows, m, half, max_norm)

    @classmethod
    def empty(cls, dim: int) -> ScanTable:
        return cls(np.zeros(0, np.int64), np.zeros((0, dim), np.float32), None, 0.0)

    def top(self, vector: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the table, float32 scores) of every row scoring at least the m-th best score, ties
        included, in position order. vector: (d,)."""
        n = len(self.rows)
        v = np.asarray(vector, np.float32)
        m = min(m, n)
        if n == 0 or m == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.half is None or 8 * m > n:  # every row, in float32
            kept, exact = np.arange(n), self.matrix @ v  # (n,)
        else:  # the rows the pre-scan cannot rule out, re-scored in float32
            approx = torch.mv(self.half, torch.from_numpy(v).to(torch.float16)).float().numpy()  # (n,)
            eps = HALF_EPS * float(np.linalg.norm(v)) * self.max_norm
            kept = np.flatnonzero(approx >= np.partition(approx, n - m)[n - m] - 2 * eps)  # (c,) ascending
            exact = self.matrix[kept] @ v  # (c,)
        floor = np.partition(exact, len(kept) - m)[len(kept) - m]
        keep = exact >= floor
        return kept[keep], exact[keep]
