"""Retraining triggers: a nightly schedule, and a sensor that fires when new catalog items arrive."""

import pyarrow.parquet as pq
from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    sensor,
)

from orchestration.resources import DatasetResource

retrain_job = define_asset_job("retrain_all", selection=AssetSelection.all(), description="Rebuild every asset")

nightly_retrain = ScheduleDefinition(
    name="nightly_retrain", job=retrain_job, cron_schedule="0 3 * * *", default_status=DefaultScheduleStatus.STOPPED
)


def catalog_fingerprint(dataset: DatasetResource) -> str | None:
    """`<rows>:<max created_at>` of the input catalog, or None if the dataset has no items parquet."""
    path = dataset.path / "items.parquet"
    if not path.exists():
        return None
    t = pq.read_table(path, columns=["item_id", "created_at"])
    latest = t.column("created_at").to_pandas().max()
    return f"{t.num_rows}:{latest.isoformat() if latest is not None else ''}"


@sensor(job=retrain_job, minimum_interval_seconds=300, default_status=DefaultSensorStatus.STOPPED,
        description="Retrain when the input catalog gains items (row count or newest created_at changes)")
def new_catalog_items(context: SensorEvaluationContext, dataset: DatasetResource):
    fingerprint = catalog_fingerprint(dataset)
    if fingerprint is None:
        return SkipReason(f"no items.parquet under {dataset.path}")
    if fingerprint == context.cursor:
        return SkipReason(f"catalog unchanged ({fingerprint})")
    context.update_cursor(fingerprint)
    return RunRequest(run_key=fingerprint, tags={"reason": "new catalog items", "catalog": fingerprint})
