"""Retrieval ablation on a finished workdir: ID-only vs title-only vs mixup N=1,2,3 vs RRF vs the best baseline,
each list also re-ranked by a colour x size `VariantRanker` fitted on the workdir's validation targets.

Assumes the asset graph (incl. the `text` group) already ran into `--workdir`. Prints Recall@10/NDCG@10/MRR overall
and on cold-start targets, ratios against the best non-retrieval method in `<workdir>/eval/*/metrics.json` (by
overall NDCG@10), and memory-lookup and Qdrant-search latency p50/p99 (one query at a time).

    python benchmarks/retrieval.py --workdir /tmp/w4 --data /work/shared/data/synthetic/medium-s0 [--memory weekly]

Title lists are memory-first (`RetrievalConfig.title_list`, default) unless marked "(cosine)".
`--memory as-of` (default) looks the memory up exactly as of each target time (`AsOfMemory`); `weekly` uses the
weekly snapshots (`TimeSlicedMemory`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch
import typer

from evaluation.factories import retrieval_scorer
from evaluation.memory import TimeSlicedMemory
from evaluation.metrics import evaluate, targets_ceiling
from evaluation.periods import by_fit
from evaluation.retrieval import VariantScorer, variant_examples, variant_targets
from feature_repo.schema import CanonicalTables
from feature_repo.sequences import last_search_queries
from feature_repo.splits import fit_layouts, read_protocol
from models.catalog import Catalog
from models.retrieval import RetrievalConfig
from models.text import load_title_model
from models.text.memory import AsOfMemory
from models.text.tokenizer import normalize_text
from models.variants import ItemAttributes, VariantConfig, fit_variant_ranker
from orchestration.resources import QdrantResource, WorkdirResource

DEFAULT_DATA = Path("/work/shared/data/synthetic/medium-s0")
MODES = {
    "id-only": RetrievalConfig(mode="id_only"),
    "title-only": RetrievalConfig(mode="title_only"),
    "mixup N=1": RetrievalConfig(mode="mixup", n=1),
    "mixup N=2": RetrievalConfig(mode="mixup", n=2),
    "mixup N=3": RetrievalConfig(mode="mixup", n=3),
    "rrf": RetrievalConfig(mode="rrf"),
    # Without the seen-item filter (the user's own clicked/purchased items may fill the lists).
    "title-only (seen kept)": RetrievalConfig(mode="title_only", exclude_seen=False),
    "mixup N=1 (seen kept)": RetrievalConfig(mode="mixup", n=1, exclude_seen=False),
    # The title list by cosine alone (no memory products first), for comparison.
    "title-only (cosine)": RetrievalConfig(mode="title_only", title_list="cosine"),
    "mixup N=1 (cosine)": RetrievalConfig(mode="mixup", n=1, title_list="cosine"),
}
# Combined lists re-ranked by a `VariantRanker` fitted on the validation targets of the same workdir.
VARIANT_MODES = ("id-only", "title-only", "mixup N=1", "mixup N=2", "mixup N=3")

class Cached:
    """Memoise a query function over identical batches (every mode evaluates the same batches in the same order)."""

    def __init__(self, fn, key):  # noqa: ANN001
        self.fn, self.key, self.cache = fn, key, {}

    def __call__(self, *args):  # noqa: ANN002, ANN204
        k = self.key(*args)
        if k not in self.cache:
            self.cache[k] = self.fn(*args)
        return self.cache[k]


def best_baseline(eval_dir: Path) -> dict:
    """The non-retrieval method with the best overall NDCG@10."""
    results = [json.loads(p.read_text()) for p in eval_dir.glob("*/metrics.json")]
    results = [r for r in results if not r["method"].startswith("retrieval-")]
    return max(results, key=lambda r: r["overall"]["ndcg@10"])


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1e3
    return f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms (n={len(ms)})"


def main(workdir: Annotated[Path, typer.Option(help="Workdir the graph ran into")] = Path("work"),
         data: Annotated[Path, typer.Option(help="Dataset dir (for its oracle ceiling)")] = DEFAULT_DATA,
         latency_queries: Annotated[int, typer.Option(help="Single queries timed per latency figure")] = 200,
         memory_kind: Annotated[str, typer.Option("--memory", help="as-of (exact at each target time) or weekly")]
         = "as-of") -> None:
    """Print the retrieval ablation table and latencies."""
    torch.set_num_threads(1)
    wd = WorkdirResource(workdir=str(workdir))
    tables = CanonicalTables.read(wd.canonical)
    catalog = Catalog.from_items(tables.items)
    targets = pd.read_parquet(wd.layout.eval_targets)
    val = targets[targets["split"] == "val"].reset_index(drop=True)
    targets = targets[targets["split"] == "test"].reset_index(drop=True)
    encoder = load_title_model(wd.layout.title_model)
    t0 = time.perf_counter()
    if memory_kind == "as-of":
        memory: AsOfMemory | TimeSlicedMemory = AsOfMemory.build(tables.search_results, encoder)
        built = f"as-of memory, {len(memory)} queries"
    elif memory_kind == "weekly":
        memory = TimeSlicedMemory.build(tables.search_results, encoder)
        built = f"{len(memory.cutoffs)} weekly snapshots"
    else:
        raise typer.BadParameter(f"--memory must be as-of or weekly, not {memory_kind!r}")
    typer.echo(f"memory: {built} in {time.perf_counter() - t0:.1f} s; {len(targets)} test targets")

    # One scorer per fit of the ID model (rolling refits: each test target through its period's, `evaluation.periods`)
    per_fit = {lay: retrieval_scorer(lay, catalog, RetrievalConfig(), memory) for _, lay in fit_layouts(wd.layout)}
    val_scorer = retrieval_scorer(wd.layout.at("val"), catalog, RetrievalConfig())  # the variant rankers' lists
    for s in per_fit.values():
        s.id_queries = Cached(s.id_queries, lambda h: tuple(map(tuple, h)))
        # The evaluation passes each batch's targets (to order them last among ties): part of the key.
        s.title_queries = Cached(s.title_queries, lambda b, r, *demote: (
            tuple(b["user_id"]), b["target_ts"].iloc[0], int(r[0]), len(r), tuple(demote[0]) if demote else None))
    scorer = by_fit(wd.layout, lambda lay: per_fit[lay])
    rows = []
    for name, cfg in MODES.items():
        for s in per_fit.values():
            s.cfg = cfg
        t1 = time.perf_counter()
        m = evaluate(f"retrieval-{name}", scorer, targets, catalog, progress=False).metrics
        rows.append((name, m, time.perf_counter() - t1))

    # Variant selection: a VariantRanker per combination, fitted on the validation targets' combined lists.
    attrs = ItemAttributes.from_items(catalog.items)
    fits = []
    for name in VARIANT_MODES:
        for s in (*per_fit.values(), val_scorer):
            s.cfg = MODES[name]
        t1 = time.perf_counter()
        vcfg = VariantConfig()  # fitted as the variant_ranker asset fits it: on at most vcfg.max_targets targets
        ranker = fit_variant_ranker(variant_examples(val_scorer, variant_targets(val, vcfg), catalog,
                                                     attrs, vcfg), vcfg)
        variants = by_fit(wd.layout, lambda lay, r=ranker: VariantScorer(per_fit[lay], catalog, r, attrs))
        m = evaluate(f"retrieval-{name}+variants", variants, targets, catalog,
                     progress=False).metrics
        rows.append((f"{name} + variants", m, time.perf_counter() - t1))
        fits.append((name, ranker))

    base = best_baseline(wd.eval)
    rows.append((f"baseline: {base['method']}", base, float("nan")))
    b, bc = base["overall"], base["cold_start"]
    protocol, _ = read_protocol(wd.layout.splits)
    oracle = targets_ceiling(data, targets, protocol)
    typer.echo(f"\nDataset {data}, protocol {protocol}, workdir {workdir}; K=100, "
               f"ratios vs {base['method']} (best NDCG@10 among non-retrieval methods)\n")
    typer.echo("| method | R@10 | N@10 | MRR | cold n | cold R@10 | cold N@10 | R@10 / base | N@10 / base "
               "| cold N@10 / base | eval s |")
    typer.echo("|" + "---|" * 11)
    if oracle:
        o = oracle["all"]
        typer.echo(f"| ceiling (oracle, these targets) | {o['exp_recall10']:.4f} | {o['exp_ndcg10']:.4f} | "
                   f"{o['exp_mrr']:.4f} | | | | | {o['exp_ndcg10'] / b['ndcg@10']:.2f} | | |")
    for name, m, secs in rows:
        a, c = m["overall"], m["cold_start"]
        typer.echo(f"| {name} | {a['recall@10']:.4f} | {a['ndcg@10']:.4f} | {a['mrr']:.4f} | {c['n']} | "
                   f"{c['recall@10']:.4f} | {c['ndcg@10']:.4f} | {a['recall@10'] / b['recall@10']:.2f} | "
                   f"{a['ndcg@10'] / b['ndcg@10']:.2f} | {c['ndcg@10'] / max(bc['ndcg@10'], 1e-12):.2f} | "
                   f"{secs:.1f} |")

    typer.echo("\nVariant rankers (conditional logit on validation targets; 'used' = bought item among the candidates):")
    for name, ranker in fits:
        info = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in ranker.fit_info.items()}
        typer.echo(f"- {name}: {info}")
        typer.echo("  weights: " + ", ".join(f"{k} {v:+.2f}" for k, v in ranker.weights.items()))

    # Latency: one target at a time, as serving would see it.
    sample = targets.head(latency_queries)
    last = last_search_queries(sample["seq_actions"], sample["seq_queries"])
    searched = [(q, t) for q, t in zip(last, sample["target_ts"], strict=True) if q is not None]
    lookup = []
    for q, t in searched:
        t1 = time.perf_counter()
        if isinstance(memory, AsOfMemory):
            memory.lookup_queries([q], [t], q=5, v=10)
        else:
            memory.for_time(t).lookup([q], q=5, v=10)
        lookup.append(time.perf_counter() - t1)
    title_vectors = np.load(wd.layout.title_vectors)
    row_of = pd.Series(np.arange(len(catalog.items)), index=catalog.item_ids)
    qdrant = QdrantResource(workdir=str(workdir))
    search = []
    with qdrant.store() as store:
        for item, cat in zip(sample["target_item_id"], sample["category"], strict=True):
            vec = title_vectors[[row_of[item]]]  # (1, d) any realistic vector in the title space
            t1 = time.perf_counter()
            store.search(qdrant.title_collection, vec, 100, partition=cat)
            search.append(time.perf_counter() - t1)
    typer.echo(f"\nmemory lookup ({memory_kind}; encode query + nearest Q=5, V=10): {percentiles(lookup)}")
    if isinstance(memory, AsOfMemory) and searched:  # batched lookup of every searched test target, pre-embedded
        qs, ts = zip(*[(q, t) for q, t in zip(last_search_queries(targets["seq_actions"], targets["seq_queries"]),
                                              targets["target_ts"], strict=True) if q is not None], strict=True)
        vecs = encoder.encode([normalize_text(q) for q in qs])
        t1 = time.perf_counter()
        memory.lookup(vecs, list(ts), q=5, v=10)
        dt = time.perf_counter() - t1
        typer.echo(f"as-of memory batched lookup (no encoding): {len(qs)} targets in {dt:.2f} s "
                   f"({dt / len(qs) * 1e3:.3f} ms per target)")
    typer.echo(f"Qdrant title search (top-100, one category, local mode): {percentiles(search)}")


if __name__ == "__main__":
    typer.run(main)
