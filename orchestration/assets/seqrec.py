"""ID-model assets: training sequences from Feast, one asset per sequential model (val fit, test refit and, for the
`TrainingResource.rolling_models`, the rolling refits through the test window), and the ID-embedding collection (the
last refit's item table: only items it has a row for)."""

import shutil
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
from dagster import AssetsDefinition, MaterializeResult, MetadataValue, asset
from tqdm.auto import tqdm

from evaluation.periods import PeriodScorer
from evaluation.seqrec import SeqScorer
from feature_repo.layout import PERIODS, Layout
from feature_repo.schema import CanonicalTables
from feature_repo.sequences import item_sequences
from feature_repo.splits import fit_layouts, read_splits, training_cutoffs, training_user_mask
from models.seqrec import ID_MODEL, MODELS, load_checkpoint, save_checkpoint
from models.seqrec.pipeline import fit_and_refit, rolling_refits
from orchestration.assets.data import eval_targets
from orchestration.assets.evaluation import run_method
from orchestration.jobs import STORE_TAG
from orchestration.resources import FeastResource, QdrantResource, TrainingResource, WorkdirResource
from serving.id_index import max_topk_disagreement, write_id_embeddings


@asset(group_name="id_models", deps=[eval_targets],
       description="Per-user training item sequences of every fit (sequence_training_v1, point in time at each "
                   "fit's cut: before the validation targets, before the test targets, and before each rolling "
                   "refit's start)")
def seqrec_sequences(workdir: WorkdirResource, feast: FeastResource, training: TrainingResource):
    tables = CanonicalTables.read(workdir.canonical)
    lay = workdir.layout
    splits = read_splits(lay.splits)
    repo = feast.repo()
    meta: dict = {"protocol": splits.protocol, "rolling_refits": max(len(splits.refits) - 1, 0)}

    def write(layout: Layout, users: pd.Series, cutoff: pd.Series) -> pd.Series:
        hist = repo.history_before(users, cutoff, service="sequence_training_v1")
        hist.to_parquet(lay.ensure(layout.train_history), index=False)
        return pd.Series([len(s) for s in item_sequences(hist["seq_actions"], hist["seq_item_ids"])])

    for period in PERIODS:
        cut = training_cutoffs(splits, tables.events, period)
        cut = cut[training_user_mask(cut["user_id"], training.user_share, training.seed)].reset_index(drop=True)
        lengths = write(lay.at(period), cut["user_id"], cut["cutoff_ts"])
        meta |= {f"{period}/users": len(lengths), f"{period}/mean_items": float(lengths.mean()),
                 f"{period}/users_with_2plus_items": int((lengths >= 2).sum()),
                 f"{period}/items": int(lengths.sum())}
    shutil.rmtree(lay.root / "seqrec" / "refits", ignore_errors=True)  # no history of an earlier schedule survives
    users = pd.Series(tables.events["user_id"].unique())
    users = users[training_user_mask(users, training.user_share, training.seed)].reset_index(drop=True)
    for k, start in enumerate(tqdm(splits.refits[1:], desc="refit histories", leave=False), start=1):
        lengths = write(lay.refit(k), users, pd.Series([start] * len(users)))
        meta[f"refit_{k}/items"] = int(lengths.sum())
    return MaterializeResult(metadata=meta)


def seqrec_asset(name: str) -> AssetsDefinition:
    """Fit model `name` (val fit, early-stopped), refit it before the test targets (and, for a rolling model, at each
    rolling refit's start), and evaluate on test: each target scored by the latest refit before it."""

    @asset(name=f"seqrec_{name.replace('-', '_')}", group_name="id_models", deps=[seqrec_sequences],
           description=f"Fit {name} before the validation targets (epochs by early stopping), refit it on everything "
                       "before the test targets (and at each rolling refit, when it is one of the rolling models), "
                       "evaluate the refits on test")
    def _asset(workdir: WorkdirResource, training: TrainingResource):
        lay = workdir.layout
        first, refit = fit_and_refit(name, pd.read_parquet(lay.at("val").train_history),
                                     pd.read_parquet(lay.at("test").train_history), lay.val_targets(),
                                     training.train_config(), training.min_count, **training.model_overrides())
        save_checkpoint(lay.ensure(lay.at("val").model(name)), first.model, first.vocab, first.config)
        for old in lay.refits.glob(f"*/{name}.pt"):  # no refit of an earlier schedule survives
            old.unlink()
        fits = fit_layouts(lay) if name in training.rolling_models else [(None, lay)]
        # (the last fit's layout is `lay` itself, which names the test cut's history: index the histories by k)
        histories = (pd.read_parquet(lay.refit(k).train_history) for k in range(1, len(fits)))
        refits = [refit, *rolling_refits(name, refit, histories, training.rolling_epochs, training.min_count,
                                         **training.model_overrides())]
        for (_, fit_lay), fit in zip(fits, refits, strict=True):
            save_checkpoint(lay.ensure(fit_lay.model(name)), fit.model, fit.vocab, fit.config)
        ckpt = lay.model(name)
        catalog = workdir.catalog()
        scorers = [SeqScorer(fit.model, fit.vocab, catalog) for fit in refits]
        scorer = scorers[0] if len(scorers) == 1 else PeriodScorer([t for t, _ in fits], scorers)
        res = first.result
        rolling_s = sum(f.result.total_seconds for f in refits[1:])
        out = run_method(workdir, name, scorer, catalog, extra={
            "model_config": asdict(refit.model.config), "train_config": asdict(first.config),
            "best_epoch": res.best_epoch, "seconds_per_epoch": float(np.mean(res.epoch_seconds)), "val": res.best_metrics,
            "sampled_negatives": {"val": res.sampled_negatives, "test": refit.result.sampled_negatives},
            "sparse_table": {"val": res.sparse_table, "test": refit.result.sparse_table},
            "min_count": training.min_count, "vocab": {"val": len(first.vocab), "test": len(refit.vocab)},
            "refit": {"epochs": refit.config.epochs, "seconds": round(refit.result.total_seconds, 2)},
            "rolling": {"refits": len(refits) - 1, "epochs": training.rolling_epochs, "seconds": round(rolling_s, 2),
                        "vocab_last": len(refits[-1].vocab)},
        })
        out.metadata.update({"best_epoch": res.best_epoch, "epochs_run": len(res.losses),
                             "seconds_per_epoch": round(float(np.mean(res.epoch_seconds)), 2),
                             "fit_seconds": round(res.total_seconds, 2),
                             "refit_seconds": round(refit.result.total_seconds, 2),
                             "rolling_refits": len(refits) - 1, "rolling_seconds": round(rolling_s, 2),
                             "val_ndcg@10": res.best_metrics.get("ndcg@10", float("nan")), "min_count": training.min_count,
                             "vocab_val": len(first.vocab), "vocab_test": len(refit.vocab),
                             "vocab_last": len(refits[-1].vocab),
                             "sampled_negatives": refit.result.sampled_negatives,
                             "sparse_table": refit.result.sparse_table,
                             "checkpoint": MetadataValue.path(str(ckpt))})
        return out

    return _asset


SEQREC_ASSETS = {name: seqrec_asset(name) for name in MODELS}


@asset(group_name="id_models", deps=[SEQREC_ASSETS[ID_MODEL]], op_tags={STORE_TAG: "qdrant"},
       description="CORE's item table (the last refit) as the ID embeddings in Qdrant: one point per item it has a row for "
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
