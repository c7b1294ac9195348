"""The ID-embedding collection: exact agreement with the model; items without a row of their own are in no ID list
(serving's collection or the evaluation's), while the ID models' own rows still rank them on the cold row."""

import numpy as np
import pandas as pd
import pytest
import torch

from evaluation.retrieval import RetrievalScorer
from evaluation.seqrec import SeqScorer
from feature_repo.sequences import item_sequences
from models.catalog import Catalog
from models.retrieval import RetrievalConfig
from models.seqrec import ItemVocab, build_model
from models.seqrec.pipeline import build_seq_data
from models.seqrec.vectors import item_vectors, known_item_vectors, query_vectors
from models.text import HashingNgramEncoder, embed_catalog
from serving.id_index import max_topk_disagreement, write_id_embeddings
from serving.recommend import OnlineRetriever, UserContext
from serving.vectorstore import VectorStore

T = pd.Timestamp("2024-05-01", tz="UTC")


def _catalog() -> pd.DataFrame:
    ids = [f"I{i:02d}" for i in range(30)]
    return pd.DataFrame({"item_id": ids, "category": ["A" if i < 18 else "B" for i in range(30)],
                         "title": [f"item {i}" for i in range(30)]})


def _targets(rng: np.random.Generator, n: int = 12) -> pd.DataFrame:
    rows = []
    for u in range(n):
        items = [f"I{i:02d}" for i in rng.integers(0, 20, size=4)]
        rows.append({"user_id": f"u{u}", "category": "A" if u % 2 else "B", "target_item_id": "I00",
                     "seq_actions": ["search", *["click"] * 4], "seq_item_ids": ["", *items]})
    return pd.DataFrame(rows)


def test_qdrant_top10_equals_exact_scores_and_holds_only_items_with_a_row() -> None:
    torch.manual_seed(0)
    items = _catalog()
    vocab = ItemVocab.from_items(f"I{i:02d}" for i in range(20))  # I20..I29 were never trained
    model = build_model("core-trm", len(vocab), max_len=8, dim=16)
    store = VectorStore.memory()
    assert write_id_embeddings(store, "ids", model, vocab, items) == 20
    assert write_id_embeddings(store, "ids", model, vocab, items) == 20  # idempotent
    assert store.count("ids", partition="A") == 18 and store.count("ids", partition="B") == 2  # I18, I19
    targets = _targets(np.random.default_rng(1))
    assert max_topk_disagreement(store, "ids", model, vocab, items, targets) < 1e-5
    vecs = item_vectors(model, vocab, items["item_id"].to_numpy())
    cold_row = model.item_embeddings()[1].detach().numpy()
    np.testing.assert_allclose(vecs[20:], np.tile(cold_row, (10, 1)), rtol=1e-6)  # the model's own view
    assert not np.allclose(vecs[0], cold_row)
    unit = known_item_vectors(model, vocab, items["item_id"].to_numpy())  # what the ranker's id_cos reads
    assert np.isnan(unit[20:]).all() and np.allclose(np.linalg.norm(unit[:20], axis=1), 1.0, atol=1e-5)
    # Qdrant's best item in category A is the exact cosine argmax among warm items (cold ones tie on the cold row).
    q = query_vectors(model, vocab, item_sequences(targets["seq_actions"], targets["seq_item_ids"]))[:1]
    in_a = items["category"].to_numpy() == "A"
    cos = vecs[in_a] @ q[0] / np.linalg.norm(vecs[in_a], axis=1) / np.linalg.norm(q[0])
    best = store.search("ids", q, 1, partition="A")[0][0]
    assert np.isclose(best.score, cos.max(), atol=1e-5)
    assert best.payload["item_id"] == items["item_id"].to_numpy()[in_a][np.argmax(cos)]


def test_seq_scorer_gives_untrained_catalog_items_the_cold_score() -> None:
    torch.manual_seed(0)
    items = _catalog()
    catalog = Catalog.from_items(items)
    targets = _targets(np.random.default_rng(2))
    hist = targets[["user_id", "seq_actions", "seq_item_ids"]]
    valid = targets.assign(target_item_id="I03")
    data, vocab = build_seq_data(hist, valid)
    model = build_model("sasrec-ce", len(vocab), max_len=8, dim=16)
    scorer = SeqScorer(model, vocab, catalog)
    rows = catalog.rows["B"]
    scores = scorer(targets.head(3), rows)  # (3, 12)
    assert scores.shape == (3, len(rows))
    untrained = ~catalog.items["item_id"].iloc[rows].isin(vocab.to_list()).to_numpy()
    assert untrained.sum() >= 2
    # every untrained item gets exactly the score of the cold row
    assert np.allclose(scores[:, untrained], scores[:, untrained][:, :1])
    assert np.isfinite(scores).all()
    with torch.no_grad():
        model.item_embedding.weight[1] += 1.0  # moving the cold row moves every untrained item's score
    moved = scorer(targets.head(3), rows)
    assert not np.allclose(moved[:, untrained], scores[:, untrained])


@pytest.mark.parametrize("history", [["I03", "I25"], ["I27"]], ids=["warm-and-cold", "cold-only"])
def test_the_id_list_never_holds_an_item_on_the_cold_row(history: list[str]) -> None:
    """In a category of 12 items of which 10 share the cold row, the ID list is the 2 items with rows, on the
    serving path (the collection) and the evaluation path (`id_known`) alike, even for a history of cold items."""
    torch.manual_seed(0)
    items = _catalog().assign(family_id=lambda d: d["item_id"], created_at=T - pd.Timedelta(days=1))
    vocab = ItemVocab.from_items(f"I{i:02d}" for i in range(20))  # category B: I18, I19 have rows; I20..I29 not
    model = build_model("core-trm", len(vocab), max_len=8, dim=16).eval()  # no dropout: both paths see one query
    catalog = Catalog.from_items(items)
    store = VectorStore.memory()
    write_id_embeddings(store, "item_id_embeddings", model, vocab, items)
    store.upsert("item_title_embeddings", list(items["item_id"]), embed_catalog(HashingNgramEncoder(), items),
                 partitions=list(items["category"]))
    cfg = RetrievalConfig(mode="id_only", k=10, exclude_seen=False)
    queries = lambda h: query_vectors(model, vocab, h)  # noqa: E731
    online = OnlineRetriever(store, items, HashingNgramEncoder(), queries, cfg=cfg, id_items=vocab.to_list())
    served = online.recommend(UserContext("B", history, None, T)).id_list
    assert sorted(served) == ["I18", "I19"]
    ids = item_vectors(model, vocab, catalog.item_ids)
    scorer = RetrievalScorer(catalog, ids, ids, queries, lambda *_: np.zeros((1, 16), np.float32), cfg,
                             id_known=vocab.known(catalog.item_ids))
    rows = catalog.rows["B"]
    batch = pd.DataFrame([{"target_ts": T, "seq_actions": ["click"] * len(history), "seq_item_ids": history,
                           "seq_queries": [""] * len(history)}])
    id_top = scorer.sources(batch, rows).id_top[0]
    evaluated = catalog.item_ids[rows[id_top[id_top >= 0]]].tolist()
    assert evaluated == served  # same items, same order
    # Without the mask the evaluation's list would be padded with cold-row items (the old cold block).
    unmasked = RetrievalScorer(catalog, ids, ids, queries, lambda *_: np.zeros((1, 16), np.float32), cfg)
    assert len(unmasked.sources(batch, rows).id_top[0]) == 10
