"""Feast definitions: entities, file sources, feature views and the versioned feature services.

`build_definitions(feature_dir)` makes them for any workdir; the module-level objects serve the plain `feast apply`
CLI and read the feature folder from `FASHIONREC_FEATURE_DIR` (default `../work/features`).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, Int64, String

ITEM_STRING_FEATURES = (
    "title", "brand", "category", "subcategory", "color", "size", "material", "gender", "season", "occasion",
)  # fmt: skip


OFFLINE_STORES = ("duckdb", "spark")


def build_definitions(feature_dir: Path, online_items: bool = False, offline_store: str = "duckdb"
                      ) -> dict[str, object]:
    """All Feast objects for feature parquet files under `feature_dir`, keyed by name.

    `offline_store`: "duckdb" (FileSource, the default) or "spark" (SparkSource over the same parquet files, for
    Feast's Spark offline store: `feature_repo.store.FeatureRepo(offline_store="spark")`).

    `online_items` also materializes item attributes to the online store. It is off by default: Feast's SQLite
    writer costs about 1 ms per item and feature (230k items: minutes), and serving reads item cards from the
    catalog and the Qdrant payloads. Turn it on with Redis, the scale path.
    """
    feature_dir = Path(feature_dir).resolve()
    if offline_store not in OFFLINE_STORES:
        raise ValueError(f"offline store {offline_store!r}: one of {', '.join(OFFLINE_STORES)}")
    if offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        def source(name: str, path: str, timestamp_field: str) -> object:
            return SparkSource(name=name, path=path, file_format="parquet", timestamp_field=timestamp_field)
    else:
        source = FileSource  # type: ignore[assignment]
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="A shopper")
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="A catalog item")
    item_source = source(
        name="item_features_source", path=str(feature_dir / "item_features.parquet"),
        timestamp_field="event_timestamp",
    )
    seq_source = source(
        name="user_sequence_source", path=str(feature_dir / "user_sequence.parquet"),
        timestamp_field="event_timestamp",
    )
    activity = Entity(name="activity", join_keys=["activity_key"], value_type=ValueType.STRING,
                      description="An item, a product family or a category attribute value (feature_repo.activity)")
    activity_source = source(
        name="activity_windows_source", path=str(feature_dir / "activity_windows.parquet"),
        timestamp_field="event_timestamp",
    )
    activity_windows = FeatureView(
        name="activity_windows",
        entities=[activity],
        ttl=timedelta(0),
        schema=[Field(name=n, dtype=Int64) for n in ("n_7d", "n_30d", "buy_7d", "buy_30d")],
        source=activity_source,
        online=online_items,  # per-item aggregates: the SQLite writer is too slow for them (see above)
        description="Clicks + purchases and purchases in the 7 and 30 days before each day (daily snapshots)",
    )
    item_attributes = FeatureView(
        name="item_attributes",
        entities=[item],
        ttl=timedelta(0),  # attributes never expire
        schema=[Field(name=n, dtype=String) for n in ITEM_STRING_FEATURES] + [Field(name="price", dtype=Float64)],
        source=item_source,
        online=online_items,
        description="Catalog attributes, valid from the item's created_at",
    )
    user_sequence = FeatureView(
        name="user_sequence",
        entities=[user],
        ttl=timedelta(0),
        schema=[
            Field(name="seq_actions", dtype=Array(String)),
            Field(name="seq_item_ids", dtype=Array(String)),
            Field(name="seq_queries", dtype=Array(String)),
            Field(name="seq_search_ids", dtype=Array(Int64)),
            Field(name="seq_timestamps", dtype=Array(Int64)),
        ],
        source=seq_source,
        description="The user's last N actions (search/click/purchase), oldest first; timestamps in epoch ms",
    )
    sequence_training = FeatureService(
        name="sequence_training_v1",
        features=[user_sequence[["seq_actions", "seq_item_ids", "seq_timestamps"]]],
        description="What the sequential ID models read: the item sequence and its times",
    )
    prompt_context = FeatureService(
        name="prompt_context_v1",
        features=[user_sequence],
        description="What prompt building reads per user: actions, items, queries and search ids",
    )
    item_context = FeatureService(
        name="item_context_v1",
        features=[item_attributes],
        description="Item attributes for prompts and retrieval payloads",
    )
    ranking_context = FeatureService(
        name="ranking_context_v1",
        features=[activity_windows],
        description="What the ranking stage reads per candidate: popularity, its trend and attribute trends",
    )
    objs = [user, item, activity, item_source, seq_source, activity_source, item_attributes, user_sequence,
            activity_windows, sequence_training, prompt_context, item_context, ranking_context]
    return {o.name: o for o in objs}


_defs = build_definitions(
    Path(os.environ.get("FASHIONREC_FEATURE_DIR", Path(__file__).parent / "../work/features")),
    online_items=os.environ.get("FASHIONREC_ONLINE_ITEMS", "0") == "1",
)
user = _defs["user"]
item = _defs["item"]
item_attributes = _defs["item_attributes"]
user_sequence = _defs["user_sequence"]
sequence_training_v1 = _defs["sequence_training_v1"]
prompt_context_v1 = _defs["prompt_context_v1"]
item_context_v1 = _defs["item_context_v1"]
activity_windows = _defs["activity_windows"]
ranking_context_v1 = _defs["ranking_context_v1"]
