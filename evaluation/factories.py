"""Scorers built over a finished workdir: what the evaluation assets and the benchmarks share.

Each factory reads the artefacts the asset graph wrote (`feature_repo.layout.Layout`: the ID checkpoint, the title
model and its catalog vectors, the search log, the activity windows, the variant ranker) and returns an evaluation
`Scorer`. Nothing here trains or writes. The layout's period picks the fit: `layout.at("val")` for the validation
targets (what the rankers and the LLM are trained on), the default test fit for the test targets.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from evaluation.memory import TimeSlicedMemory
from evaluation.ranking import RankerScorer
from evaluation.retrieval import RetrievalScorer, TitleQueryBuilder, VariantScorer
from feature_repo.activity import ActivityTable
from feature_repo.layout import Layout
from models.catalog import Catalog, file_key
from models.llm.prompt import CatalogItems
from models.ranker.candidates import CandidateConfig, SearchLog
from models.ranker.features import FeatureContext
from models.ranker.model import LearnedRanker
from models.ranker.stage import RankingStage
from models.retrieval import RetrievalConfig
from models.seqrec import ID_MODEL, load_checkpoint
from models.seqrec.vectors import query_vectors, unit_item_vectors
from models.text import load_title_model
from models.text.encoder import TextEncoder
from models.text.memory import AsOfMemory
from models.variants import ItemAttributes, VariantRanker

LLM_BASE_MODE = RetrievalConfig(mode="mixup", n=1)  # the lists the LLM reads and re-ranks (the serving default)


def as_of_memory(layout: Layout) -> AsOfMemory:
    """The query memory exactly as of any time, over the workdir's whole search log and its title model."""
    return AsOfMemory.build(pd.read_parquet(layout.search_results), load_title_model(layout.title_model))


def retrieval_scorer(layout: Layout, catalog: Catalog, cfg: RetrievalConfig,
                     memory: AsOfMemory | TimeSlicedMemory | None = None,
                     memory_kind: Literal["as_of", "weekly"] = "as_of",
                     text: tuple[TextEncoder, np.ndarray] | None = None) -> RetrievalScorer:
    """CORE + title model + leakage-free query memory over all searches -> a `RetrievalScorer`.

    Without `memory`, builds one: `memory_kind="as_of"` (default) is exact as of each target time (`AsOfMemory`),
    `"weekly"` uses weekly snapshots (`TimeSlicedMemory`). `text`: another text encoder and its catalog vectors
    (catalog order) in place of the workdir's title model (the pretrained-embedding ablation); `memory` must then
    be built with that encoder.
    """
    if memory_kind not in ("as_of", "weekly"):
        raise ValueError(f"unknown memory_kind {memory_kind!r}")
    ckpt = load_checkpoint(layout.model(ID_MODEL))
    if text is None:  # the workdir's title side, the same for every rolling refit: read once per catalog
        model_key, vectors_key = file_key(layout.title_model), file_key(layout.title_vectors)
        encoder = catalog.memo(("title_model", model_key), lambda: load_title_model(layout.title_model))
    else:
        encoder = text[0]
    shared = memory is not None and text is None  # a caller's memory, shared by its fits' scorers
    if memory is None:
        search_results = pd.read_parquet(layout.search_results)
        memory = (AsOfMemory if memory_kind == "as_of" else TimeSlicedMemory).build(search_results, encoder)
    if shared:  # (the builder holds `memory`, so its id is not reused while the entry lives)
        titles = catalog.memo(("titles", model_key, vectors_key, id(memory)), lambda: TitleQueryBuilder(
            encoder, memory, catalog, np.load(layout.title_vectors)))  # (n, d) catalog order
    else:
        titles = TitleQueryBuilder(encoder, memory, catalog, np.load(layout.title_vectors) if text is None else text[1])
    ids, known = unit_item_vectors(ckpt.model, ckpt.vocab, catalog.item_ids)  # (n, d) unit rows, (n,)
    return RetrievalScorer(catalog, ids, titles.title_vectors, lambda h: query_vectors(ckpt.model, ckpt.vocab, h),
                           titles.queries, cfg, id_known=known, title_unit=True, id_unit=True)


def variant_scorer(layout: Layout, catalog: Catalog, cfg: RetrievalConfig, memory: AsOfMemory | None = None
                   ) -> VariantScorer:
    """`retrieval_scorer`'s combined lists re-ranked by the workdir's variant ranker."""
    return VariantScorer(retrieval_scorer(layout, catalog, cfg, memory), catalog,
                         VariantRanker.load(layout.variant_ranker))


def ranker_scorer(layout: Layout, catalog: Catalog, ranker: LearnedRanker | None = None,
                  cfg: CandidateConfig = CandidateConfig(), memory: AsOfMemory | None = None) -> RankerScorer:
    """The ranking stage over a workdir: retrieval sources, search log, activity windows, catalog attributes.
    `memory`: an as-of query memory already built over the workdir's searches (else one is built)."""
    base = retrieval_scorer(layout, catalog, RetrievalConfig(), memory)

    def id_rows(rows: np.ndarray) -> np.ndarray:  # (m, d) float32, NaN where the ID model has no row of its own
        return np.where(base.id_known[rows, None], base.id_vectors[rows], np.nan).astype(np.float32)

    # Everything but the ID model is the same for every rolling refit: the catalog's facts, the activity windows, the
    # title vectors (the builder's, shared) and the search log are built once per catalog.
    titles = base.title_vectors

    def context() -> FeatureContext:
        return FeatureContext(ItemAttributes.from_items(catalog.items), catalog.items, ActivityTable.read(layout.activity),
                              id_vectors=id_rows, title_vectors=lambda rows: titles[rows])

    ctx = catalog.memo(("feature_context", file_key(layout.activity), id(titles)), context).with_id_vectors(id_rows)
    log = catalog.memo(("search_log", file_key(layout.search_results)),
                       lambda: SearchLog(pd.read_parquet(layout.search_results), catalog.index))
    return RankerScorer(base, RankingStage(ctx, log, ranker, cfg))


def llm_inputs(layout: Layout, catalog: Catalog) -> tuple[AsOfMemory, VariantScorer, CatalogItems]:
    """What the LLM rows read: the as-of memory, the mixup + variants scorer whose lists they re-rank, the items."""
    memory = as_of_memory(layout)
    return memory, variant_scorer(layout, catalog, LLM_BASE_MODE, memory), CatalogItems(catalog.items)
