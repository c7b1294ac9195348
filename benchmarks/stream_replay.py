"""New items on the stream, before and after retraining: the delta's purchases replayed at their own times.

Two workdirs over the same shoppers (medium-s0-stream is medium-s0 cut at 2023-10-01):
- `--stream-workdir`: built on the stream set's base (`fashionrec run`), then the delta batch applied as
  `fashionrec update` applies it (done here if its bundle lacks the batch). Its serving bundle is scored as it stands:
  the base's models, the new items added to the catalog, the title table, the search log and the activity windows.
  Nothing was retrained. This is "before retraining".
- `--retrained-workdir`: `fashionrec run` on the whole of medium-s0: its ID and title models refitted on the data up to
  its test period, the ID model weekly through it, its ranker trained on its validation period. This is "after
  retraining" (a weekly refit, not a nightly one: the closest this machine affords).

The requests are the retrained workdir's test targets (the delta's purchases from its test start on; the earlier ones
are its validation data), each with the shopper's history before it. Each row ranks them with the evaluation's
scorers (tested equal to the service), with an as-of query memory, ties counted against the target. "new items"
are the purchases of items the delta brought (released after the cut).

    python benchmarks/stream_replay.py --stream-workdir /tmp/wstream --retrained-workdir /tmp/wmed
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from evaluation.baselines import LastSearchScorer, PopularityConfig, PopularityScorer
from evaluation.factories import as_of_memory, ranker_scorer
from evaluation.metrics import evaluate, metrics_from_ranks
from evaluation.periods import by_fit
from feature_repo.layout import Layout
from feature_repo.schema import CanonicalTables
from models.catalog import Catalog
from models.ranker.model import LearnedRanker
from orchestration.resources import WorkdirResource
from orchestration.update import apply_update
from serving.bundle import bundle_has_batch
from serving.registry import SERVING, Registry

ROOT = Path(__file__).resolve().parents[1]
STREAM = ROOT.parent / "shared" / "data" / "synthetic" / "medium-s0-stream"
BATCH = "delta-replay"


def ensure_update(workdir: Path, data: Path) -> Path:
    """The stream workdir's bundle with the delta applied (`fashionrec update`'s steps), applied here if needed."""
    reg = Registry.of(workdir)
    current = reg.current(SERVING)
    if current is None:
        raise typer.BadParameter(f"{workdir} has no serving bundle: run `fashionrec run --data {data}` there first")
    if not bundle_has_batch(current, BATCH):
        batch = workdir / "inbox" / BATCH
        batch.mkdir(parents=True, exist_ok=True)
        for name in ("items", "events", "search_results"):
            shutil.copy(data / f"{name}_delta.parquet", batch / f"{name}.parquet")
        t = time.perf_counter()
        report = apply_update(workdir, batch)
        typer.echo(f"update applied in {time.perf_counter() - t:.0f} s: {report.summary()}")
        current = reg.current(SERVING)
    return current.path


def main(stream_workdir: Annotated[Path, typer.Option(help="Built on the stream set's base")] = Path("/tmp/wstream"),
         retrained_workdir: Annotated[Path, typer.Option(help="Built on the whole set")] = Path("/tmp/wmed"),
         data: Annotated[Path, typer.Option(help="The stream set (base files and *_delta.parquet)")] = STREAM,
         json_out: Annotated[Path | None, typer.Option("--json", help="Write the table here")] = None) -> None:
    bundle = Layout(ensure_update(stream_workdir.resolve(), data))
    new_items = set(pd.read_parquet(data / "items_delta.parquet", columns=["item_id"])["item_id"])
    wd = WorkdirResource(workdir=str(retrained_workdir))
    targets = wd.layout.test_targets()
    typer.echo(f"{len(targets):,} delta purchases replayed ({targets['target_ts'].min()} .. "
               f"{targets['target_ts'].max()}), {targets['target_item_id'].isin(new_items).sum():,} of new items")

    rows: dict[str, dict] = {}

    def score(name: str, scorer, catalog: Catalog) -> None:  # noqa: ANN001
        t = time.perf_counter()
        r = evaluate(name, scorer, targets, catalog, progress=False).rankings
        new = r["target_item_id"].isin(new_items).to_numpy()
        rows[name] = {"all": metrics_from_ranks(r["target_rank"].to_numpy(), 10),
                      "new": metrics_from_ranks(r["target_rank"].to_numpy()[new], 10),
                      "seconds": round(time.perf_counter() - t, 1)}
        typer.echo(f"{name}: R@10 {rows[name]['all']['recall@10']:.4f}, new items {rows[name]['new']['recall@10']:.4f}")

    # Before retraining: the updated bundle, as served.
    items = pd.read_parquet(bundle.items)
    before = Catalog.from_items(items)
    score("ranker, before retraining (base models + update)",
          ranker_scorer(bundle, before, LearnedRanker.load(bundle.ranker), memory=as_of_memory(bundle)), before)
    # After retraining: the whole set's workdir, each target by the ID fit of its week.
    catalog = wd.catalog()
    model, memory = LearnedRanker.load(wd.layout.ranker), as_of_memory(wd.layout)
    score("ranker, after retraining (weekly refits)",
          by_fit(wd.layout, lambda lay: ranker_scorer(lay, catalog, model, memory=memory)), catalog)
    tables = CanonicalTables.read(stream_workdir / "canonical")  # the base plus the delta
    pop = PopularityScorer(tables.events, before, PopularityConfig())
    score("last-search", LastSearchScorer(tables.search_results, pop, before), before)
    score("popularity", pop, before)

    typer.echo("\n| method | R@10 | N@10 | R@10, new items | N@10, new items | eval s |\n|---|---|---|---|---|---|")
    for name, m in rows.items():
        typer.echo(f"| {name} | {m['all']['recall@10']:.4f} | {m['all']['ndcg@10']:.4f} | {m['new']['recall@10']:.4f} "
                   f"| {m['new']['ndcg@10']:.4f} | {m['seconds']} |")
    b, a = (rows[k]["new"]["recall@10"] for k in list(rows)[:2])
    typer.echo(f"\nnew-item R@10 before retraining / after: {b / max(a, 1e-12):.2f}x (target >= 0.8x)")
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    typer.run(main)
