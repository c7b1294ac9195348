"""Incremental ingest: a batch folder of canonical-schema parquet appended to the canonical tables, idempotently.

A batch is `<inbox>/<batch-name>/` holding any of `items.parquet`, `events.parquet` and `search_results.parquet`
(canonical columns; a missing file is an empty table). `apply_batch` validates the batch with the same rules as a
full load, over the union with what is already canonical, so references to earlier items and searches resolve and
a repeated row is a duplicate: every batch row is either appended or quarantined with its reason
(`<canonical>/quarantine/batches/<batch>/<table>.parquet`). An event older than the user's latest known event is
quarantined as `timestamp_out_of_order` (the stream's late data). Each applied batch is recorded in
`<canonical>/batches.jsonl` with the content hash of its files, so the same batch a second time changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.ingest import validate
from feature_repo.schema import SCHEMAS, TABLES, CanonicalTables, arrow_schema

LOG = "batches.jsonl"


@dataclass
class BatchResult:
    """What one batch did to the canonical tables."""

    name: str
    digest: str
    already_applied: bool = False
    appended: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, dict[str, int]] = field(default_factory=dict)
    new_items: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)  # users with appended events
    queries: list[str] = field(default_factory=list)  # queries of appended searches
    first_event: str | None = None  # the batch's earliest appended event time (ISO), for Feast's interval
    applied_at: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        if self.already_applied:
            return f"batch {self.name}: already applied (content {self.digest}), nothing changed"
        q = {t: sum(r.values()) for t, r in self.quarantined.items() if r}
        return (f"batch {self.name}: appended {self.appended}, quarantined {q or 'none'}, "
                f"{len(self.new_items)} new items, {len(self.users)} users, {len(self.queries)} queries")


def batch_digest(batch_dir: Path) -> str:
    """Content hash of a batch's table files (their names and bytes)."""
    h = hashlib.sha256()
    for name in TABLES:
        path = batch_dir / f"{name}.parquet"
        if path.exists():
            h.update(name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def read_batch(batch_dir: Path) -> CanonicalTables:
    """The batch's tables; a missing file is an empty table with the canonical columns."""
    if not batch_dir.is_dir():
        raise FileNotFoundError(f"batch folder {batch_dir} does not exist")
    present = [n for n in TABLES if (batch_dir / f"{n}.parquet").exists()]
    if not present:
        raise FileNotFoundError(f"batch {batch_dir} holds none of {', '.join(t + '.parquet' for t in TABLES)}")
    frames = {}
    for name in TABLES:
        path = batch_dir / f"{name}.parquet"
        frames[name] = (pq.read_table(path).to_pandas() if path.exists()
                        else arrow_schema(SCHEMAS[name]).empty_table().to_pandas())
    return CanonicalTables(**frames)


def applied(canonical_dir: Path) -> list[dict]:
    """The log of applied batches, oldest first."""
    path = canonical_dir / LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def apply_batch(batch_dir: Path, canonical_dir: Path) -> BatchResult:
    """Append one batch to the canonical tables (see the module docstring)."""
    t0 = time.perf_counter()
    digest = batch_digest(batch_dir)
    name = batch_dir.name
    if any(entry["digest"] == digest for entry in applied(canonical_dir)):
        return BatchResult(name, digest, already_applied=True)
    existing = CanonicalTables.read(canonical_dir)
    batch = read_batch(batch_dir)
    sizes = {n: len(df) for n, df in existing.as_dict().items()}
    union = CanonicalTables(**{n: pd.concat([existing.as_dict()[n], _columns(batch.as_dict()[n], existing.as_dict()[n])],
                                            ignore_index=True) for n in TABLES})
    clean, quarantine, _ = validate(union)
    for n, q in quarantine.items():  # existing rows were valid when they came in; they must still be
        if len(q) and (q["source_row"].astype(int) < sizes[n]).any():
            raise RuntimeError(f"batch {name} would quarantine existing {n} rows; canonical tables unchanged")
    appended = {n: len(clean.as_dict()[n]) - sizes[n] for n in TABLES}
    new_items = sorted(set(clean.items["item_id"]) - set(existing.items["item_id"]))
    rejected = set(quarantine["events"]["source_row"].astype(int)) if len(quarantine["events"]) else set()
    kept = [i for i in range(sizes["events"], len(union.events)) if i not in rejected]
    new_events = union.events.iloc[kept]
    clean.write(canonical_dir)
    qdir = canonical_dir / "quarantine" / "batches" / name
    qdir.mkdir(parents=True, exist_ok=True)
    for n, q in quarantine.items():
        table = pa.Table.from_pandas(q.astype({c: "string" for c in q.columns if c != "source_row"}),
                                     preserve_index=False)
        pq.write_table(table, qdir / f"{n}.parquet")
    searches = new_events[new_events["action"] == "search"]
    result = BatchResult(
        name, digest, appended=appended,
        quarantined={n: q["reason"].value_counts().sort_index().to_dict() for n, q in quarantine.items()},
        new_items=new_items, users=sorted(set(new_events["user_id"])),
        queries=sorted(set(searches["query"].dropna())),
        first_event=pd.to_datetime(new_events["timestamp"], utc=True).min().isoformat() if len(new_events) else None,
        applied_at=pd.Timestamp.now(tz="UTC").isoformat(), seconds=round(time.perf_counter() - t0, 3))
    entry = {k: v for k, v in asdict(result).items() if k not in ("new_items", "users", "queries")}
    entry |= {"new_items": len(new_items), "users": len(result.users), "queries": len(result.queries)}
    with (canonical_dir / LOG).open("a") as f:
        f.write(json.dumps(entry) + "\n")
    return result


def _columns(df: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """The batch's columns in the canonical order (extra columns dropped, missing ones empty)."""
    return df.reindex(columns=like.columns)


def replay_batches(canonical_dir: Path, processed_dir: Path) -> list[BatchResult]:
    """Re-apply, in their original order, the batches the log recorded (after a full re-ingest of the dataset has
    rewritten the canonical tables), so that a retrain keeps what the inbox brought. Returns one result per batch."""
    entries = applied(canonical_dir)
    if not entries:
        return []
    log = canonical_dir / LOG
    log.replace(canonical_dir / f"{LOG}.before-replay")
    out = []
    for e in entries:
        candidates = [processed_dir / e["name"], processed_dir / f"{e['name']}-{e['digest']}"]
        found = next((p for p in candidates if p.is_dir() and batch_digest(p) == e["digest"]), None)
        if found is None:
            raise FileNotFoundError(f"batch {e['name']} ({e['digest']}) is in {log} but not under {processed_dir}; "
                                    f"restore it, or remove its line from {log}.before-replay and rename that file "
                                    f"back to {LOG} to drop it")
        out.append(apply_batch(found, canonical_dir))
    return out
