"""One incremental update: what a sensor tick does for each new inbox batch, and what `fashionrec update` runs.

For a batch folder `<inbox>/<name>/`:
1. append it to the canonical tables (`feature_repo.incremental.apply_batch`: validated, quarantined with reasons,
   idempotent by content hash);
2. rebuild the feature tables and materialize Feast over the batch's interval only (from its earliest new event),
   so the online store holds the users' new events;
3. publish a new serving bundle derived from the current one (`serving.bundle.update_bundle`): the new items in the
   title and ID collections, the query memory with the new searches; serving swaps to it on its next request;
4. move the folder to `<inbox>/processed/`.
Nothing is retrained here; the schedule does that.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from feature_repo.features import write_feature_tables
from feature_repo.incremental import BatchResult, applied, apply_batch, batch_digest
from feature_repo.layout import Layout
from feature_repo.schema import CanonicalTables
from feature_repo.store import FeatureRepo
from models.seqrec import ID_MODEL
from serving.config import Settings

PROCESSED = "processed"


@dataclass
class UpdateReport:
    batch: BatchResult
    bundle: str | None = None  # the serving bundle version published for it
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [self.batch.summary()]
        if self.bundle:
            lines.append(f"serving bundle {self.bundle} published")
        lines += self.notes
        lines.append("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.timings_s.items()))
        return "\n".join(lines)


def pending_batches(inbox: Path) -> list[Path]:
    """Batch folders waiting in the inbox, in name order (name them by time to keep arrival order)."""
    if not inbox.is_dir():
        return []
    return sorted(p for p in inbox.iterdir() if p.is_dir() and p.name != PROCESSED and not p.name.startswith("."))


def apply_update(workdir: Path, batch_dir: Path, repo: FeatureRepo | None = None, id_model: str = ID_MODEL,
                 publish: bool = True) -> UpdateReport:
    """Run the steps of the module docstring for one batch folder.

    Safe to kill at any point and run again: the append is idempotent by content hash, the feature tables are
    rebuilt whole, and a batch whose bundle was not published yet (the registry's current bundle lacks it) gets its
    features, Feast interval and bundle on the next run, once."""
    from serving.bundle import bundle_has_batch, update_bundle
    from serving.registry import SERVING, Registry

    layout = Layout(Path(workdir).resolve())
    t0 = time.perf_counter()
    result = apply_batch(batch_dir, layout.canonical)
    report = UpdateReport(result)
    report.timings_s["ingest"] = time.perf_counter() - t0
    entry = next((e for e in applied(layout.canonical) if e["digest"] == result.digest), {})
    brought_rows = sum(entry.get("appended", result.appended).values()) > 0
    can_publish = publish and layout.model(id_model).exists()
    unpublished = can_publish and not bundle_has_batch(Registry(layout.registry).current(SERVING), result.name)
    if result.already_applied and brought_rows and unpublished:
        report.notes.append(f"batch {result.name} was appended before but its bundle was not published: completing")
    if brought_rows and (not result.already_applied or unpublished):
        t = time.perf_counter()
        tables = CanonicalTables.read(layout.canonical)
        write_feature_tables(tables.items, tables.events, layout.features)
        report.timings_s["features"] = time.perf_counter() - t
        first_event = entry.get("first_event", result.first_event)
        if first_event is not None:
            t = time.perf_counter()
            repo = repo or FeatureRepo(layout.features, layout.feast, online_store=Settings().online_store)
            repo.materialize_interval(pd.Timestamp(first_event))
            report.timings_s["feast"] = time.perf_counter() - t
        if can_publish:
            t = time.perf_counter()
            version, _ = update_bundle(layout.root, result.name, id_model, Settings().collections)
            report.bundle = version.version
            report.timings_s["bundle"] = time.perf_counter() - t
        elif publish:
            report.notes.append(f"no {id_model} model in {layout.root}: serving bundle not updated (run "
                                "`fashionrec run` once first)")
    _move_processed(batch_dir, result.digest)
    report.timings_s["total"] = time.perf_counter() - t0
    return report


def _move_processed(batch_dir: Path, digest: str) -> Path:
    done = batch_dir.parent / PROCESSED
    done.mkdir(exist_ok=True)
    target = done / batch_dir.name
    if target.exists():
        target = done / f"{batch_dir.name}-{digest}"
        if target.exists():
            shutil.rmtree(target)
    shutil.move(str(batch_dir), target)
    return target


def batch_key(batch_dir: Path) -> str:
    """The sensor's run key for a batch: its name and content hash (a changed batch is a new run)."""
    return f"{batch_dir.name}:{batch_digest(batch_dir)}"
