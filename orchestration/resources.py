"""Dagster resources: where the input data is, where a run writes, and the Feast store over that workdir."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from feature_repo.loaders import FORMATS, SAMPLE_DIR
from feature_repo.store import FeatureRepo


class DatasetResource(ConfigurableResource):
    """The input dataset: a folder in one of the supported formats (default: the bundled sample)."""

    data_dir: str = str(SAMPLE_DIR)
    format: str = "canonical"

    @property
    def path(self) -> Path:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; expected one of {FORMATS}")
        return Path(self.data_dir)


class WorkdirResource(ConfigurableResource):
    """Everything a run writes lives under this folder."""

    workdir: str = "work"

    @property
    def root(self) -> Path:
        return Path(self.workdir).resolve()

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def canonical(self) -> Path:
        return self.root / "canonical"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def eval(self) -> Path:
        return self.root / "eval"


class FeastResource(ConfigurableResource):
    """Feast with the DuckDB offline store over `<workdir>/features` and SQLite online under `<workdir>/feast`."""

    workdir: str = "work"
    online_items: bool = False  # see feature_repo.definitions.build_definitions

    def repo(self) -> FeatureRepo:
        root = Path(self.workdir).resolve()
        return FeatureRepo(feature_dir=root / "features", feast_dir=root / "feast", online_items=self.online_items)
