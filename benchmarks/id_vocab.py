"""The ID models' vocabulary threshold (`min_count`), their loss (full or sampled softmax) and the refit, measured
on one finished workdir.

Assumes `fashionrec run` already ran into `--workdir` (it wrote both fits' training sequences under `seqrec/`). For
each `min_count` and model, in this run: the val fit (early-stopped on the validation targets) and the test refit
(`models.seqrec.pipeline.fit_and_refit`), then on the test targets:
- the model's own row (full ranking, pessimistic ties: items without a row tie on the cold row), overall and warm;
- the ID list as the ranking stage reads it (top 30 by cosine over the items with a row, `RetrievalScorer` with
  `id_known`): its recall@30 on test targets;
- the same model scored by the val fit alone (no refit), to show what the refit brings;
- the vocabulary size, the share of warm test targets left on the cold row, and the wall time of each fit.
Popularity's warm N@10 from the workdir's `eval/popularity` is the baseline of the ratio column. `--negatives 0,1024`
sweeps the loss too: 0 is the full softmax over the item vocabulary, N a sampled softmax over N shared negatives per
batch (`--sampled-negatives` of `fashionrec run`), with the fit times beside the quality.

With `--rolling DAYS,...` (temporal protocol), for the first model and `min_count`: rolling refits through the test
window, as a nightly or weekly retrain would run. Every DAYS from the test cut, the model is warm-started from the
previous one (`warm_start`: the rows of items both vocabularies hold are kept) and trained `--rolling-epochs` epochs
on every sequence before that time (Feast, point in time); each test target is scored by the latest refit before
it. The table gives the share of warm test targets the scoring model has a row for, and the same metrics.

    python benchmarks/id_vocab.py --workdir /tmp/wmed [--min-counts 1,2,3] [--models core-trm,sasrec-ce]
    python benchmarks/id_vocab.py --workdir /tmp/wmed --min-counts 1 --negatives 0,256,1024
    python benchmarks/id_vocab.py --workdir /tmp/wmed --min-counts 1 --rolling 28,14,7
    python benchmarks/id_vocab.py --workdir /tmp/wmed --min-counts 2 --rolling 7 --reuse-refit  # from the run's refit
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch
import typer

from evaluation.metrics import evaluate, summarize
from evaluation.retrieval import RetrievalScorer
from evaluation.seqrec import SeqScorer
from feature_repo.splits import fit_index, read_protocol, refit_times
from models.catalog import Catalog
from models.retrieval import RetrievalConfig
from models.seqrec import TrainConfig
from models.seqrec.checkpoint import load_checkpoint
from models.seqrec.pipeline import Fit, fit_and_refit, rolling_refits
from models.seqrec.train import TrainResult
from models.seqrec.vectors import item_vectors, query_vectors
from orchestration.resources import FeastResource, TrainingResource, WorkdirResource

ID_K = 30  # the ranking stage's ID list length (CandidateConfig.id_k)


def id_list_recall(fit: Fit, catalog: Catalog, test: pd.DataFrame, k: int = ID_K) -> float:
    """Share of test targets in the top-k ID list over the items the fit has a row for (no title side)."""
    ids = item_vectors(fit.model, fit.vocab, catalog.item_ids)
    scorer = RetrievalScorer(catalog, ids, np.zeros((len(ids), 1), np.float32),
                             lambda h: query_vectors(fit.model, fit.vocab, h),
                             lambda batch, *_: np.zeros((len(batch), 1), np.float32),
                             RetrievalConfig(mode="id_only", k=k), id_known=fit.vocab.known(catalog.item_ids))
    hits = 0
    for cat, idx in test.groupby("category").indices.items():
        rows = catalog.rows[cat]
        batch = test.iloc[idx]
        top = scorer.sources(batch, rows).id_top  # (B, k) columns, -1 = PAD
        target_cols = pd.Index(catalog.item_ids[rows]).get_indexer(batch["target_item_id"])
        hits += int((top == target_cols[:, None]).any(axis=1).sum())
    return hits / max(len(test), 1)


def main(workdir: Annotated[Path, typer.Option(help="Workdir `fashionrec run` wrote")] = Path("work"),
         min_counts: Annotated[str, typer.Option(help="Comma-separated thresholds")] = "1,2,3",
         models: Annotated[str, typer.Option(help="Comma-separated ID models")] = "core-trm",
         epochs: Annotated[int, typer.Option(help="Max epochs of the val fit")] = 10,
         negatives: Annotated[str, typer.Option(help="Comma-separated losses: 0 full softmax, N sampled over N "
                                                     "negatives")] = "0",
         rolling: Annotated[str, typer.Option(help="Rolling refit cadences in days (temporal), e.g. 28,14,7")] = "",
         rolling_epochs: Annotated[int, typer.Option(help="Epochs of each warm-started rolling refit")] = 2,
         reuse_refit: Annotated[bool, typer.Option(help="With --rolling: start from the run's own test refit "
                                                        "(models/<model>.pt) instead of fitting the sweep")] = False,
         json_out: Annotated[Path | None, typer.Option("--json", help="Write the rows here")] = None) -> None:
    torch.set_num_threads(2)
    wd = WorkdirResource(workdir=str(workdir))
    lay = wd.layout
    catalog = wd.catalog()
    val, test = lay.val_targets(), lay.test_targets()
    protocol, _ = read_protocol(lay.splits)
    hist = {p: pd.read_parquet(lay.at(p).train_history) for p in ("val", "test")}  # type: ignore[arg-type]
    pop = json.loads((lay.eval / "popularity" / "metrics.json").read_text())
    pop_warm = pop["warm"]["ndcg@10"]
    warm = ~test["cold_start"].to_numpy(bool)
    training = TrainingResource(epochs=epochs, progress=False)
    typer.echo(f"{workdir}: protocol {protocol}, {len(val)} validation / {len(test)} test targets "
               f"({warm.mean():.1%} warm); popularity warm N@10 {pop_warm:.4f}")
    rows, refits = [], {}
    if reuse_refit:
        name, mc = models.split(",")[0], int(min_counts.split(",")[0])
        first_fit = lay.refit(0).model(name)  # a run with rolling refits keeps the test cut's fit there
        refits[(name, mc)] = saved_refit(first_fit if first_fit.exists() else lay.model(name))
        rows.append(saved_row(refits[(name, mc)], name, mc, catalog, test, warm))
    sweep = [(name, mc, neg) for name in models.split(",") for mc in (int(x) for x in min_counts.split(","))
             for neg in (int(x) for x in negatives.split(","))]
    for name, mc, neg in [] if reuse_refit else sweep:
        t0 = time.perf_counter()
        cfg: TrainConfig = replace(training.train_config(), sampled_negatives=neg)
        first, refit = fit_and_refit(name, hist["val"], hist["test"], val, cfg, mc, **training.model_overrides())
        refits.setdefault((name, mc), refit)  # --rolling starts from the first loss of the sweep
        row = {"model": name, "min_count": mc, "negatives": neg, "vocab_val": len(first.vocab),
               "vocab_test": len(refit.vocab),
               "best_epoch": first.result.best_epoch, "fit_s": first.result.total_seconds,
               "refit_s": refit.result.total_seconds, "wall_s": time.perf_counter() - t0}
        row["warm_on_cold_row"] = float(1 - refit.vocab.known(test["target_item_id"][warm]).mean())
        for label, fit in (("refit", refit), ("val_fit", first)):
            m = evaluate(name, SeqScorer(fit.model, fit.vocab, catalog), test, catalog, progress=False).metrics
            row[f"{label}_ndcg"] = m["overall"]["ndcg@10"]
            row[f"{label}_warm_ndcg"] = m["warm"]["ndcg@10"]
            row[f"{label}_id_recall30"] = id_list_recall(fit, catalog, test)
        rows.append(row)
        typer.echo(f"  {name} min_count={mc} negatives={neg or 'all'}: refit warm N@10 {row['refit_warm_ndcg']:.4f}, "
                   f"ID list R@30 {row['refit_id_recall30']:.3f} ({row['wall_s']:.0f} s)")
    typer.echo("\n| model | min_count | softmax | vocab (val / test) | warm targets on the cold row | N@10 | warm N@10 | "
               "warm N@10 / popularity | ID list R@30 | val fit only: warm N@10 / ID R@30 | best epoch | "
               "fit s | refit s |")
    typer.echo("|" + "---|" * 13)
    for r in [] if reuse_refit else rows:
        loss = f"sampled, {r['negatives']:,}" if r["negatives"] else "full"
        typer.echo(f"| {r['model']} | {r['min_count']} | {loss} | {r['vocab_val']:,} / {r['vocab_test']:,} | "
                   f"{r['warm_on_cold_row']:.1%} | {r['refit_ndcg']:.4f} | {r['refit_warm_ndcg']:.4f} | "
                   f"{r['refit_warm_ndcg'] / max(pop_warm, 1e-12):.2f} | {r['refit_id_recall30']:.3f} | "
                   f"{r['val_fit_warm_ndcg']:.4f} / {r['val_fit_id_recall30']:.3f} | {r['best_epoch']} | "
                   f"{r['fit_s']:.0f} | {r['refit_s']:.0f} |")
    if rolling:
        name, mc = models.split(",")[0], int(min_counts.split(",")[0])
        refit = refits[(name, mc)]
        base = next(r for r in rows if r["model"] == name and r["min_count"] == mc)
        out = [{"cadence_days": None, "refits": 1, "warm_known": 1 - base["warm_on_cold_row"],
                "ndcg": base["refit_ndcg"], "warm_ndcg": base["refit_warm_ndcg"],
                "id_recall30": base["refit_id_recall30"], "refit_s": base["refit_s"]}]
        for days in (float(d) for d in rolling.split(",")):
            out.append(rolling_run(wd, name, mc, refit, test, catalog, days, rolling_epochs, training))
            r = out[-1]
            typer.echo(f"  every {days} d: {r['refits']} refits, warm N@10 {r['warm_ndcg']:.4f} ({r['refit_s']:.0f} s)")
        typer.echo(f"\nrolling refits of {name} (min_count {mc}, {rolling_epochs} warm-started epochs each), test "
                   "targets scored by the latest refit before them:")
        typer.echo("| refit cadence | refits | warm targets with a row | N@10 | warm N@10 | warm N@10 / popularity | "
                   "ID list R@30 | refit s |")
        typer.echo("|" + "---|" * 8)
        for r in out:
            cadence = "once, at the test cut" if r["cadence_days"] is None else f"every {r['cadence_days']} days"
            typer.echo(f"| {cadence} | {r['refits']} | {r['warm_known']:.1%} | {r['ndcg']:.4f} | {r['warm_ndcg']:.4f} | "
                       f"{r['warm_ndcg'] / max(pop_warm, 1e-12):.2f} | {r['id_recall30']:.3f} | {r['refit_s']:.0f} |")
        rows.append({"rolling": out})
    if json_out:
        json_out.write_text(json.dumps(rows, indent=2))


def saved_refit(path: Path) -> Fit:
    """The test refit a run saved, as a `Fit` (its training time is not in the checkpoint: 0)."""
    ck = load_checkpoint(path)
    cfg = ck.train_config or TrainConfig()
    return Fit(ck.model, ck.vocab, cfg, TrainResult((), (), {}, cfg.epochs - 1, (), 0.0, "cpu"))


def saved_row(fit: Fit, name: str, mc: int, catalog: Catalog, test: pd.DataFrame, warm: np.ndarray) -> dict:
    """The metrics of a saved refit, keyed like a sweep row."""
    m = evaluate(name, SeqScorer(fit.model, fit.vocab, catalog), test, catalog, progress=False).metrics
    return {"model": name, "min_count": mc, "refit_ndcg": m["overall"]["ndcg@10"],
            "refit_warm_ndcg": m["warm"]["ndcg@10"], "refit_id_recall30": id_list_recall(fit, catalog, test),
            "warm_on_cold_row": float(1 - fit.vocab.known(test["target_item_id"][warm]).mean()), "refit_s": 0.0}


def rolling_run(wd: WorkdirResource, name: str, min_count: int, start: Fit, test: pd.DataFrame, catalog: Catalog,
            days: float, epochs: int, training: TrainingResource) -> dict:
    """Warm-started refits every `days` from the test cut (`models.seqrec.pipeline.rolling_refits`, the pipeline's
    own); each test target scored by the latest one before it."""
    _, cuts = read_protocol(wd.layout.splits)
    repo = FeastResource(workdir=str(wd.root)).repo()
    users = pd.Series(pd.read_parquet(wd.layout.events, columns=["user_id"])["user_id"].unique())
    starts = refit_times(cuts["test"], pd.to_datetime(test["target_ts"], utc=True).max(), days)
    period = fit_index(test["target_ts"], starts)  # (n,) the fit of each target
    warm = ~test["cold_start"].to_numpy(bool)
    t0 = time.perf_counter()
    histories = (repo.history_before(users, pd.Series([t] * len(users)), service="sequence_training_v1")
                 for t in starts[1:])
    fits = [start, *rolling_refits(name, start, histories, epochs, min_count, **training.model_overrides())]
    seconds = time.perf_counter() - t0
    parts, known, hits = [], np.zeros(len(test), bool), 0.0
    for k, fit in enumerate(fits):
        rows = np.flatnonzero(period == k)
        if not len(rows):
            continue
        sub = test.iloc[rows].reset_index(drop=True)
        parts.append(evaluate(name, SeqScorer(fit.model, fit.vocab, catalog), sub, catalog, progress=False).rankings)
        known[rows] = fit.vocab.known(sub["target_item_id"])
        hits += id_list_recall(fit, catalog, sub) * len(sub)
    m = summarize(name, pd.concat(parts, ignore_index=True))
    return {"cadence_days": days, "refits": len(fits), "warm_known": float(known[warm].mean()),
            "ndcg": m["overall"]["ndcg@10"], "warm_ndcg": m["warm"]["ndcg@10"], "id_recall30": hits / len(test),
            "refit_s": start.result.total_seconds + seconds}


if __name__ == "__main__":
    typer.run(main)
