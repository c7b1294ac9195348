"""ID-model assets: training sequences from Feast, one asset per sequential model (val fit and test refit), and the
ID-embedding collection (the refit's item table: only items it has a row for)."""

import time
from dataclasses import asdict

import numpy as np
import pandas as pd
from dagster import AssetsDefinition, MaterializeResult, MetadataValue, asset

from evaluation.seqrec import SeqScorer
from feature_repo.layout import PERIODS
from feature_repo.schema import CanonicalTables
from feature_repo.sequences import item_sequences
from feature_repo.splits import Splits, read_protocol, training_cutoffs
from models.seqrec import ID_MODEL, MODELS, load_checkpoint, save_checkpoint
from models.seqrec.pipeline import fit_and_refit
from orchestration.assets.data import eval_targets
from orchestration.assets.evaluation import run_method
from orchestration.resources import FeastResource, QdrantResource, TrainingResource, WorkdirResource
from serving.id_index import max_topk_disagreement, write_id_embeddings


@asset(group_name="id_models", deps=[eval_targets],
       description="Per-user training item sequences of both fits (sequence_training_v1, point in time at each "
                   "fit's cut: before the validation targets, and before the test targets)")
def seqrec_sequences(workdir: WorkdirResource, feast: FeastResource):
    tables = CanonicalTables.read(workdir.canonical)
    protocol, cuts = read_protocol(workdir.layout.splits)
    splits = Splits(targets=pd.read_parquet(workdir.layout.targets), train_events=tables.events,
                    protocol=protocol, cuts=cuts)
    meta: dict = {"protocol": protocol}
    for period in PERIODS:
        cut = training_cutoffs(splits, tables.events, period)
        hist = feast.repo().history_before(cut["user_id"], cut["cutoff_ts"], service="sequence_training_v1")
        hist.to_parquet(workdir.layout.ensure(workdir.layout.at(period).train_history), index=False)
        lengths = pd.Series([len(s) for s in item_sequences(hist["seq_actions"], hist["seq_item_ids"])])
        meta |= {f"{period}/users": len(hist), f"{period}/mean_items": float(lengths.mean()),
                 f"{period}/users_with_2plus_items": int((lengths >= 2).sum()),
                 f"{period}/items": int(lengths.sum())}
    return MaterializeResult(metadata=meta)


def seqrec_asset(name: str) -> AssetsDefinition:
    """Fit model `name` (val fit, early-stopped), refit it before the test targets, and evaluate the refit on test."""

    @asset(name=f"seqrec_{name.replace('-', '_')}", group_name="id_models", deps=[seqrec_sequences],
           description=f"Fit {name} before the validation targets (epochs by early stopping), refit it on everything "
                       "before the test targets, evaluate the refit on test")
    def _asset(workdir: WorkdirResource, training: TrainingResource):
        lay = workdir.layout
        first, refit = fit_and_refit(name, pd.read_parquet(lay.at("val").train_history),
                                     pd.read_parquet(lay.at("test").train_history), lay.val_targets(),
                                     training.train_config(), training.min_count, **training.model_overrides())
        save_checkpoint(lay.ensure(lay.at("val").model(name)), first.model, first.vocab, first.config)
        ckpt = lay.ensure(lay.model(name))
        save_checkpoint(ckpt, refit.model, refit.vocab, refit.config)
        catalog = workdir.catalog()
        res = first.result
        out = run_method(workdir, name, SeqScorer(refit.model, refit.vocab, catalog), catalog, extra={
            "model_config": asdict(refit.model.config), "train_config": asdict(first.config),
            "best_epoch": res.best_epoch, "seconds_per_epoch": float(np.mean(res.epoch_seconds)), "val": res.best_metrics,
            "min_count": training.min_count, "vocab": {"val": len(first.vocab), "test": len(refit.vocab)},
            "refit": {"epochs": refit.config.epochs, "seconds": round(refit.result.total_seconds, 2)},
        })
        out.metadata.update({"best_epoch": res.best_epoch, "epochs_run": len(res.losses),
                             "seconds_per_epoch": round(float(np.mean(res.epoch_seconds)), 2),
                             "fit_seconds": round(res.total_seconds, 2),
                             "refit_seconds": round(refit.result.total_seconds, 2),
                             "val_ndcg@10": res.best_metrics.get("ndcg@10", float("nan")), "min_count": training.min_count,
                             "vocab_val": len(first.vocab), "vocab_test": len(refit.vocab),
                             "checkpoint": MetadataValue.path(str(ckpt))})
        return out

    return _asset


SEQREC_ASSETS = {name: seqrec_asset(name) for name in MODELS}


@asset(group_name="id_models", deps=[SEQREC_ASSETS[ID_MODEL]],
       description="CORE's item table (the refit) as the ID embeddings in Qdrant: one point per item it has a row for "
                   "(no cold item), per category")
def id_embeddings(workdir: WorkdirResource, qdrant: QdrantResource):
    ckpt = load_checkpoint(workdir.layout.model(ID_MODEL))
    items = workdir.items()
    targets = workdir.layout.test_targets().head(50)
    t0 = time.perf_counter()
    with qdrant.store() as store:
        store.drop(qdrant.id_collection)  # rebuilt whole: no item of an earlier model survives
        n = write_id_embeddings(store, qdrant.id_collection, ckpt.model, ckpt.vocab, items)
        upsert_s = time.perf_counter() - t0
        counts = {c: store.count(qdrant.id_collection, partition=c) for c in sorted(items["category"].unique())}
        worst = max_topk_disagreement(store, qdrant.id_collection, ckpt.model, ckpt.vocab, items, targets)
    if worst > 1e-4:
        raise RuntimeError(f"Qdrant top-10 scores differ from exact model scores by {worst:.2e}")
    return MaterializeResult(metadata={"points": n, "catalog_items": len(items), "per_category": MetadataValue.json(counts),
                                       "upsert_seconds": round(upsert_s, 2), "model": ID_MODEL,
                                       "max_top10_score_gap_vs_exact": float(worst)})
