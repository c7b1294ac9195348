"""The serving path (Qdrant collections) ranks exactly like the evaluation scorers (exact numpy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.retrieval import RetrievalScorer, TitleQueryBuilder, VariantScorer
from models.catalog import Catalog
from models.common import l2_normalize
from models.retrieval import RetrievalConfig
from models.text import HashingNgramEncoder, build_query_memory, embed_catalog
from models.text.memory import AsOfMemory
from models.variants import VariantRanker
from serving.recommend import OnlineRetriever, UserContext
from tests.helpers import T0, catalog_items, id_model_and_store, search_results

CONTEXTS = [
    UserContext("Footwear", ["F0-red-8", "F1-black-8"], "red snekers"),  # typo: the memory still matches
    UserContext("Footwear", ["F2-blue-9"], None),  # no search: title vector from the last items
    UserContext("Clothing", [], "blue dress"),  # no history: no ID list
    UserContext("Clothing", ["C3-red-7", "C0-blue-7", "F0-red-8"], "warm coat"),
]


@pytest.fixture(scope="module")
def setup():  # noqa: ANN201
    items = catalog_items()
    catalog = Catalog.from_items(items)
    encoder = HashingNgramEncoder()
    sr = search_results(items)
    title_vecs = embed_catalog(encoder, catalog.items)  # (n, d) catalog order
    id_vecs = np.random.default_rng(1).normal(size=(len(catalog.items), 8)).astype(np.float32)
    id_queries, store = id_model_and_store(catalog, id_vecs, title_vecs)
    memory = build_query_memory(sr, T0, encoder)
    points = memory.to_points()
    store.upsert("query_memory", [p["payload"]["query"] for p in points], np.array([p["vector"] for p in points]),
                 [p["payload"] for p in points])
    titles = TitleQueryBuilder(encoder, AsOfMemory.build(sr, encoder), catalog, title_vecs)
    scorer = RetrievalScorer(catalog, id_vecs, title_vecs, id_queries, titles.queries)
    return catalog, encoder, store, scorer, id_queries


def as_targets(contexts: list[UserContext]) -> pd.DataFrame:
    return pd.DataFrame([{
        "user_id": f"u{i}", "category": c.category, "target_ts": T0, "cold_start": False,
        "target_item_id": "F0-red-7",
        "seq_actions": (["search"] if c.last_query else []) + ["click"] * len(c.history),
        "seq_item_ids": ([""] if c.last_query else []) + list(c.history),
        "seq_queries": ([c.last_query] if c.last_query else []) + [""] * len(c.history),
    } for i, c in enumerate(contexts)])


@pytest.mark.parametrize("cfg", [RetrievalConfig(mode="mixup", k=12), RetrievalConfig(mode="title_only", k=12),
                                 RetrievalConfig(mode="id_only", k=12), RetrievalConfig(mode="rrf", k=12)])
@pytest.mark.parametrize("variants", [False, True])
@pytest.mark.parametrize("scan", [False, True], ids=["collections", "table-scan"])
def test_online_retriever_equals_the_evaluation_scorer(setup, cfg: RetrievalConfig, variants: bool, scan: bool
                                                       ) -> None:  # noqa: ANN001
    """Serving's lists equal the evaluation's, searched in the collections (ID, title, memory) or scanned from the
    tables and the memory's keys read once."""
    catalog, encoder, store, scorer, id_queries = setup
    scorer.cfg = cfg
    ranker = VariantRanker() if variants else None
    online = OnlineRetriever(store, catalog.items, encoder, id_queries, ranker, cfg, title_vectors=scorer.title_vectors,
                             id_vectors=scorer.id_vectors, scan=scan)
    assert online.scan is scan and online._memory_table is None
    for i, ctx in enumerate(CONTEXTS):
        got = online.recommend(UserContext(ctx.category, ctx.history, ctx.last_query, T0)).items
        batch = as_targets([ctx])
        rows = catalog.rows[ctx.category]
        if variants:
            expect = catalog.item_ids[VariantScorer(scorer, catalog, ranker).ranked_rows(batch, rows)[0][0]].tolist()
        else:
            expect = catalog.item_ids[rows[scorer.ranked(batch, rows)[0]]].tolist()
        assert got == expect, f"context {i}"
        assert len(got) == len(set(got)) and not set(got) & set(ctx.history)
        assert got or (cfg.mode == "id_only" and not ctx.history)  # only an ID list can be empty (no history)
        assert all(catalog.items.set_index("item_id").loc[got, "category"] == ctx.category)
    assert (online._memory_table is not None) is scan  # read on the first search, when scanning


def test_online_retriever_reports_its_lists(setup) -> None:  # noqa: ANN001
    catalog, encoder, store, _, id_queries = setup
    online = OnlineRetriever(store, catalog.items, encoder, id_queries, cfg=RetrievalConfig(mode="mixup", k=5))
    rec = online.recommend(CONTEXTS[0])
    assert rec.memory_queries[0] == "red sneakers"  # the typo'd query finds its stored paraphrase first
    assert rec.items[0] == rec.id_list[0] and rec.items[1:] == [i for i in rec.title_list if i != rec.id_list[0]][:4]


@pytest.mark.parametrize("cfg", [RetrievalConfig(mode="mixup", k=12), RetrievalConfig(mode="title_only", k=12)])
def test_serving_reads_the_memory_as_of_the_request(setup, cfg: RetrievalConfig) -> None:  # noqa: ANN001
    """Replayed at a past time with the as-of memory, serving equals the evaluation; the collection, built later,
    refuses such a request instead of reading searches from after it."""
    catalog, encoder, store, scorer, id_queries = setup
    scorer.cfg = cfg
    memory = AsOfMemory.build(search_results(catalog_items()), encoder)  # the fixture's search log
    online = OnlineRetriever(store, catalog.items, encoder, id_queries, cfg=cfg, memory=memory)
    when = T0 - pd.Timedelta(days=18.5)  # the searches of days -20 .. -18.6 are visible, the later ones not
    for i, ctx in enumerate(CONTEXTS):
        got = online.recommend(UserContext(ctx.category, ctx.history, ctx.last_query, when))
        batch = as_targets([ctx]).assign(target_ts=when)
        rows = catalog.rows[ctx.category]
        assert got.items == catalog.item_ids[rows[scorer.ranked(batch, rows)[0]]].tolist(), f"context {i}"
    # At T0 the as-of memory sees more searches than at `when`: the same request can change.
    early = memory.lookup_queries(["blue dress"], [when])[0]
    late = memory.lookup_queries(["blue dress"], [T0])[0]
    assert [h.products for h in early] != [h.products for h in late]
    collection_only = OnlineRetriever(store, catalog.items, encoder, id_queries, cfg=cfg)
    with pytest.raises(ValueError, match="AsOfMemory"):
        collection_only.recommend(UserContext("Footwear", ["F0-red-8"], "red sneakers", when))


def test_a_repeated_query_is_encoded_once_and_answers_the_same(setup) -> None:  # noqa: ANN001
    """The query-encoding cache: the second request with the same last search does not run the encoder again, and
    its answer and lists equal the first's and those of a retriever without a warm cache."""
    catalog, encoder, store, _, id_queries = setup
    calls: list[list[str]] = []

    class Counting:
        dim = encoder.dim

        def encode(self, texts, batch_size: int = 256):  # noqa: ANN001, ANN201
            calls.append(list(texts))
            return encoder.encode(texts, batch_size)

    online = OnlineRetriever(store, catalog.items, Counting(), id_queries, cfg=RetrievalConfig(mode="mixup", k=5))
    first = online.recommend(CONTEXTS[0])
    n = len(calls)
    again = online.recommend(CONTEXTS[0])
    assert ["red snekers"] in calls and not any(c == ["red snekers"] for c in calls[n:])
    fresh = OnlineRetriever(store, catalog.items, encoder, id_queries, cfg=RetrievalConfig(mode="mixup", k=5))
    other = fresh.recommend(CONTEXTS[0])
    assert first.items == again.items == other.items and first.memory_queries == again.memory_queries
    assert np.array_equal(online.query_key("red snekers"), l2_normalize(encoder.encode(["red snekers"])))
