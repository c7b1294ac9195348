"""Input formats that map into the canonical tables: `canonical` (parquet), `hm` and `amazon2018`."""

from __future__ import annotations

from pathlib import Path

from feature_repo.schema import CanonicalTables

FORMATS = ("canonical", "hm", "amazon2018")
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample"


def load(data_dir: Path, fmt: str = "canonical") -> CanonicalTables:
    """Read a dataset in format `fmt` as (unvalidated) canonical tables."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FileNotFoundError(f"data directory {data_dir} does not exist")
    if fmt == "canonical":
        return CanonicalTables.read(data_dir)
    if fmt == "hm":
        from feature_repo.loaders.hm import load_hm

        return load_hm(data_dir)
    if fmt == "amazon2018":
        from feature_repo.loaders.amazon2018 import load_amazon2018

        path = data_dir / "AMAZON_FASHION_5.json" if data_dir.is_dir() else data_dir
        return load_amazon2018(path)
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
