"""The ID-embedding collection: exact agreement with the model, and the cold row for untrained items."""

import numpy as np
import pandas as pd
import torch

from evaluation.seqrec import SeqScorer
from feature_repo.sequences import item_sequences
from models.catalog import Catalog
from models.seqrec import ItemVocab, build_model
from models.seqrec.pipeline import build_seq_data
from models.seqrec.vectors import item_vectors, query_vectors
from serving.id_index import max_topk_disagreement, write_id_embeddings
from serving.vectorstore import VectorStore


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


def test_qdrant_top10_equals_exact_scores_and_cold_items_share_the_cold_row() -> None:
    torch.manual_seed(0)
    items = _catalog()
    vocab = ItemVocab.from_items(f"I{i:02d}" for i in range(20))  # I20..I29 were never trained
    model = build_model("core-trm", len(vocab), max_len=8, dim=16)
    store = VectorStore.memory()
    assert write_id_embeddings(store, "ids", model, vocab, items) == 30
    assert write_id_embeddings(store, "ids", model, vocab, items) == 30  # idempotent
    assert store.count("ids", partition="A") == 18 and store.count("ids", partition="B") == 12
    targets = _targets(np.random.default_rng(1))
    assert max_topk_disagreement(store, "ids", model, vocab, items, targets) < 1e-5
    vecs = item_vectors(model, vocab, items["item_id"].to_numpy())
    cold_row = model.item_embeddings()[1].detach().numpy()
    np.testing.assert_allclose(vecs[20:], np.tile(cold_row, (10, 1)), rtol=1e-6)
    assert not np.allclose(vecs[0], cold_row)
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
