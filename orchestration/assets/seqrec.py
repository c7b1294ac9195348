"""ID-model assets: training sequences from Feast, one asset per sequential model, and the ID-embedding collection."""

import time
from dataclasses import asdict

import numpy as np
import pandas as pd
from dagster import AssetsDefinition, MaterializeResult, MetadataValue, asset

from evaluation.seqrec import SeqScorer
from feature_repo.schema import CanonicalTables
from feature_repo.sequences import item_sequences
from feature_repo.splits import Splits, read_protocol, training_cutoffs
from models.seqrec import ID_MODEL, MODELS, build_model, load_checkpoint, save_checkpoint, train
from models.seqrec.pipeline import build_seq_data
from orchestration.assets.data import eval_targets
from orchestration.assets.evaluation import run_method
from orchestration.resources import FeastResource, QdrantResource, TrainingResource, WorkdirResource
from serving.id_index import max_topk_disagreement, write_id_embeddings


@asset(group_name="id_models", deps=[eval_targets],
       description="Per-user training item sequences (sequence_training_v1, point in time at the training cut)")
def seqrec_sequences(workdir: WorkdirResource, feast: FeastResource):
    tables = CanonicalTables.read(workdir.canonical)
    protocol, cuts = read_protocol(workdir.layout.splits)
    splits = Splits(targets=pd.read_parquet(workdir.layout.targets), train_events=tables.events,
                    protocol=protocol, cuts=cuts)
    cut = training_cutoffs(splits, tables.events)
    hist = feast.repo().history_before(cut["user_id"], cut["cutoff_ts"], service="sequence_training_v1")
    hist.to_parquet(workdir.layout.ensure(workdir.layout.train_history), index=False)
    lengths = pd.Series([len(s) for s in item_sequences(hist["seq_actions"], hist["seq_item_ids"])])
    return MaterializeResult(metadata={"protocol": protocol, "users": len(hist), "mean_items": float(lengths.mean()),
                                       "users_with_2plus_items": int((lengths >= 2).sum())})


def seqrec_asset(name: str) -> AssetsDefinition:
    """Train model `name` on the training sequences, checkpoint it, and evaluate it on the test targets."""

    @asset(name=f"seqrec_{name.replace('-', '_')}", group_name="id_models", deps=[seqrec_sequences],
           description=f"Train and evaluate {name}")
    def _asset(workdir: WorkdirResource, training: TrainingResource):
        targets = pd.read_parquet(workdir.layout.eval_targets)
        hist = pd.read_parquet(workdir.layout.train_history)
        data, vocab = build_seq_data(hist, targets[targets["split"] == "val"], min_count=training.min_count)
        model = build_model(name, len(vocab), **training.model_overrides())
        cfg = training.train_config()
        result = train(model, data, cfg)
        ckpt = workdir.layout.ensure(workdir.layout.model(name))
        save_checkpoint(ckpt, model, vocab, cfg)
        catalog = workdir.catalog()
        out = run_method(workdir, name, SeqScorer(model, vocab, catalog), catalog, extra={
            "model_config": asdict(model.config), "train_config": asdict(cfg), "best_epoch": result.best_epoch,
            "seconds_per_epoch": float(np.mean(result.epoch_seconds)), "val": result.best_metrics,
        })
        out.metadata.update({"best_epoch": result.best_epoch, "epochs_run": len(result.losses),
                             "seconds_per_epoch": round(float(np.mean(result.epoch_seconds)), 2),
                             "val_ndcg@10": result.best_metrics.get("ndcg@10", float("nan")),
                             "vocab": len(vocab), "checkpoint": MetadataValue.path(str(ckpt))})
        return out

    return _asset


SEQREC_ASSETS = {name: seqrec_asset(name) for name in MODELS}


@asset(group_name="id_models", deps=[SEQREC_ASSETS[ID_MODEL]],
       description="CORE's item table as the ID embeddings in Qdrant (one point per catalog item, per category)")
def id_embeddings(workdir: WorkdirResource, qdrant: QdrantResource):
    ckpt = load_checkpoint(workdir.layout.model(ID_MODEL))
    items = workdir.items()
    targets = pd.read_parquet(workdir.layout.eval_targets).head(50)
    t0 = time.perf_counter()
    with qdrant.store() as store:
        n = write_id_embeddings(store, qdrant.id_collection, ckpt.model, ckpt.vocab, items)
        upsert_s = time.perf_counter() - t0
        counts = {c: store.count(qdrant.id_collection, partition=c) for c in sorted(items["category"].unique())}
        worst = max_topk_disagreement(store, qdrant.id_collection, ckpt.model, ckpt.vocab, items, targets)
    if worst > 1e-4:
        raise RuntimeError(f"Qdrant top-10 scores differ from exact model scores by {worst:.2e}")
    return MaterializeResult(metadata={"points": n, "per_category": MetadataValue.json(counts),
                                       "upsert_seconds": round(upsert_s, 2), "model": ID_MODEL,
                                       "max_top10_score_gap_vs_exact": float(worst)})
