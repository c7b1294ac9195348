"""Tests for the retrieval scorers (evaluation/retrieval.py) and their serving twin: mixup scoring order, leakage-free memory snapshots, title query, exact = Qdrant."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evaluation.metrics import evaluate, evaluate_many
from evaluation.retrieval import (
    RetrievalScorer,
    TimeSlicedMemory,
    TitleQueries,
    TitleQueryBuilder,
    VariantScorer,
    memory_first_lists,
    topk_rows,
)
from feature_repo.sequences import last_search_queries
from models.catalog import Catalog
from models.common import l2_normalize
from models.retrieval import RetrievalConfig, TitleQueryConfig
from models.text import HashingNgramEncoder, build_query_memory
from models.text.memory import AsOfMemory, MemoryConfig
from models.variants import VariantRanker
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
    # The history item is outside the catalog: an ID list exists, and no catalog item is excluded as seen.
    scores = scorer(targets([["X9"]]), catalog.rows["Footwear"])  # (1, 5)
    return list(catalog.item_ids[np.argsort(-scores[0], kind="stable")])


def test_seen_items_leave_both_lists() -> None:
    catalog = catalog_of(5)
    cols = catalog.rows["Footwear"]
    for excl, expect in [(True, [[2, 3, 4], [2, 3]]), (False, [[0, 1, 3], [0, 1]])]:
        # ID order I0 I1 I2 I3 I4, title order I1 I3 I0 I4 I2; the user clicked I0 and I1.
        scorer = RetrievalScorer(catalog, ID_VECS, TITLE_VECS, fixed(QUERY), fixed(QUERY),
                                 RetrievalConfig(mode="mixup", k=3, n=1, exclude_seen=excl))
        id_top, title_top, _ = scorer.lists(targets([["I0", "I1"]]), cols)
        assert scorer.ranked(targets([["I0", "I1"]]), cols) == [expect[0]]  # mixup: I2 (ID), then I3 I4 (title)
        assert id_top[0, :2].tolist() == expect[1]
        assert not excl or not {0, 1} & set(title_top[0].tolist())


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
    scorer = RetrievalScorer(catalog, id_vecs, title_vecs, fixed(qi), fixed(qt), RetrievalConfig(k=7, exclude_seen=False))
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


def at(days: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=days)


def as_of_lookup(memory: AsOfMemory, query: str, days: float, q: int = 5, v: int = 10):  # noqa: ANN201
    return memory.lookup_queries([query], [at(days)], q=q, v=v)[0]


def test_as_of_memory_is_exact_at_each_time() -> None:
    # "red shoes" searched at day 10 (A, B) and day 20 (C, A); "blue hat" first searched at day 30.
    log = search_log([(1, "red shoes", 10.0, ["A", "B"]), (2, "Red  Shoes", 20.0, ["C", "A"]),
                      (3, "blue hat", 30.0, ["H"])])
    memory = AsOfMemory.build(log, HashingNgramEncoder())
    assert memory.queries == ["blue hat", "red shoes"]
    assert as_of_lookup(memory, "red shoes", 10.0) == []  # the day-10 search is not strictly before day 10
    assert as_of_lookup(memory, "red shoes", 9.0) == []
    (h15,) = as_of_lookup(memory, "red shoes", 15.0)
    assert (h15.query, h15.products, h15.scores) == ("red shoes", ("A", "B"), (1.0, 0.5))
    (h25,) = as_of_lookup(memory, "red shoes", 25.0)
    # Mean reciprocal position over 2 searches: A (1 + 1/2) / 2 = 0.75, C 1/2, B 0.5/2 = 0.25.
    assert h25.products == ("A", "C", "B") and h25.scores == pytest.approx((0.75, 0.5, 0.25))
    (h20,) = as_of_lookup(memory, "red shoes", 20.0)
    assert h20.products == ("A", "B")  # day 20 exactly: still only the day-10 search
    # A key first seen after the lookup time is never returned, however close it is.
    for days in (0.0, 15.0, 25.0, 30.0):
        assert all(h.query != "blue hat" for h in as_of_lookup(memory, "blue hat", days))
    assert as_of_lookup(memory, "blue hat", 30.5)[0].query == "blue hat"
    # Vectorised rows, each with its own time.
    rows = memory.lookup_queries(["red shoes"] * 3, [at(5), at(15), at(25)], q=1, v=1)
    assert [[h.products for h in r] for r in rows] == [[], [("A",)], [("A",)]]
    assert len(AsOfMemory.build(log.iloc[:0], HashingNgramEncoder())) == 0


@pytest.mark.parametrize("cfg", [MemoryConfig(), MemoryConfig(v_max=3, min_searches=2),
                                 MemoryConfig(aggregation="best_position", max_position=4)])
def test_as_of_memory_agrees_with_build_query_memory(cfg: MemoryConfig) -> None:
    rng = np.random.default_rng(1)
    texts = ["red shoes", "blue hat", "green dress", "black boot", "red shoe", "white sneaker"]
    rows = [(sid, texts[rng.integers(len(texts))], float(rng.integers(0, 40)),
             [f"P{i}" for i in rng.choice(12, size=rng.integers(1, 7), replace=False)]) for sid in range(60)]
    log = search_log(rows)
    enc = HashingNgramEncoder()
    memory = AsOfMemory.build(log, enc, cfg)
    probes = ["red shoes", "dress", "black boots", "hat"]
    for days in (0.0, 3.0, 10.0, 17.5, 25.0, 39.0, 41.0):
        ref = build_query_memory(log, at(days), enc, cfg)
        # q covers every key: the reference's argpartition breaks boundary ties arbitrarily, AsOfMemory by index.
        expected = ref.lookup(probes, q=len(texts), v=5) if len(ref) else [[] for _ in probes]
        got = memory.lookup_queries(probes, [at(days)] * len(probes), q=len(texts), v=5)
        for e, g in zip(expected, got, strict=True):
            assert [(h.query, h.products) for h in g] == [(h.query, h.products) for h in e], days
            for he, hg in zip(e, g, strict=True):
                assert hg.distance == pytest.approx(he.distance, abs=1e-6)
                assert hg.scores == pytest.approx(he.scores)


def test_title_query_builder_with_as_of_memory() -> None:
    enc = HashingNgramEncoder()
    catalog = catalog_of(4)
    titles = enc.encode(["red sneaker", "green dress", "blue shirt", "black boot"])
    memory = AsOfMemory.build(search_log([(1, "green dress", 2.0, ["I1"]), (2, "green dress", 5.0, ["I3"])]), enc)
    builder = TitleQueryBuilder(enc, memory, catalog, titles, TitleQueryConfig(query_weight=0.0))
    batch = pd.concat([targets([[]], [["green dress"]], t=at(t)) for t in (1.0, 3.0, 6.0)], ignore_index=True)
    vec = builder(batch)  # (3, d)
    assert not vec[0].any()  # no memory yet and weight 0 on the query
    assert float(vec[1] @ l2_normalize(titles[1])[0]) == pytest.approx(1.0, abs=1e-5)  # only the day-2 search
    assert float(vec[2] @ l2_normalize(titles[[1, 3]].mean(axis=0))[0]) == pytest.approx(1.0, abs=1e-5)


# Ten items over two categories: Footwear I0 I2 I4 I6 I8 (rows 0, 2, ...), Clothing I1 I3 ... Query at angle 0.
# Footwear title cosine order: I0 I2 I4 I6 I8; Footwear ID cosine order: I8 I6 I4 I2 I0.
MF_TITLES = angle_vectors([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45])
MF_IDS = angle_vectors([0.4, 0.45, 0.3, 0.35, 0.2, 0.25, 0.1, 0.15, 0.0, 0.05])


def memory_first_ranking(cfg: RetrievalConfig, memory_rows: list[list[int]]) -> list[list[str]]:
    catalog = catalog_of(10, ("Footwear", "Clothing"))
    n = len(memory_rows)
    queries = TitleQueries(np.repeat(QUERY, n, 0), [np.asarray(r, np.int64) for r in memory_rows])
    scorer = RetrievalScorer(catalog, MF_IDS, MF_TITLES, fixed(np.repeat(QUERY, n, 0)), lambda *_: queries, cfg)
    rows = catalog.rows["Footwear"]
    scores = scorer(targets([["I1"]] * n), rows)  # (n, 5)
    return [list(catalog.item_ids[rows][np.argsort(-s, kind="stable")]) for s in scores]


def test_memory_first_title_list() -> None:
    # Memory rows (catalog order): I6, I3 (Clothing: dropped), I4, I6 again (dropped); the second user has none.
    memory = [[6, 3, 4, 6], []]
    got = memory_first_ranking(RetrievalConfig(mode="title_only", k=4), memory)
    assert got == [["I6", "I4", "I0", "I2", "I8"],  # memory in order, then cosine (dedup), cut at K; rest by cosine
                   ["I0", "I2", "I4", "I6", "I8"]]  # no memory products: the cosine list
    cosine = memory_first_ranking(RetrievalConfig(mode="title_only", k=4, title_list="cosine"), memory)
    assert cosine == [["I0", "I2", "I4", "I6", "I8"]] * 2
    # Mixup keeps its structure: top-1 of the ID list (I8), then the memory-first title list.
    assert memory_first_ranking(RetrievalConfig(mode="mixup", k=4, n=1), memory) == [
        ["I8", "I6", "I4", "I0", "I2"], ["I8", "I0", "I2", "I4", "I6"]]
    # The pure merge: memory columns first, then the cosine list without repeats, cut at the cosine list's length.
    top = np.array([[0, 1, 2, 3], [0, 1, 2, 3]])
    assert memory_first_lists([np.array([3, 5, 3]), np.array([], np.int64)], top, 4).tolist() == [
        [3, 5, 0, 1], [0, 1, 2, 3]]


def test_title_query_builder_memory_rows_follow_memory_order() -> None:
    enc = HashingNgramEncoder()
    catalog = catalog_of(6, ("Footwear", "Clothing"))  # Footwear I0 I2 I4 (rows 0, 2, 4), Clothing I1 I3 I5
    titles = enc.encode(["red shoe", "red shirt", "red boot", "blue shirt", "red sneaker", "red dress"])
    # "red shoes" -> I4 (pos 1), I1, I2; the next key "red shoe" -> I0, I2 (I2 is already in).
    log = search_log([(1, "red shoes", 1.0, ["I4", "I1", "I2"]), (2, "red shoe", 1.0, ["I0", "I2"])])
    memory = AsOfMemory.build(log, enc)
    builder = TitleQueryBuilder(enc, memory, catalog, titles)
    batch = pd.concat([targets([[]], [["red shoes"]], t=at(3.0)), targets([[]], [["red shoes"]], t=at(0.5)),
                       targets([["I2"]], t=at(3.0))], ignore_index=True)
    assert [h.query for h in memory.lookup_queries(["red shoes"], [at(3.0)])[0]] == ["red shoes", "red shoe"]
    found = builder.queries(batch, catalog.rows["Footwear"])
    assert [r.tolist() for r in found.memory_rows] == [[4, 2, 0], [], []]  # Footwear only; none before day 1
    assert [r.tolist() for r in builder.queries(batch).memory_rows] == [[4, 1, 2, 0], [], []]
    np.testing.assert_allclose(builder(batch, catalog.rows["Footwear"]), found.vectors)
    # Scorer: the searched user's title list is the memory's Footwear products in order; the others keep cosine.
    ids = np.eye(6, dtype=np.float32)
    for cfg in (RetrievalConfig(mode="title_only", k=3), RetrievalConfig(mode="rrf", k=3)):
        scorer = RetrievalScorer(catalog, ids, titles, fixed(np.ones((3, 6))), builder.queries, cfg)
        cosine = RetrievalScorer(catalog, ids, titles, fixed(np.ones((3, 6))), builder.queries,
                                 RetrievalConfig(mode=cfg.mode, k=3, title_list="cosine"))
        _, title_top, _ = scorer.lists(batch, catalog.rows["Footwear"])
        _, cosine_top, _ = cosine.lists(batch, catalog.rows["Footwear"])
        assert title_top[0].tolist() == [2, 1, 0]  # columns of I4, I2, I0 in the Footwear rows
        assert title_top[1:].tolist() == cosine_top[1:].tolist()


def test_variant_scorer_picks_the_users_size_and_colour() -> None:
    # Family F: V1 (8, Red) V2 (9, Red) V3 (8, Blue) V4 (9, Blue); the user clicked H (another family, 9, Blue).
    items = pd.DataFrame({
        "item_id": ["H", "V1", "V2", "V3", "V4"], "family_id": ["G", "F", "F", "F", "F"],
        "color": ["Blue", "Red", "Red", "Blue", "Blue"], "size": ["9", "8", "9", "8", "9"],
        "subcategory": "sneaker", "category": "Footwear", "title": ["h", "v1", "v2", "v3", "v4"],
    })
    catalog = Catalog.from_items(items)
    title_vecs = angle_vectors([0.4, 0.0, 0.1, 0.2, 0.3])  # title order V1 V2 V3 V4 H
    base = RetrievalScorer(catalog, title_vecs, title_vecs, fixed(QUERY), fixed(QUERY),
                           RetrievalConfig(mode="title_only", k=1))  # the list holds V1 alone
    ranker = VariantRanker({"size_subcategory": 1.0, "colour": 1.0})
    scorer = VariantScorer(base, catalog, ranker)
    batch = targets([["H"]]).assign(target_item_id="V4")
    rows, _ = scorer.ranked_rows(batch, catalog.rows["Footwear"])
    # V4 matches size and colour (2 log 2); V2 size, V3 colour (log 2, candidate order: catalog); V1 neither.
    # K=1 cuts the re-ranked list to V4; the rest follow by title cosine, the seen H last.
    assert catalog.item_ids[rows[0]].tolist() == ["V4"]
    result = evaluate("variants", scorer, batch, catalog, progress=False)
    assert result.rankings["target_rank"].tolist() == [1]
    assert list(result.rankings["ranked_item_ids"][0]) == ["V4", "V1", "V2", "V3", "H"]
    base.cfg = RetrievalConfig(mode="title_only", k=10)
    rows, _ = scorer.ranked_rows(batch, catalog.rows["Footwear"])
    assert catalog.item_ids[rows[0]].tolist() == ["V4", "V2", "V3", "V1"]  # H is seen: out of the list


def test_methods_evaluated_together_share_sources_and_match_alone() -> None:
    # Twelve items in two categories, random ID and title vectors; each target's ID query is its history's mean ID
    # vector and its title query depends on the user, so every batch has sources of its own.
    rng = np.random.default_rng(0)
    items = catalog_of(12, ("Footwear", "Clothing")).items  # families of four variants (colour x size)
    catalog = Catalog.from_items(items.assign(family_id=[f"F{i // 4}" for i in range(12)], subcategory="s",
                                              color=[("Red", "Blue")[i % 2] for i in range(12)],
                                              size=[("8", "9")[(i // 2) % 2] for i in range(12)]))
    id_vecs, title_vecs = rng.normal(size=(12, 4)).astype(np.float32), rng.normal(size=(12, 3)).astype(np.float32)
    row = {f"I{i}": i for i in range(12)}

    def id_queries(histories: list[list[str]]) -> np.ndarray:
        return np.stack([id_vecs[[row[i] for i in h]].mean(axis=0) for h in histories])

    def title_queries(batch: pd.DataFrame, *_: object) -> np.ndarray:
        return title_vecs[[int(u[1:]) % 12 for u in batch["user_id"]]]

    histories = [[f"I{(3 * i) % 12}", f"I{(5 * i + 1) % 12}"] for i in range(7)]
    tg = targets(histories).assign(target_item_id=[f"I{(7 * i + 2) % 12}" for i in range(7)])
    tg["category"] = catalog.items.set_index("item_id").loc[tg["target_item_id"], "category"].to_numpy()
    ranker = VariantRanker({"size_subcategory": 1.0, "colour": 1.0})
    cfgs = {"id": RetrievalConfig(mode="id_only", k=3), "title": RetrievalConfig(mode="title_only", k=3),
            "mixup": RetrievalConfig(mode="mixup", k=3, n=1), "rrf": RetrievalConfig(mode="rrf", k=3)}

    def scorer(cfg: RetrievalConfig) -> RetrievalScorer:
        return RetrievalScorer(catalog, id_vecs, title_vecs, id_queries, title_queries, cfg)

    alone = {m: evaluate(m, scorer(c), tg, catalog, batch_size=2, progress=False) for m, c in cfgs.items()}
    alone["mixup-variants"] = evaluate("mixup-variants", VariantScorer(scorer(cfgs["mixup"]), catalog, ranker), tg,
                                       catalog, batch_size=2, progress=False)
    base = scorer(RetrievalConfig(k=3))
    together = {m: base.with_config(c) for m, c in cfgs.items()}
    together["mixup-variants"] = VariantScorer(base.with_config(cfgs["mixup"]), catalog, ranker)
    got = evaluate_many(together, tg, catalog, batch_size=2, progress=False)
    assert list(got) == list(alone)
    for m, result in got.items():
        pd.testing.assert_frame_equal(result.rankings, alone[m].rankings)
        assert json.dumps(result.metrics) == json.dumps(alone[m].metrics)  # (NaN for the empty cold share)
    # 4 batches (Footwear 4 targets, Clothing 3, two at a time): computed once each, read by the other 4 methods.
    assert base._shared is not None and base._shared.hits == 4 * 4
    assert len({r["target_rank"].tolist().__repr__() for r in (x.rankings for x in got.values())}) > 1
    # Another K is another list: computed for it, not read from the shared entry.
    longer = base.with_config(RetrievalConfig(mode="id_only", k=5))
    pd.testing.assert_frame_equal(evaluate("k5", longer, tg, catalog, batch_size=2, progress=False).rankings,
                                  evaluate("k5", scorer(RetrievalConfig(mode="id_only", k=5)), tg, catalog,
                                           batch_size=2, progress=False).rankings)
    # Shared sources are read-only: a scorer that wrote into them would change the other methods' results.
    src = together["id"].sources(tg.iloc[:2], catalog.rows["Footwear"])
    with pytest.raises(ValueError, match="read-only"):
        src.title_cos[0, 0] = 1.0
