"""Feast's Spark offline store (pyspark in local mode) as a configuration of the same feature repo: the
point-in-time joins the asset graph runs (the evaluation targets' histories, the ID models' training sequences, the
ranker's activity windows) give what DuckDB gives, on the bundled sample's feature tables."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_repo.activity import KEY, activity_frame
from feature_repo.features import write_feature_tables
from feature_repo.schema import CanonicalTables
from feature_repo.splits import make_splits, training_cutoffs
from feature_repo.store import FeatureRepo

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java (17): none on this machine's PATH"),
    pytest.mark.skipif(importlib.util.find_spec("pyspark") is None,
                       reason="pyspark is not installed (the `spark` extra: pip install -e '.[spark]')"),
]
SAMPLE = Path(__file__).resolve().parents[2] / "feature_repo" / "sample"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureRepo, FeatureRepo, CanonicalTables]:
    root = tmp_path_factory.mktemp("spark")
    tables = CanonicalTables.read(SAMPLE)
    write_feature_tables(tables.items, tables.events, root / "features")
    duck = FeatureRepo(root / "features", root / "feast_duckdb")
    spark = FeatureRepo(root / "features", root / "feast_spark", offline_store="spark")
    duck.apply()
    spark.apply()
    return duck, spark, tables


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for c in a.columns:
        left = [list(v) if isinstance(v, list | np.ndarray) else v for v in a[c]]
        right = [list(v) if isinstance(v, list | np.ndarray) else v for v in b[c]]
        assert left == right, c


def test_spark_is_the_offline_store(repos) -> None:  # noqa: ANN001
    _, spark, _ = repos
    assert type(spark.config.offline_store).__name__ == "SparkOfflineStoreConfig"
    assert type(spark.definitions["user_sequence"].batch_source).__name__ == "SparkSource"


def test_target_histories_and_training_sequences_equal_duckdbs(repos) -> None:  # noqa: ANN001
    duck, spark, tables = repos
    splits = make_splits(tables.events, tables.items, "temporal")
    targets = splits.targets.sample(300, random_state=0) if len(splits.targets) > 300 else splits.targets
    # the evaluation targets' histories strictly before each target (`eval_targets`)
    _same(duck.history_before(targets["user_id"], targets["target_ts"]),
          spark.history_before(targets["user_id"], targets["target_ts"]))
    # the ID models' training sequences before the validation cut (`seqrec_sequences`)
    cut = training_cutoffs(splits, tables.events, "val").head(300)
    got = spark.history_before(cut["user_id"], cut["cutoff_ts"], service="sequence_training_v1")
    _same(duck.history_before(cut["user_id"], cut["cutoff_ts"], service="sequence_training_v1"), got)
    assert sum(len(s) for s in got["seq_item_ids"]) > 0


def test_activity_windows_as_of_equal_duckdbs(repos) -> None:  # noqa: ANN001
    duck, spark, tables = repos
    frame = activity_frame(tables.events, tables.items)
    rows = frame.sample(200, random_state=0)
    keys = rows[KEY].tolist()
    times = (pd.to_datetime(rows["event_timestamp"], utc=True) + pd.Timedelta(hours=12)).tolist()
    a, b = duck.activity_as_of(keys, times), spark.activity_as_of(keys, times)
    pd.testing.assert_frame_equal(a, b)
    assert a.to_numpy().sum() > 0
