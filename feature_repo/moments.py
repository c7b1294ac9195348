"""A moment is (user, timestamp) at the data's own resolution; the dataset's resolution is recorded beside it.

H&M and Amazon 2018 give days, so a day's basket is one moment: the order of the rows inside it is not known, and
nothing at a target's moment may be visible to that target (its history is every event strictly before its
timestamp). The synthetic sets are timed to the millisecond. `infer_resolution` names the coarsest unit that every
timestamp of a table is a whole multiple of; the loaders declare theirs. `canonical/dataset.json` records it with the
source and the load report, and the reports print it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

Resolution = Literal["day", "s", "ms"]
RESOLUTIONS: tuple[str, ...] = ("day", "s", "ms")
_UNIT_MS = {"day": 86_400_000, "s": 1_000, "ms": 1}
INFO_FILE = "dataset.json"


def infer_resolution(timestamps: pd.Series) -> Resolution:
    """The coarsest of day / s / ms that every (non-null) timestamp is a whole multiple of (UTC); "ms" if empty."""
    t = pd.to_datetime(timestamps, utc=True).dropna()
    if t.empty:
        return "ms"
    ms = pd.DatetimeIndex(t).as_unit("ms").asi8  # (n,) epoch ms
    for name in RESOLUTIONS:
        if np.all(ms % _UNIT_MS[name] == 0):
            return name  # type: ignore[return-value]
    return "ms"


def resolution_note(resolution: str) -> str:
    """One sentence for reports: what a moment is at this resolution."""
    if resolution == "day":
        return ("Timestamps are days: a user's whole day (a basket) is one moment, and nothing bought on a target's "
                "day is visible to it.")
    unit = {"s": "second", "ms": "millisecond"}.get(resolution, resolution)
    return f"Timestamps are to the {unit}: a moment is a user's events at one {unit}."


@dataclass(frozen=True)
class DatasetInfo:
    """What the canonical tables came from: the input format and path, the timestamp resolution, the load report."""

    format: str
    source: str
    resolution: str
    load_report: dict = field(default_factory=dict)

    def write(self, canonical_dir: Path) -> Path:
        path = Path(canonical_dir) / INFO_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True, default=str))
        return path

    @classmethod
    def read(cls, canonical_dir: Path) -> DatasetInfo | None:
        """The recorded info, or None for a workdir written before it existed."""
        path = Path(canonical_dir) / INFO_FILE
        if not path.exists():
            return None
        d = json.loads(path.read_text())
        return cls(**{k: d[k] for k in ("format", "source", "resolution") if k in d}, load_report=d.get("load_report", {}))


def dataset_resolution(canonical_dir: Path, events: pd.DataFrame | None = None) -> str:
    """The recorded resolution of a workdir's canonical tables; inferred from `events` when none was recorded."""
    info = DatasetInfo.read(canonical_dir)
    if info is not None:
        return info.resolution
    if events is None:
        events = pd.read_parquet(Path(canonical_dir) / "events.parquet", columns=["timestamp"])
    return infer_resolution(events["timestamp"])
