"""The learned ranking stage: LambdaMART over the union of every retrieval source, and its evaluation rows."""

import base64
import time
from dataclasses import asdict

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from evaluation.factories import as_of_memory, ranker_scorer
from evaluation.metrics import evaluate
from evaluation.periods import by_fit, parts
from evaluation.ranking import candidate_recall, fit_on_targets, ranker_targets, top_lists
from models.llm.prompt import LIMITS
from models.ranker.features import FEATURE_NAMES
from models.ranker.model import LearnedRanker, RankerConfig
from orchestration.assets.data import feature_tables
from orchestration.assets.seqrec import ID_MODEL, SEQREC_ASSETS
from orchestration.assets.text import item_title_embeddings, query_memory
from orchestration.resources import TrainingResource, WorkdirResource


def _png_markdown(path) -> str:  # noqa: ANN001
    return f"![feature importance](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


@asset(group_name="ranking", deps=[item_title_embeddings, query_memory, SEQREC_ASSETS[ID_MODEL], feature_tables],
       description="LambdaMART ranker over the candidate union of every source, trained on the validation targets' "
                   "candidates and features from the val fit (applied to the test fit's)")
def ranker(context: AssetExecutionContext, workdir: WorkdirResource, training: TrainingResource):
    catalog = workdir.catalog()
    cfg = RankerConfig(seed=training.seed)
    every = workdir.layout.val_targets()
    val = ranker_targets(every, cfg)  # a seeded sample past cfg.max_targets
    scorer = ranker_scorer(workdir.layout.at("val"), catalog)  # validation features come from the val fit
    model, ex = fit_on_targets(scorer, val, cfg, progress=training.progress)
    model.info |= {"candidate_recall_val": ex.recall, "mean_candidates_val": ex.mean_candidates,
                   "examples_seconds": ex.seconds}
    if not model.boosters:
        context.log.warning(f"ranker NOT trained: {model.info['used']} validation target(s) with the bought item "
                            "among the candidates; it scores every candidate equally")
    out = model.save(workdir.layout.ranker)
    # The top 20 of each validation target by out-of-fold scores: the LLM's candidate prompts and ranker-llm's
    # second pass train on lists the first pass ranked without having trained on that target.
    top = top_lists(ex, model.oof, val, catalog, LIMITS.candidates)
    top.to_parquet(workdir.layout.ranker_val_top, index=False)
    png = model.plot_importance(out / "importance.png")
    imp = dict(list(model.importances().items())[:15])
    context.log.info("candidate recall on validation targets: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in ex.recall.items()))
    return MaterializeResult(metadata={
        "trained": bool(model.boosters), "training_targets": f"{len(val):,} of {len(every):,}",
        "groups_used": model.info["used"], "rows": model.info.get("rows", 0),
        "navigational_groups": model.info.get("extra_groups", 0),
        "features": len(FEATURE_NAMES), "held_out_ndcg@10": model.info.get("held_out_ndcg@10", float("nan")),
        "candidate_recall": MetadataValue.json({k: round(v, 4) for k, v in ex.recall.items()}),
        "union_recall": round(ex.recall["union"], 4), "mean_candidates": round(ex.mean_candidates, 1),
        "examples_seconds": ex.seconds, "fit_seconds": model.info.get("seconds", 0.0),
        "importance_top15": MetadataValue.json({k: round(v, 1) for k, v in imp.items()}),
        "val_top20_recall_oof": round(float(top["hit"].mean()), 4) if len(top) else 0.0,
        "oof_in_sample_groups": model.info.get("oof_in_sample_groups", 0),
        "importance": MetadataValue.md(_png_markdown(png)), "importance_png": MetadataValue.path(str(png)),
        "config": MetadataValue.json(asdict(cfg)), "path": MetadataValue.path(str(out)),
    })


@asset(name="ranker_eval", group_name="ranking", deps=[ranker],
       description="Ranker eval: LambdaMART over every source's candidates (no LLM feature), on test")
def ranker_eval(workdir: WorkdirResource):
    catalog = workdir.catalog()
    model = LearnedRanker.load(workdir.layout.ranker)
    memory = as_of_memory(workdir.layout)
    scorer = by_fit(workdir.layout, lambda lay: ranker_scorer(lay, catalog, model, memory=memory))
    t0 = time.perf_counter()
    result = evaluate("ranker", scorer, workdir.layout.test_targets(), catalog, extra={
        "candidate_config": asdict(parts(scorer)[0].cfg), "llm_feature": False})
    stages = parts(scorer)  # every fit that scored a target (a lazy PeriodScorer builds them as it goes)
    result.metrics["id_fits"] = len(stages)
    recall, mean_candidates = candidate_recall(stages)
    result.metrics |= {"candidate_recall": recall, "mean_candidates_ranked": mean_candidates}
    out = result.save(workdir.eval)
    o, c = result.metrics["overall"], result.metrics["cold_start"]
    return MaterializeResult(metadata={
        "recall@10": o["recall@10"], "ndcg@10": o["ndcg@10"], "mrr": o["mrr"], "n": o["n"],
        "cold_recall@10": c["recall@10"], "union_recall": round(recall["union"], 4),
        "candidate_recall": MetadataValue.json({k: round(v, 4) for k, v in recall.items()}),
        "eval_seconds": round(time.perf_counter() - t0, 2), "path": MetadataValue.path(str(out)),
    })
