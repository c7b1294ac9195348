"""Input formats that map into the canonical tables: `canonical` (parquet), `hm` and `amazon2018`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from feature_repo.moments import DatasetInfo, infer_resolution
from feature_repo.schema import CanonicalTables

FORMATS = ("canonical", "hm", "amazon2018")
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample"


def load_with_info(data_dir: Path, fmt: str = "canonical") -> tuple[CanonicalTables, DatasetInfo]:
    """Read a dataset in format `fmt` as (unvalidated) canonical tables, with where it came from and its timestamp
    resolution: declared by the hm and amazon2018 loaders (days), inferred from the events for canonical parquet."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FileNotFoundError(f"data directory {data_dir} does not exist")
    if fmt == "canonical":
        tables = CanonicalTables.read(data_dir)
        return tables, DatasetInfo(fmt, str(data_dir), infer_resolution(tables.events["timestamp"]))
    if fmt == "hm":
        from feature_repo.loaders.hm import load_hm_with_report

        tables, report = load_hm_with_report(data_dir)
    elif fmt == "amazon2018":
        from feature_repo.loaders.amazon2018 import load_amazon2018_with_report

        tables, report = load_amazon2018_with_report(data_dir)
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    return tables, DatasetInfo(fmt, str(data_dir), report.resolution, asdict(report))


def load(data_dir: Path, fmt: str = "canonical") -> CanonicalTables:
    """Read a dataset in format `fmt` as (unvalidated) canonical tables."""
    return load_with_info(data_dir, fmt)[0]
