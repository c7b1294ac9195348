"""The learned ranking stage against every other recommender, on one finished workdir, in one run.

Assumes `fashionrec run` already ran into `--workdir` (the ID models, the text side, the variant ranker). In this
run, on the workdir's split: fits the LambdaMART ranker on the validation targets (candidate generation, features,
training, each timed), evaluates it and every comparison row on the test targets (title-only / mixup + variants,
last-search, popularity, CORE-trm, SASRec-CE), and prints one table with the ceiling (synthetic sets), ratios, the
cold-start R@10, the candidate recall per source, the top feature importances, and the serving latency of the ranking
stage per request as a ratio against the variant re-rank (`OnlineRetriever`, one request at a time, same requests).

    python benchmarks/ranker.py --workdir /tmp/wmed --data /work/shared/data/synthetic/medium-s0
    python benchmarks/ranker.py --workdir /tmp/wsample            # the bundled sample (small-s0)
    python benchmarks/ranker.py --workdir /tmp/wh --data /work/shared/data/real/hm --format hm
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch
import typer

from evaluation.baselines import LastSearchScorer, PopularityConfig, PopularityScorer
from evaluation.factories import ranker_scorer, retrieval_scorer
from evaluation.metrics import evaluate, targets_ceiling
from evaluation.periods import by_fit, parts
from evaluation.ranking import candidate_recall, fit_on_targets, ranker_targets
from evaluation.retrieval import VariantScorer
from evaluation.seqrec import SeqScorer
from feature_repo.layout import Layout
from feature_repo.schema import CanonicalTables
from feature_repo.splits import fit_layouts, read_protocol
from models.catalog import Catalog
from models.ranker.model import RankerConfig
from models.retrieval import RetrievalConfig
from models.seqrec import ID_MODEL, load_checkpoint
from models.text import load_title_model
from models.text.memory import AsOfMemory
from models.variants import VariantRanker
from orchestration.resources import WorkdirResource
from serving.recommend import OnlineRetriever, context_from_features
from serving.vectorstore import VectorStore

SAMPLE = Path(__file__).resolve().parents[1] / "feature_repo" / "sample"


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1e3, q)) if seconds else float("nan")


def main(workdir: Annotated[Path, typer.Option(help="Workdir `fashionrec run` wrote")] = Path("work"),
         data: Annotated[Path, typer.Option(help="Dataset dir (its oracle gives the ceiling)")] = SAMPLE,
         format: Annotated[str, typer.Option(help="canonical | hm | amazon2018 (only canonical has a ceiling)")]
         = "canonical",
         latency_requests: Annotated[int, typer.Option(help="Requests timed per serving path")] = 100,
         test_fit: Annotated[str, typer.Option(help="The fit whose lists and features the ranker reads on test: "
                                                    "test (the refit, as served) | val (the first fit, to measure "
                                                    "what the refit brings)")] = "test") -> None:
    torch.set_num_threads(1)
    wd = WorkdirResource(workdir=str(workdir))
    tables = CanonicalTables.read(wd.canonical)
    catalog = Catalog.from_items(tables.items)
    targets = pd.read_parquet(wd.layout.eval_targets)
    val = targets[targets["split"] == "val"].reset_index(drop=True)
    test = targets[targets["split"] == "test"].reset_index(drop=True)
    protocol, _ = read_protocol(wd.layout.splits)
    typer.echo(f"{workdir}: {format} data {data}, protocol {protocol}, {len(val)} validation / {len(test)} test "
               f"targets ({test['cold_start'].mean():.1%} cold)")

    rows: list[tuple[str, dict, float]] = []
    t0 = time.perf_counter()
    val_lay, test_lay = wd.layout.at("val"), wd.layout.at(test_fit)  # type: ignore[arg-type]
    val_memory = AsOfMemory.build(tables.search_results, load_title_model(val_lay.title_model))
    encoder = load_title_model(test_lay.title_model)
    memory = AsOfMemory.build(tables.search_results, encoder)  # one as-of memory for every test row and the latency
    setup_s = time.perf_counter() - t0
    model, ex = fit_on_targets(ranker_scorer(val_lay, catalog, memory=val_memory), ranker_targets(val, RankerConfig()),
                               RankerConfig(), progress=True)
    fit_s = model.info.get("seconds", float("nan"))  # LightGBM alone (the navigational copies' examples apart)
    # Each test target through the ID model's fit of its period (rolling refits: `evaluation.periods`).
    scorer = by_fit(test_lay, lambda lay: ranker_scorer(lay, catalog, model, memory=memory))
    t1 = time.perf_counter()
    m = evaluate("ranker", scorer, test, catalog, progress=True).metrics
    rows.append(("ranker", m, time.perf_counter() - t1))
    test_recall = candidate_recall(parts(scorer))[0]

    variant = VariantRanker.load(wd.layout.variant_ranker)
    for name, cfg in (("title-only + variants", RetrievalConfig(mode="title_only")),
                      ("mixup + variants", RetrievalConfig(mode="mixup", n=1))):
        t1 = time.perf_counter()
        s = by_fit(test_lay, lambda lay, c=cfg: VariantScorer(retrieval_scorer(lay, catalog, c, memory), catalog,
                                                              variant))
        m = evaluate(name, s, test, catalog, progress=False).metrics
        rows.append((name, m, time.perf_counter() - t1))
    pop = PopularityScorer(tables.events, catalog, PopularityConfig())
    for name, s in (("last-search", LastSearchScorer(tables.search_results, pop, catalog)), ("popularity", pop)):
        t1 = time.perf_counter()
        rows.append((name, evaluate(name, s, test, catalog, progress=False).metrics, time.perf_counter() - t1))
    for name in ("core-trm", "sasrec-ce"):
        if not test_lay.model(name).exists():
            continue
        fits = fit_layouts(test_lay)  # a model refitted once has no earlier fits: its one checkpoint scores all
        rolled = all(lay.model(name).exists() for _, lay in fits)

        def seq(lay: Layout, name: str = name) -> SeqScorer:
            ck = load_checkpoint(lay.model(name))
            return SeqScorer(ck.model, ck.vocab, catalog)

        s = by_fit(test_lay, seq) if rolled else seq(test_lay)
        t1 = time.perf_counter()
        rows.append((name, evaluate(name, s, test, catalog, progress=False).metrics, time.perf_counter() - t1))

    oracle = targets_ceiling(data if format == "canonical" else None, test, protocol)
    base = {n: m for n, m, _ in rows}
    ref = base["title-only + variants"]["overall"]["ndcg@10"]
    best_other = max((m["overall"]["ndcg@10"], n) for n, m, _ in rows if n != "ranker")
    typer.echo(f"\ntest lists and features from the {test_fit} fit; the ranker was fitted on the val fit's")
    typer.echo("\n| method | R@10 | N@10 | MRR | cold R@10 | warm N@10 | N@10 / title-only+variants | N@10 / ceiling "
               "| eval s |")
    typer.echo("|---|---|---|---|---|---|---|---|---|")
    if oracle:
        o = oracle["all"]
        typer.echo(f"| ceiling (oracle, these targets) | {o['exp_recall10']:.4f} | {o['exp_ndcg10']:.4f} | "
                   f"{o['exp_mrr']:.4f} | {oracle.get('cold', {}).get('exp_recall10', float('nan')):.4f} | | | 1.000 | |")
    for name, m, secs in rows:
        a, c, w = m["overall"], m["cold_start"], m["warm"]
        frac = f"{a['ndcg@10'] / oracle['all']['exp_ndcg10']:.3f}" if oracle else ""
        typer.echo(f"| {name} | {a['recall@10']:.4f} | {a['ndcg@10']:.4f} | {a['mrr']:.4f} | {c['recall@10']:.4f} | "
                   f"{w['ndcg@10']:.4f} | {a['ndcg@10'] / max(ref, 1e-12):.2f} | {frac} | {secs:.1f} |")
    r = base["ranker"]["overall"]["ndcg@10"]
    typer.echo(f"\nranker N@10 {r:.4f}: {r / max(ref, 1e-12):.2f}x title-only + variants, "
               f"{r / max(best_other[0], 1e-12):.2f}x the best other row ({best_other[1]}), "
               + (f"{r / base['popularity']['overall']['ndcg@10']:.2f}x popularity" if "popularity" in base else ""))
    typer.echo("\ncandidate recall (share of targets whose bought item is a candidate):")
    typer.echo("| source | validation | test |\n|---|---|---|")
    for s in test_recall:
        typer.echo(f"| {s} | {ex.recall[s]:.3f} | {test_recall[s]:.3f} |")
    typer.echo(f"mean candidates per target: validation {ex.mean_candidates:.0f}, test {scorer.mean_candidates():.0f}")
    typer.echo(f"\nwall time: setup {setup_s:.1f} s, candidates + features on {len(val)} validation targets "
               f"{ex.seconds:.1f} s, training {fit_s:.1f} s ({len(model.boosters)} boosters, "
               f"held-out NDCG@10 {model.info.get('held_out_ndcg@10', float('nan'))}), "
               f"test evaluation {rows[0][2]:.1f} s")
    typer.echo("top 12 features by gain: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                     list(model.importances().items())[:12]))
    if test_fit == "test":  # the collections hold the test fit
        latency(wd, catalog, test, scorer, variant, encoder, memory, latency_requests, test_lay)


def latency(wd: WorkdirResource, catalog: Catalog, test: pd.DataFrame, scorer, variant, encoder, memory,  # noqa: ANN001
            n: int, lay) -> None:  # noqa: ANN001
    """Per request, in process, over the Qdrant collections: the ranking stage against the variant re-rank
    (requests replayed at their target times with the as-of memory)."""
    from models.seqrec.vectors import query_vectors

    ck = load_checkpoint(lay.model(ID_MODEL))
    sample = test.sample(min(n, len(test)), random_state=0)
    store = VectorStore.local(wd.root / "qdrant")  # the test fit's collections
    kw = dict(memory=memory, id_items=ck.vocab.to_list())
    paths = {"variant re-rank (mixup + variants)": OnlineRetriever(
                 store, catalog.items, encoder, lambda h: query_vectors(ck.model, ck.vocab, h), variant,
                 RetrievalConfig(k=10), **kw),
             "ranking stage": OnlineRetriever(
                 store, catalog.items, encoder, lambda h: query_vectors(ck.model, ck.vocab, h), None,
                 RetrievalConfig(k=10), ranking=scorer.stage, **kw)}
    out = {}
    for name, online in paths.items():
        secs, stages = [], []
        for row in sample.itertuples(index=False):
            feats = {c: [list(getattr(row, c))] for c in ("seq_actions", "seq_item_ids", "seq_queries",
                                                          "seq_search_ids", "seq_timestamps")}
            ctx = context_from_features(feats, category=row.category, at=pd.Timestamp(row.target_ts))
            t = time.perf_counter()
            rec = online.recommend(ctx)
            secs.append(time.perf_counter() - t)
            stages.append(rec.timings_ms)
        out[name] = secs
        per_stage = pd.DataFrame(stages).median().round(2).to_dict()
        typer.echo(f"{name}: p50 {percentile_ms(secs, 50):.1f} ms, p95 {percentile_ms(secs, 95):.1f} ms "
                   f"(n={len(secs)}); median per stage {per_stage}")
    store.close()
    a, b = out["ranking stage"], out["variant re-rank (mixup + variants)"]
    typer.echo(f"ranking stage / variant re-rank: p50 {percentile_ms(a, 50) / percentile_ms(b, 50):.2f}x, "
               f"p95 {percentile_ms(a, 95) / percentile_ms(b, 95):.2f}x")


if __name__ == "__main__":
    typer.run(main)
