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
from feature_repo.incremental import BatchResult, apply_batch, batch_digest
from feature_repo.schema import CanonicalTables
from feature_repo.store import FeatureRepo

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


def apply_update(workdir: Path, batch_dir: Path, repo: FeatureRepo | None = None, id_model: str = "core-trm",
                 publish: bool = True) -> UpdateReport:
    """Run the steps of the module docstring for one batch folder."""
    from serving.bundle import update_bundle

    workdir = Path(workdir).resolve()
    t0 = time.perf_counter()
    result = apply_batch(batch_dir, workdir / "canonical")
    report = UpdateReport(result)
    report.timings_s["ingest"] = time.perf_counter() - t0
    if not result.already_applied and sum(result.appended.values()):
        t = time.perf_counter()
        tables = CanonicalTables.read(workdir / "canonical")
        write_feature_tables(tables.items, tables.events, workdir / "features")
        report.timings_s["features"] = time.perf_counter() - t
        if result.first_event is not None:
            t = time.perf_counter()
            repo = repo or FeatureRepo(workdir / "features", workdir / "feast")
            repo.materialize_interval(pd.Timestamp(result.first_event))
            report.timings_s["feast"] = time.perf_counter() - t
        if publish:
            if (workdir / "models" / f"{id_model}.pt").exists():
                t = time.perf_counter()
                version, _ = update_bundle(workdir, result.new_items, result.name, id_model)
                report.bundle = version.version
                report.timings_s["bundle"] = time.perf_counter() - t
            else:
                report.notes.append(f"no {id_model} model in {workdir}: serving bundle not updated (run "
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
