"""Small helpers every layer shares: UTC times as epoch nanoseconds, and unit-length rows."""

from __future__ import annotations

import numpy as np
import pandas as pd


def utc(ts: pd.Timestamp | str | int) -> pd.Timestamp:
    """A UTC timestamp; integers are epoch milliseconds, naive input is taken as UTC."""
    ts = pd.Timestamp(ts, unit="ms") if isinstance(ts, int | np.integer) else pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def to_ns(times: object) -> np.ndarray:
    """UTC epoch nanoseconds (n,) int64 of timestamps; integers are epoch milliseconds, naive input is UTC."""
    arr = np.asarray(times)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64) * 1_000_000
    return pd.DatetimeIndex(pd.to_datetime(pd.Series(arr), utc=True)).as_unit("ns").asi8.copy()


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero). (n, d) float32."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))  # (n, d)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
