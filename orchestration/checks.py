"""Asset checks: row counts, referential integrity, and point-in-time safety of the evaluation histories."""

import numpy as np
import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from feature_repo.ingest import REPEAT
from feature_repo.layout import PERIODS
from feature_repo.schema import CanonicalTables
from feature_repo.splits import read_splits, training_cutoffs
from orchestration.assets.data import canonical_tables, eval_targets, splits
from orchestration.assets.seqrec import seqrec_sequences
from orchestration.resources import WorkdirResource


@asset_check(asset=canonical_tables, description="Every table has rows and at most 5% of input rows were quarantined "
             "as faulty (repeats in one moment, one action of several units, are counted apart)")
def canonical_row_counts(workdir: WorkdirResource) -> AssetCheckResult:
    t = CanonicalTables.read(workdir.canonical)
    counts = {n: len(df) for n, df in t.as_dict().items()}
    reasons = {n: pd.read_parquet(workdir.canonical / "quarantine" / f"{n}.parquet", columns=["reason"])["reason"]
               for n in counts}
    repeats = {n: int((r == REPEAT).sum()) for n, r in reasons.items()}
    share = {n: (len(reasons[n]) - repeats[n]) / max(1, len(reasons[n]) + counts[n]) for n in counts}
    ok = counts["items"] > 0 and counts["events"] > 0 and max(share.values()) <= 0.05
    return AssetCheckResult(passed=bool(ok), metadata={**counts, "repeat_in_moment": repeats["events"],
                                                       **{f"quarantined_share_{n}": round(s, 4) for n, s in share.items()}})


@asset_check(asset=canonical_tables, description="Every event and search result points at a catalog item / search")
def referential_integrity(workdir: WorkdirResource) -> AssetCheckResult:
    t = CanonicalTables.read(workdir.canonical)
    items = pd.Index(t.items["item_id"])
    ev_items = t.events["item_id"].dropna()
    bad_events = int((~ev_items.isin(items)).sum())
    bad_results = int((~t.search_results["item_id"].isin(items)).sum())
    searches = pd.Index(t.events["search_id"].dropna())
    orphan = int((~t.search_results["search_id"].isin(searches)).sum())
    return AssetCheckResult(passed=bad_events + bad_results + orphan == 0,
                            metadata={"unknown_event_items": bad_events, "unknown_result_items": bad_results,
                                      "orphan_results": orphan})


@asset_check(asset=splits, description="Temporal protocol: every training event is before the validation cut, and "
             "every target at or after it; leave-one-out: each user's training events precede their first target",
             blocking=True)
def training_before_targets(workdir: WorkdirResource) -> AssetCheckResult:
    s = read_splits(workdir.layout.splits)
    train_ts = pd.to_datetime(s.train_events["timestamp"], utc=True)
    if s.protocol == "temporal":
        late = int((train_ts >= s.cuts["val"]).sum())
        early = int((pd.to_datetime(s.targets["target_ts"], utc=True) < s.cuts["val"]).sum())
    else:
        first = s.targets.groupby("user_id")["target_ts"].min()
        limit = s.train_events["user_id"].map(first)
        late = int((limit.notna() & (train_ts >= pd.to_datetime(limit, utc=True))).sum())
        early = 0
    return AssetCheckResult(passed=late + early == 0, severity=AssetCheckSeverity.ERROR,
                            metadata={"protocol": s.protocol, "train_events_after_cut": late,
                                      "targets_before_cut": early})


@asset_check(asset=eval_targets, description="No history event is at or after its target's timestamp",
             blocking=True)
def point_in_time_safety(workdir: WorkdirResource) -> AssetCheckResult:
    t = pd.read_parquet(workdir.layout.eval_targets)
    target_ms = pd.to_datetime(t["target_ts"], utc=True).astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    latest = np.array([max(s) if len(s) else np.iinfo("int64").min for s in t["seq_timestamps"]])
    leaks = int((latest >= target_ms).sum())
    return AssetCheckResult(passed=leaks == 0, severity=AssetCheckSeverity.ERROR,
                            metadata={"targets": len(t), "targets_with_future_history": leaks})


@asset_check(asset=seqrec_sequences, description="Each fit's ID training sequences end before its cut: the val fit's "
             "before the validation targets, the test refit's before the test targets, each rolling refit's before "
             "its start", blocking=True)
def fits_before_their_targets(workdir: WorkdirResource) -> AssetCheckResult:
    lay = workdir.layout
    s = read_splits(lay.splits)
    events = pd.read_parquet(lay.events, columns=["user_id", "timestamp"])
    meta: dict = {"protocol": s.protocol}

    def late(path, cut: pd.Series) -> int:  # noqa: ANN001
        hist = pd.read_parquet(path, columns=["user_id", "seq_timestamps"])
        limit_ms = pd.to_datetime(hist["user_id"].map(cut), utc=True).astype("datetime64[ms, UTC]").astype("int64")
        latest = np.array([max(t) if len(t) else np.iinfo("int64").min for t in hist["seq_timestamps"]])
        return int((latest >= limit_ms.to_numpy()).sum())

    for period in PERIODS:
        cut = training_cutoffs(s, events, period).set_index("user_id")["cutoff_ts"]
        meta[f"{period}_users_with_events_at_or_after_cut"] = late(lay.at(period).train_history, cut)
    users = events["user_id"].unique()
    for k, start in enumerate(s.refits[1:], start=1):
        meta[f"refit_{k}_users_with_events_at_or_after_cut"] = late(lay.refit(k).train_history,
                                                                    pd.Series(start, index=users))
    late_total = sum(v for k, v in meta.items() if k.endswith("_cut"))
    return AssetCheckResult(passed=late_total == 0, severity=AssetCheckSeverity.ERROR, metadata=meta)
