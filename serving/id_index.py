"""The ID-embedding collection: a sequential model's item table in Qdrant, one point per item it has a row for.

Catalog items without a trained row (not seen `min_count` times in training, or new since) are left out: they
would all carry the one shared cold vector, a block of ties the ID model cannot tell apart, so no ID list holds them
(the title side finds them). Each point carries its category as the `partition` payload (keyword-indexed), so a
search can stay in one category.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from feature_repo.sequences import item_sequences
from models.common import l2_normalize
from models.seqrec.base import SequentialRecommender
from models.seqrec.vectors import item_vectors, query_vectors
from models.seqrec.vocab import ItemVocab
from serving.vectorstore import VectorStore


def write_id_embeddings(store: VectorStore, name: str, model: SequentialRecommender, vocab: ItemVocab,
                        items: pd.DataFrame, batch_size: int = 2048) -> int:
    """Upsert one point per item of `items` with its own row in the model (payload: item_id, category, title)."""
    items = items[vocab.known(items["item_id"])]
    if items.empty:
        return 0
    ids = items["item_id"].to_numpy()
    vectors = item_vectors(model, vocab, ids)
    payloads = [{"item_id": i, "category": c, "title": t} for i, c, t in zip(ids, items["category"], items["title"],
                                                                              strict=True)]
    return store.upsert(name, list(ids), vectors, payloads, partitions=list(items["category"]), batch_size=batch_size)


def max_topk_disagreement(store: VectorStore, name: str, model: SequentialRecommender, vocab: ItemVocab,
                          items: pd.DataFrame, targets: pd.DataFrame, k: int = 10) -> float:
    """Largest gap between Qdrant's top-k cosine scores and exact numpy scoring, over `targets`' histories."""
    hist = item_sequences(targets["seq_actions"], targets["seq_item_ids"])
    q = query_vectors(model, vocab, hist)  # (B, d)
    q = l2_normalize(q)
    worst = 0.0
    items = items[vocab.known(items["item_id"])]
    for cat, idx in targets.groupby("category").indices.items():
        cat_items = items[items["category"] == cat]
        if cat_items.empty:
            continue
        v = item_vectors(model, vocab, cat_items["item_id"].to_numpy())
        v = l2_normalize(v)
        exact = -np.sort(-(q[idx] @ v.T), axis=1)[:, :k]  # (b, k)
        hits = store.search(name, q[idx], k, partition=cat)
        got = np.array([[h.score for h in row] for row in hits])
        worst = max(worst, float(np.abs(got - exact).max()))
    return worst
