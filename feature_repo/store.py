"""A Feast `FeatureStore` per workdir: apply, materialize, point-in-time history and online lookups.

The online store is SQLite under the workdir by default; `online_store="redis://host:port[/db]"` selects Redis, the
scale path (callers pass `serving.config.Settings.online_store`, `FASHIONREC_ONLINE_STORE`).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
from feast import FeatureStore, RepoConfig
from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

from feature_repo.definitions import build_definitions
from feature_repo.features import JUST_BEFORE, SEQ_FEATURES

PROJECT = "fashionrec"


class FeatureRepo:
    """Feast over DuckDB (offline, the feature parquet) and SQLite (online), all under `feast_dir`."""

    def __init__(self, feature_dir: Path, feast_dir: Path, online_path: Path | None = None,
                 online_items: bool = False, online_store: str | None = None, offline_store: str = "duckdb"):
        self.feature_dir = Path(feature_dir).resolve()
        self.feast_dir = Path(feast_dir).resolve()
        self.feast_dir.mkdir(parents=True, exist_ok=True)
        self.online_store_url = online_store
        self.config = RepoConfig(
            project=PROJECT,
            provider="local",
            registry=str(self.feast_dir / "registry.db"),
            offline_store=offline_store_config(offline_store),
            online_store=online_store_config(self.online_store_url, online_path or self.feast_dir / "online_store.db"),
            entity_key_serialization_version=3,
            repo_path=self.feast_dir,
        )
        self.store = FeatureStore(config=self.config)
        self._services: dict[str, object] = {}
        self.online_items_enabled = online_items
        self.offline_store = offline_store
        self.definitions = build_definitions(self.feature_dir, online_items=online_items, offline_store=offline_store)

    def apply(self) -> list[str]:
        """Register entities, views and services (idempotent)."""
        self.store.apply(list(self.definitions.values()))
        self._services.clear()
        return sorted(self.definitions)

    def service(self, name: str):  # noqa: ANN201
        """A feature service, cached: the registry lookup costs ~10x an online read of one user."""
        if name not in self._services:
            self._services[name] = self.store.get_feature_service(name)
        return self._services[name]

    def materialize(self, end: pd.Timestamp | None = None) -> None:
        """Load the latest feature values up to `end` (default: now) into the online store."""
        end = end or pd.Timestamp.now(tz="UTC")
        start = pd.Timestamp("1970-01-02", tz="UTC")
        self.store.materialize(start_date=start.to_pydatetime(), end_date=end.to_pydatetime())

    def materialize_interval(self, start: pd.Timestamp, end: pd.Timestamp | None = None) -> None:
        """Load only the feature rows with timestamps in [start, end] (an incremental batch's interval)."""
        end = end or pd.Timestamp.now(tz="UTC")
        start = pd.Timestamp(start)
        start = start.tz_localize("UTC") if start.tzinfo is None else start
        self.store.materialize(start_date=(start - pd.Timedelta(milliseconds=1)).to_pydatetime(),
                               end_date=end.to_pydatetime())

    def history_before(self, users: pd.Series, times: pd.Series, service: str = "prompt_context_v1") -> pd.DataFrame:
        """Point-in-time join: each user's sequence features from events strictly before the given time."""
        entity_df = pd.DataFrame(
            {"user_id": users.to_numpy(), "event_timestamp": pd.to_datetime(times, utc=True).to_numpy() - JUST_BEFORE}
        )
        entity_df["event_timestamp"] = entity_df["event_timestamp"].dt.tz_localize("UTC") \
            if entity_df["event_timestamp"].dt.tz is None else entity_df["event_timestamp"]
        entity_df["_row"] = range(len(entity_df))
        fs = self.service(service)
        out = self.store.get_historical_features(entity_df=entity_df, features=fs).to_df()
        out = out.sort_values("_row").drop(columns=["_row", "event_timestamp"]).reset_index(drop=True)
        for col in SEQ_FEATURES:
            if col in out.columns:  # no event before the time: empty history, not None
                out[col] = [list(v) if v is not None and not _isna(v) else [] for v in out[col]]
        return out

    def activity_as_of(self, keys: list[str], times: pd.Series | list) -> pd.DataFrame:
        """Point-in-time join of the activity windows (`ranking_context_v1`): each key's counts as of each time
        (zeros for a key without a row by then). Columns `feature_repo.activity.COUNTS`, in input order."""
        from feature_repo.activity import COUNTS, KEY

        entity_df = pd.DataFrame({KEY: list(keys), "event_timestamp": pd.to_datetime(pd.Series(list(times)), utc=True)})
        entity_df["_row"] = range(len(entity_df))
        out = self.store.get_historical_features(entity_df=entity_df,
                                                 features=self.service("ranking_context_v1")).to_df()
        out = out.sort_values("_row").reset_index(drop=True)
        return out[list(COUNTS)].fillna(0).astype("int64")

    def online(self, user_ids: list[str], service: str = "prompt_context_v1") -> dict[str, list]:
        """Latest materialized features for `user_ids` from the online store."""
        rows = [{"user_id": u} for u in user_ids]
        return self.store.get_online_features(features=self.service(service), entity_rows=rows).to_dict()

    def online_items(self, item_ids: list[str]) -> dict[str, list]:
        """Item attributes from the online store (only when built with `online_items=True`)."""
        if not self.online_items_enabled:
            raise RuntimeError("item attributes are not materialized online; build FeatureRepo(online_items=True)")
        rows = [{"item_id": i} for i in item_ids]
        return self.store.get_online_features(features=self.service("item_context_v1"), entity_rows=rows).to_dict()


SPARK_CONF = {  # Spark in local mode on this machine; a cluster sets spark.master (and its own resources) instead
    "spark.master": "local[2]",
    "spark.ui.enabled": "false",
    "spark.eventLog.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parser.quotedRegexColumnNames": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.fallback.enabled": "true",
    "spark.driver.memory": "2g",
}


def offline_store_config(kind: str, spark_conf: dict[str, str] | None = None):  # noqa: ANN201
    """DuckDB (in process, the default) or Spark (`feast[spark]`, the `spark` extra; `SPARK_CONF` updated with
    `spark_conf`, e.g. {"spark.master": "spark://host:7077"} for a cluster)."""
    if kind == "duckdb":
        return DuckDBOfflineStoreConfig()
    if kind == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkOfflineStoreConfig

        return SparkOfflineStoreConfig(spark_conf={**SPARK_CONF, **(spark_conf or {})})
    raise ValueError(f"offline store {kind!r}: expected duckdb or spark")


def online_store_config(url: str | None, sqlite_path: Path):  # noqa: ANN201
    """SQLite at `sqlite_path` for None, "" or "sqlite"; Redis for `redis://host:port[/db]`."""
    if not url or url == "sqlite":
        return SqliteOnlineStoreConfig(path=str(sqlite_path))
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise ValueError(f"online store {url!r}: expected 'sqlite' or redis://host:port[/db]")
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    parts = [f"{parsed.hostname}:{parsed.port or 6379}"]
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    if parsed.path.strip("/"):
        parts.append(f"db={int(parsed.path.strip('/'))}")
    return RedisOnlineStoreConfig(connection_string=",".join(parts))


def _isna(v: object) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False
