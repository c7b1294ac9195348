"""Triggers: a nightly retrain schedule, a sensor on the input catalog, and the inbox sensor with its
incremental job (one run per batch: new items servable before any retraining)."""

from pathlib import Path

import pyarrow.parquet as pq
from dagster import (
    AssetMaterialization,
    AssetSelection,
    Config,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    MetadataValue,
    OpExecutionContext,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    job,
    op,
    sensor,
)

from orchestration.resources import DatasetResource, FeastResource, WorkdirResource

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


class BatchConfig(Config):
    batch_dir: str  # an inbox batch folder (items/events/search_results parquet in the canonical schema)


@op(description="Append one inbox batch: canonical tables, Feast over its interval, a new serving bundle")
def apply_inbox_batch(context: OpExecutionContext, config: BatchConfig, workdir: WorkdirResource,
                      feast: FeastResource) -> dict:
    from orchestration.update import apply_update

    report = apply_update(workdir.root, Path(config.batch_dir), feast.repo())
    context.log.info(report.summary())
    b = report.batch
    meta = {"batch": b.name, "digest": b.digest, "already_applied": b.already_applied,
            "appended": MetadataValue.json(b.appended), "quarantined": MetadataValue.json(b.quarantined),
            "new_items": len(b.new_items), "timings_s": MetadataValue.json({k: round(v, 3)
                                                                            for k, v in report.timings_s.items()})}
    context.log_event(AssetMaterialization(asset_key="canonical_tables", description=b.summary(), metadata=meta))
    if report.bundle:
        context.log_event(AssetMaterialization(asset_key="serving_bundle", metadata={"version": report.bundle,
                                                                                       "reason": f"batch {b.name}"}))
    return {"batch": b.name, "bundle": report.bundle, "timings_s": report.timings_s}


@job(description="One inbox batch, end to end, without retraining (the inbox sensor starts one run per batch)")
def incremental_update():
    apply_inbox_batch()


@sensor(job=incremental_update, minimum_interval_seconds=30, default_status=DefaultSensorStatus.STOPPED,
        description="Each new folder in the inbox becomes one incremental_update run (run key: name and content)")
def inbox_batches(context: SensorEvaluationContext, workdir: WorkdirResource):
    from orchestration.update import batch_key, pending_batches

    batches = pending_batches(workdir.inbox_dir)
    if not batches:
        return SkipReason(f"no batch waiting in {workdir.inbox_dir}")
    return [RunRequest(run_key=batch_key(b), tags={"batch": b.name},
                       run_config={"ops": {"apply_inbox_batch": {"config": {"batch_dir": str(b)}}}})
            for b in batches]
