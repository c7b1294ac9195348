"""Tests for serving/retrieval: mixup scoring order, leakage-free memory snapshots, title query, exact = Qdrant."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.evaluation import Catalog, evaluate
from models.text import HashingNgramEncoder
from serving.retrieval import (
    RetrievalConfig,
    RetrievalScorer,
    TimeSlicedMemory,
    TitleQueryBuilder,
    l2_normalize,
    last_search_queries,
    topk_rows,
)
from serving.vectorstore import VectorStore

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def catalog_of(n: int, categories: tuple[str, ...] = ("Footwear",)) -> Catalog:
    """Items I0..I{n-1}, spread over categories round robin."""
    return Catalog.from_items(pd.DataFrame({
        "item_id": [f"I{i}" for i in range(n)], "category": [categories[i % len(categories)] for i in range(n)],
        "title": [f"title {i}" for i in range(n)],
    }))


def targets(histories: list[list[str]], queries: list[list[str]] | None = None, t: pd.Timestamp = T0) -> pd.DataFrame:
    """Targets whose histories click each listed item (and search the listed queries first)."""
    rows = []
    for i, hist in enumerate(histories):
        qs = (queries or [[]] * len(histories))[i]
        rows.append({
            "user_id": f"u{i}", "target_item_id": "I0", "category": "Footwear", "cold_start": False, "target_ts": t,
            "seq_actions": ["search"] * len(qs) + ["click"] * len(hist),
            "seq_item_ids": [""] * len(qs) + hist, "seq_queries": qs + [""] * len(hist),
        })
    return pd.DataFrame(rows)


def fixed(vectors: np.ndarray):  # noqa: ANN201
    """A query function that ignores its input and returns `vectors`."""
    return lambda *_: np.asarray(vectors, np.float32)


def angle_vectors(angles: list[float]) -> np.ndarray:
    return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)  # (n, 2)


# Five items; the query is at angle 0. ID order by cosine: I0 I1 I2 I3 I4. Title order: I1 I3 I0 I4 I2.
ID_VECS = angle_vectors([0.0, 0.1, 0.2, 0.3, 0.4])
TITLE_VECS = angle_vectors([0.2, 0.0, 0.4, 0.1, 0.3])
QUERY = angle_vectors([0.0])


def ranking(cfg: RetrievalConfig) -> list[str]:
    catalog = catalog_of(5)
    scorer = RetrievalScorer(catalog, ID_VECS, TITLE_VECS, fixed(QUERY), fixed(QUERY), cfg)
    scores = scorer(targets([["I4"]]), catalog.rows["Footwear"])  # (1, 5)
    return list(catalog.item_ids[np.argsort(-scores[0], kind="stable")])


def test_mixup_order_and_dedup() -> None:
    # Top-1 ID item I0, then the title list skipping I0 (already in), cut at K=3; the rest by title cosine.
    assert ranking(RetrievalConfig(mode="mixup", k=3, n=1)) == ["I0", "I1", "I3", "I4", "I2"]
    assert ranking(RetrievalConfig(mode="mixup", k=3, n=2)) == ["I0", "I1", "I3", "I4", "I2"]  # I1 not twice
    assert ranking(RetrievalConfig(mode="mixup", k=4, n=3)) == ["I0", "I1", "I2", "I3", "I4"]
    assert ranking(RetrievalConfig(mode="id_only", k=2)) == ["I0", "I1", "I3", "I4", "I2"]
    assert ranking(RetrievalConfig(mode="title_only", k=5)) == ["I1", "I3", "I0", "I4", "I2"]
    # RRF (c=60): I0 1/61+1/63, I1 1/62+1/61, I3 1/64+1/62, I2 1/63+1/65 > I4 1/65+1/64.
    assert ranking(RetrievalConfig(mode="rrf", k=5)) == ["I1", "I0", "I3", "I2", "I4"]


def test_no_item_history_means_no_id_list() -> None:
    catalog = catalog_of(5)
    scorer = RetrievalScorer(catalog, ID_VECS, TITLE_VECS, fixed(QUERY), fixed(QUERY), RetrievalConfig(k=3))
    assert scorer.ranked(targets([[]]), catalog.rows["Footwear"]) == [[1, 3, 0]]  # the title list alone


def test_scorer_runs_under_evaluate() -> None:
    catalog = catalog_of(5)
    scorer = RetrievalScorer(catalog, ID_VECS, TITLE_VECS, fixed(np.repeat(QUERY, 2, 0)), fixed(np.repeat(QUERY, 2, 0)),
                             RetrievalConfig(k=3))
    result = evaluate("mixup", scorer, targets([["I4"], ["I2"]]), catalog, progress=False)
    assert result.rankings["target_rank"].tolist() == [1, 1]  # I0 is first in the mixup list


def search_log(rows: list[tuple[int, str, float, list[str]]]) -> pd.DataFrame:
    """(search_id, query, day, shown items) -> a search_results table."""
    return pd.DataFrame([
        {"search_id": sid, "user_id": "u", "session_id": sid, "query": q, "timestamp": T0 + pd.Timedelta(days=d),
         "item_id": item, "position": pos}
        for sid, q, d, shown in rows for pos, item in enumerate(shown, start=1)
    ])


def test_time_sliced_memory_never_sees_searches_at_or_after_t() -> None:
    # Search k (day 2k, and day 2k + 1 exactly at a cutoff) shows item Pk; every = 1 day from day 0.
    rows = [(k, "red shoes", 2.0 * k, [f"P{k}"]) for k in range(5)] + [(9, "red shoes", 7.0, ["LATE"])]
    log = search_log(rows)
    memory = TimeSlicedMemory.build(log, HashingNgramEncoder(), every=pd.Timedelta(days=1))
    for hours in range(0, 24 * 10, 5):
        t = T0 + pd.Timedelta(hours=hours)
        snap = memory.for_time(t)
        assert snap.built_before <= t
        seen = {p for r in snap.records for p in r.products}
        allowed = set(log.loc[log["timestamp"] < t, "item_id"])
        assert seen <= allowed, (t, seen - allowed)
    assert memory.for_time(T0 + pd.Timedelta(days=7)).records[0].products == ("P0", "P1", "P2", "P3")
    assert "LATE" in memory.for_time(T0 + pd.Timedelta(days=8)).records[0].products
    assert len(memory.for_time(T0 - pd.Timedelta(days=1))) == 0


def test_title_query_uses_last_search_and_falls_back_to_items() -> None:
    enc = HashingNgramEncoder()
    catalog = catalog_of(4)
    titles = enc.encode(["red sneaker", "green dress", "blue shirt", "black boot"])
    memory = TimeSlicedMemory.build(search_log([(1, "green dress", 0.0, ["I1"])]), enc, every=pd.Timedelta(days=1))
    builder = TitleQueryBuilder(enc, memory, catalog, titles)
    batch = targets([["I3"], ["I0", "I2"]], [["red sneaker", "green dress"], []], t=T0 + pd.Timedelta(days=3))
    assert last_search_queries(batch["seq_actions"], batch["seq_queries"]) == ["green dress", None]
    vec = builder(batch)  # (2, d)
    # u0: mean of the last query's embedding and its memory product's title (I1 "green dress"): both the same text.
    assert float(vec[0] @ l2_normalize(enc.encode(["green dress"]))[0]) == pytest.approx(1.0, abs=1e-5)
    # u1 never searched: the mean of its clicked items' titles.
    expected = l2_normalize(titles[[0, 2]].mean(axis=0))[0]
    assert float(vec[1] @ expected) == pytest.approx(1.0, abs=1e-5)


def test_exact_topk_equals_qdrant_search() -> None:
    rng = np.random.default_rng(0)
    catalog = catalog_of(60, ("Footwear", "Clothing"))
    id_vecs, title_vecs = rng.normal(size=(60, 8)), rng.normal(size=(60, 6))
    qi, qt = rng.normal(size=(4, 8)), rng.normal(size=(4, 6))
    scorer = RetrievalScorer(catalog, id_vecs, title_vecs, fixed(qi), fixed(qt), RetrievalConfig(k=7))
    items = catalog.items
    store = VectorStore.memory()
    store.upsert("ids", list(items["item_id"]), id_vecs, partitions=list(items["category"]))
    store.upsert("titles", list(items["item_id"]), title_vecs, partitions=list(items["category"]))
    batch = targets([["I0"]] * 4)
    for cat, rows in catalog.rows.items():
        id_top, title_top, _ = scorer.lists(batch, rows)
        for name, top, q in (("ids", id_top, qi), ("titles", title_top, qt)):
            hits = store.search(name, q, 7, partition=cat)
            assert [[h.id for h in row] for row in hits] == catalog.item_ids[rows][top].tolist()
    exact = topk_rows(np.array([[0.5, 0.9, 0.9, 0.1]]), 3)
    assert exact.tolist() == [[1, 2, 0]]  # ties in column order
