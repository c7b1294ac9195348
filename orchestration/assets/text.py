"""Title-model assets: the LSTM title encoder (val fit and test refit), title embeddings and query memory in Qdrant,
the variant ranker (fitted on the val fit's lists), and the retrieval evals (the test fit's lists)."""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)

from evaluation.factories import as_of_memory, retrieval_scorer
from evaluation.metrics import Scorer
from evaluation.periods import by_fit, parts
from evaluation.retrieval import RetrievalScorer, VariantScorer, variant_examples, variant_targets
from feature_repo.layout import PERIODS, Layout
from feature_repo.schema import CanonicalTables
from models.retrieval import RetrievalConfig
from models.text import TitleTrainConfig, load_title_model
from models.text.fit import TitleFit, encode_titles, fit_title_period
from models.text.train import spread, unique_titles
from models.variants import ItemAttributes, VariantConfig, VariantRanker, fit_variant_ranker
from orchestration.assets.data import eval_targets
from orchestration.assets.evaluation import run_methods
from orchestration.assets.seqrec import ID_MODEL, SEQREC_ASSETS
from orchestration.jobs import STORE_TAG
from orchestration.parallel import parallel_map, step_cores
from orchestration.resources import QdrantResource, TrainingResource, WorkdirResource
from serving.bundle import write_query_memory


@asset(group_name="text", deps=[eval_targets],
       description="LSTM title encoder trained with the two-hard-negative triplet loss on purchases: fitted before the "
                   "validation targets, and refitted before the test targets with the same settings")
def title_model(context: AssetExecutionContext, workdir: WorkdirResource, training: TrainingResource):
    workers = min(step_cores(), len(PERIODS))
    # (the fits' bars would interleave: with two processes, each fit reports when it is done)
    cfg = replace(TitleTrainConfig(), epochs=training.title_epochs, seed=training.seed,
                  show_progress=training.progress and workers == 1)
    jobs = [TitleFit(period, workdir.canonical, workdir.layout.splits, workdir.layout.at(period).title_model, cfg,
                     training.user_share, training.seed, training.title_include_clicks) for period in PERIODS]
    t0 = time.perf_counter()
    meta: dict = {"epochs": cfg.epochs, "processes": workers}
    for period, (result, out) in zip(PERIODS, parallel_map(fit_title_period, jobs, workers), strict=True):
        if not result.trained:
            context.log.warning(f"title model ({period} fit) NOT trained: {result.n_pairs} (query, purchased item) "
                                "pair(s) in its training period, 2 needed; titles are embedded by the untrained encoder")
        meta |= {f"{period}/trained": result.trained, f"{period}/pairs": result.n_pairs,
                 f"{period}/dropped_pairs": result.n_dropped_pairs, f"{period}/loss_before": result.initial_loss,
                 f"{period}/loss_after": result.final_loss, f"{period}/epoch_losses": MetadataValue.json(result.epoch_losses),
                 f"{period}/seconds": round(result.seconds, 2), f"{period}/path": MetadataValue.path(str(out))}
    meta["seconds"] = round(time.perf_counter() - t0, 2)
    return MaterializeResult(metadata=meta)


@asset(group_name="text", deps=[title_model], op_tags={STORE_TAG: "qdrant"},
       description="Title embedding of EVERY catalog item by both fits (files for exact evaluation); the test fit's "
                   "in the vector store (category payload)")
def item_title_embeddings(workdir: WorkdirResource, qdrant: QdrantResource):
    catalog = workdir.catalog()
    items = catalog.items
    t0 = time.perf_counter()
    uniq, inverse = unique_titles(items)  # identical titles are embedded once
    lays = [workdir.layout.at(period) for period in PERIODS]
    # (each fit's encoder on one thread, both at once where the step has two cores: the same vectors)
    for lay, emb in zip(lays, parallel_map(encode_titles, [(lay.title_model, list(uniq)) for lay in lays]),
                        strict=True):
        vectors = spread(emb, inverse)  # (n, d) catalog order
        np.save(lay.ensure(lay.title_vectors), vectors)
    embed_s = time.perf_counter() - t0
    payloads = [{"item_id": i, "category": c, "title": t}
                for i, c, t in zip(items["item_id"], items["category"], items["title"], strict=True)]
    t1 = time.perf_counter()
    with qdrant.store() as store:
        n = store.upsert(qdrant.title_collection, list(items["item_id"]), vectors, payloads,
                         partitions=list(items["category"]))
        counts = {c: store.count(qdrant.title_collection, partition=c) for c in catalog.rows}
    return MaterializeResult(metadata={
        "points": n, "dim": int(vectors.shape[1]), "per_category": MetadataValue.json(counts),
        "embed_seconds": round(embed_s, 2), "upsert_seconds": round(time.perf_counter() - t1, 2),
    })


@asset(group_name="text", deps=[title_model], op_tags={STORE_TAG: "qdrant"},
       description="Serving's query-product memory: every search so far, keys in Qdrant (as of the last search)")
def query_memory(workdir: WorkdirResource, qdrant: QdrantResource):
    # Serving answers requests made now, so its memory holds every search logged so far (the memory as of now;
    # the evaluation reads the same rule as of each target's time: AsOfMemory). Nothing here trains a model.
    tables = CanonicalTables.read(workdir.canonical)
    sr = tables.search_results
    t0 = time.perf_counter()
    with qdrant.store() as store:
        memory, n = write_query_memory(store, qdrant.memory_collection, sr, tables.events,
                                       load_title_model(workdir.layout.title_model))
    build_s = time.perf_counter() - t0
    memory.save(workdir.layout.memory_snapshot)
    return MaterializeResult(metadata={
        "queries": len(memory), "points": n, "search_rows": len(sr), "built_before": str(memory.built_before),
        "mean_products": float(np.mean([len(r.products) for r in memory.records])) if len(memory) else 0.0,
        "build_and_upsert_seconds": round(build_s, 2),
    })


VARIANT_FIT_MODE = RetrievalConfig(mode="mixup", n=1)  # the lists the ranker is fitted on: the serving default


@asset(group_name="text", deps=[item_title_embeddings, query_memory, SEQREC_ASSETS[ID_MODEL]],
       description="Colour x size variant re-ranker: conditional logit fitted on the validation targets' mixup lists")
def variant_ranker(workdir: WorkdirResource):
    catalog = workdir.catalog()
    every = workdir.layout.val_targets()
    attrs = ItemAttributes.from_items(catalog.items)
    cfg = VariantConfig()
    val = variant_targets(every, cfg)
    t0 = time.perf_counter()
    base = retrieval_scorer(workdir.layout.at("val"), catalog, VARIANT_FIT_MODE)  # the val fit's lists
    examples = variant_examples(base, val, catalog, attrs, cfg)
    ranker = fit_variant_ranker(examples, cfg)
    ranker.fit_info["examples_seconds"] = round(time.perf_counter() - t0, 2)
    out = ranker.save(workdir.layout.ensure(workdir.layout.variant_ranker))
    return MaterializeResult(metadata={
        **{k: v for k, v in ranker.fit_info.items() if isinstance(v, int | float | bool)},
        "training_targets": f"{len(val):,} of {len(every):,}",
        "weights": MetadataValue.json(ranker.weights), "path": MetadataValue.path(str(out)),
    })


@dataclass(frozen=True)
class RetrievalMethod:
    """One retrieval evaluation: how the ID and title lists combine, and whether the variant ranker re-ranks them."""

    name: str  # id-only, title-only, mixup
    cfg: RetrievalConfig
    variants: bool = False

    @property
    def method(self) -> str:  # the eval/<method>/ folder and the report's row
        return f"retrieval-{self.name}" + ("-variants" if self.variants else "")

    @property
    def key(self) -> AssetKey:
        return AssetKey(self.method.replace("-", "_"))


RETRIEVAL_MODES = {
    "id-only": RetrievalConfig(mode="id_only"),
    "title-only": RetrievalConfig(mode="title_only"),
    "mixup": RetrievalConfig(mode="mixup", n=1),
}
RETRIEVAL_METHODS = [*(RetrievalMethod(name, cfg) for name, cfg in RETRIEVAL_MODES.items()),
                     *(RetrievalMethod(name, RETRIEVAL_MODES[name], variants=True) for name in ("title-only", "mixup"))]


def _spec(m: RetrievalMethod) -> AssetSpec:
    deps = [item_title_embeddings, query_memory, SEQREC_ASSETS[ID_MODEL], *([variant_ranker] if m.variants else [])]
    return AssetSpec(m.key, group_name="text", deps=deps, description=(
        f"Retrieval eval: {m.cfg.mode} (K={m.cfg.k}, N={m.cfg.n})" + (", variant re-ranked" if m.variants else "")))


@multi_asset(name="retrieval_evals", specs=[_spec(m) for m in RETRIEVAL_METHODS], can_subset=True,
             description="The retrieval evaluations (ID list, title list, mixup; variant re-ranked) in one pass over "
                         "the test targets: each batch's ID and title cosines and top-K lists are computed once per "
                         "fit and combined by every selected method; each method's results are its own")
def retrieval_evals(context: AssetExecutionContext, workdir: WorkdirResource):
    chosen = [m for m in RETRIEVAL_METHODS if m.key in context.selected_asset_keys]
    catalog = workdir.catalog()
    t0 = time.perf_counter()
    memory = as_of_memory(workdir.layout)  # one memory for every fit: it reads searches, not the ID model
    bases: dict[str, RetrievalScorer] = {}

    def base(lay: Layout) -> RetrievalScorer:  # one scorer per fit, shared by every method (`with_config`)
        key = str(lay.model(ID_MODEL))
        if key not in bases:
            bases[key] = retrieval_scorer(lay, catalog, RetrievalConfig(), memory)
        return bases[key]

    ranker = VariantRanker.load(workdir.layout.variant_ranker) if any(m.variants for m in chosen) else None
    attrs = ItemAttributes.from_items(catalog.items) if ranker is not None else None

    def make(m: RetrievalMethod) -> Callable[[Layout], Scorer]:
        if m.variants:
            return lambda lay: VariantScorer(base(lay).with_config(m.cfg), catalog, ranker, attrs)  # type: ignore[arg-type]
        return lambda lay: base(lay).with_config(m.cfg)

    scorers = {m.method: by_fit(workdir.layout, make(m)) for m in chosen}
    extra = {m.method: {"retrieval_config": asdict(m.cfg),
                        **({"variant_weights": ranker.weights} if m.variants and ranker else {})} for m in chosen}
    after = {name: (lambda s=s: {"id_fits": len(parts(s))}) for name, s in scorers.items()}  # fits that scored one
    setup_s = time.perf_counter() - t0
    results = run_methods(workdir, scorers, catalog, extra, after)
    for m in chosen:
        yield MaterializeResult(asset_key=m.key, metadata={**(results[m.method].metadata or {}),
                                                           "setup_seconds": round(setup_s, 2)})
