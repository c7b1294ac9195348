"""The ID-embedding collection: a sequential model's item table in Qdrant, one point per catalog item.

Catalog items without a trained ID (never interacted with in training) carry the model's shared cold vector.
Each point carries its category as the `partition` payload (keyword-indexed), so a search can stay in one category.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from models.seqrec.base import SequentialRecommender, pad_sequences
from models.seqrec.pipeline import item_sequences
from models.seqrec.vocab import ItemVocab
from serving.vectorstore import VectorStore


@torch.no_grad()
def item_vectors(model: SequentialRecommender, vocab: ItemVocab, item_ids: np.ndarray) -> np.ndarray:
    """The model's item-table row for each catalog item (cold items share row 1). (n, d) float32."""
    table = model.item_embeddings()[: len(vocab)].float().cpu().numpy()  # (n_vocab, d)
    return table[vocab.encode(item_ids)]


@torch.no_grad()
def query_vectors(model: SequentialRecommender, vocab: ItemVocab, histories: list[list[str]]) -> np.ndarray:
    """The model's sequence representation of each item history, in the item space. (B, d) float32."""
    x = pad_sequences([vocab.encode(h) for h in histories], model.config.max_len)
    device = next(model.parameters()).device
    return model.sequence_representation(x.to(device)).float().cpu().numpy()


def write_id_embeddings(store: VectorStore, name: str, model: SequentialRecommender, vocab: ItemVocab,
                        items: pd.DataFrame, batch_size: int = 2048) -> int:
    """Upsert one point per catalog item (payload: item_id, category, title, has_id_embedding)."""
    ids = items["item_id"].to_numpy()
    vectors = item_vectors(model, vocab, ids)
    warm = vocab.encode(ids) > 1
    payloads = [{"item_id": i, "category": c, "title": t, "has_id_embedding": bool(w)}
                for i, c, t, w in zip(ids, items["category"], items["title"], warm, strict=True)]
    return store.upsert(name, list(ids), vectors, payloads, partitions=list(items["category"]), batch_size=batch_size)


def max_topk_disagreement(store: VectorStore, name: str, model: SequentialRecommender, vocab: ItemVocab,
                          items: pd.DataFrame, targets: pd.DataFrame, k: int = 10) -> float:
    """Largest gap between Qdrant's top-k cosine scores and exact numpy scoring, over `targets`' histories."""
    hist = item_sequences(targets["seq_actions"], targets["seq_item_ids"])
    q = query_vectors(model, vocab, hist)  # (B, d)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    worst = 0.0
    for cat, idx in targets.groupby("category").indices.items():
        cat_items = items[items["category"] == cat]
        v = item_vectors(model, vocab, cat_items["item_id"].to_numpy())
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        exact = -np.sort(-(q[idx] @ v.T), axis=1)[:, :k]  # (b, k)
        hits = store.search(name, q[idx], k, partition=cat)
        got = np.array([[h.score for h in row] for row in hits])
        worst = max(worst, float(np.abs(got - exact).max()))
    return worst
