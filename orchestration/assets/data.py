"""Data assets: canonical tables, feature tables, the Feast store, splits and evaluation targets."""

import json
import time

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from feature_repo.features import write_feature_tables
from feature_repo.incremental import replay_batches
from feature_repo.ingest import ingest
from feature_repo.loaders import load_with_info
from feature_repo.moments import resolution_note
from feature_repo.schema import CanonicalTables
from feature_repo.splits import (
    make_splits,
    record_test_sample,
    record_user_share,
    with_test_sample,
    with_training_users,
    write_splits,
)
from orchestration.jobs import STORE_TAG
from orchestration.resources import (
    DatasetResource,
    FeastResource,
    ProtocolResource,
    TrainingResource,
    WorkdirResource,
)
from orchestration.update import PROCESSED


@asset(group_name="data", description="Validated canonical items/events/search_results; bad rows quarantined")
def canonical_tables(context: AssetExecutionContext, dataset: DatasetResource, workdir: WorkdirResource):
    t0 = time.perf_counter()
    raw, info = load_with_info(dataset.path, dataset.format)
    report = ingest(raw, workdir.canonical)
    info.write(workdir.canonical)
    context.log.info(f"ingest ({info.resolution} resolution; {resolution_note(info.resolution)}):\n" + report.summary())
    replayed = replay_batches(workdir.canonical, workdir.inbox_dir / PROCESSED)  # what the inbox brought since
    for b in replayed:
        context.log.info("replayed " + b.summary())
    meta = {f"kept_{k}": v for k, v in report.kept.items()}
    meta |= {f"quarantined_{k}": sum(v.values()) for k, v in report.quarantined.items()}
    meta["quarantine_reasons"] = MetadataValue.json(report.quarantined)
    meta["source"] = f"{dataset.format}:{dataset.path}"
    meta["resolution"] = info.resolution
    if info.load_report:
        meta["load_report"] = MetadataValue.json(info.load_report)
    meta["replayed_batches"] = MetadataValue.json([b.name for b in replayed])
    meta["seconds"] = round(time.perf_counter() - t0, 2)
    return MaterializeResult(metadata=meta)


@asset(group_name="data", deps=[canonical_tables], description="Feature parquet for Feast: item attributes, user sequences")
def feature_tables(workdir: WorkdirResource):
    t0 = time.perf_counter()
    tables = CanonicalTables.read(workdir.canonical)
    counts = write_feature_tables(tables.items, tables.events, workdir.features)
    return MaterializeResult(metadata={**counts, "seconds": round(time.perf_counter() - t0, 2)})


@asset(group_name="data", deps=[feature_tables], op_tags={STORE_TAG: "feast"},
       description="feast apply + materialize into the SQLite online store")
def feast_online_store(feast: FeastResource):
    t0 = time.perf_counter()
    repo = feast.repo()
    names = repo.apply()
    t1 = time.perf_counter()
    repo.materialize()
    return MaterializeResult(metadata={
        "registered": MetadataValue.json(names),
        "apply_seconds": round(t1 - t0, 2),
        "materialize_seconds": round(time.perf_counter() - t1, 2),
    })


@asset(group_name="data", deps=[canonical_tables],
       description="Purchase targets and training events: temporal cut dates (default) or leave-one-out")
def splits(workdir: WorkdirResource, protocol: ProtocolResource, training: TrainingResource):
    tables = CanonicalTables.read(workdir.canonical)
    s = make_splits(tables.events, tables.items, protocol.protocol, val_frac=protocol.val_frac,
                    test_frac=protocol.test_frac, min_count=training.min_count,  # min_count: the warm-but-rare flag
                    refit_every_days=protocol.refit_every_days)
    users = s.train_events["user_id"].nunique()
    s = with_training_users(s, training.user_share, training.seed)
    s, n_test = with_test_sample(s, protocol.max_test_targets)  # seed 0 whatever the models' seed: same targets
    write_splits(s, workdir.layout.splits)
    record_user_share(workdir.layout.splits, training.user_share, training.seed, s.train_events["user_id"].nunique(),
                      users)
    record_test_sample(workdir.layout.splits, int((s.targets["split"] == "test").sum()), n_test, 0)
    counts = s.targets.groupby("split").agg(n=("user_id", "size"), cold=("cold_start", "mean"),
                                            warm_rare=("warm_rare", "mean"))
    return MaterializeResult(metadata={
        "protocol": s.protocol,
        **{f"{k}_cut": v.isoformat() for k, v in s.cuts.items()},
        "fit_layouts": max(len(s.refits), 1),
        "test_targets_evaluated": f"{int((s.targets['split'] == 'test').sum()):,} of {n_test:,}",
        "targets": MetadataValue.json(json.loads(counts.round(4).to_json(orient="index"))),
        "train_events": len(s.train_events),
        "training_users": f"{s.train_events['user_id'].nunique():,} of {users:,} (share {training.user_share:g})",
        "train_items": len(s.train_items),
        "last_train_event": str(s.train_events["timestamp"].max()),
    })


@asset(group_name="data", deps=[splits, feast_online_store],
       description="Targets with each user's history strictly before the target (Feast point-in-time join)")
def eval_targets(workdir: WorkdirResource, feast: FeastResource):
    t0 = time.perf_counter()
    targets = pd.read_parquet(workdir.layout.targets)
    hist = feast.repo().history_before(targets["user_id"], targets["target_ts"])
    out = pd.concat([targets, hist.drop(columns="user_id")], axis=1)
    out.to_parquet(workdir.layout.ensure(workdir.layout.eval_targets), index=False)
    return MaterializeResult(metadata={"rows": len(out), "seconds": round(time.perf_counter() - t0, 2)})
