"""A sequential model as vectors: its item table per catalog item, and its sequence representation of histories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from models.common import l2_normalize
from models.seqrec.base import SequentialRecommender, pad_sequences
from models.seqrec.vocab import COLD, ItemVocab


@torch.no_grad()
def item_vectors(model: SequentialRecommender, vocab: ItemVocab, item_ids: np.ndarray) -> np.ndarray:
    """The model's item-table row for each catalog item (items without a row share the cold row 1). (n, d) float32."""
    table = model.item_embeddings()[: len(vocab)].float().cpu().numpy()  # (n_vocab, d)
    return table[vocab.encode(item_ids)]


@torch.no_grad()
def query_vectors(model: SequentialRecommender, vocab: ItemVocab, histories: list[list[str]]) -> np.ndarray:
    """The model's sequence representation of each item history, in the item space. (B, d) float32."""
    x = pad_sequences([vocab.encode(h) for h in histories], model.config.max_len)
    device = next(model.parameters()).device
    return model.sequence_representation(x.to(device)).float().cpu().numpy()


@torch.no_grad()
def unit_item_vectors(model: SequentialRecommender, vocab: ItemVocab, item_ids: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """`l2_normalize(item_vectors(...))` and whether each item has a row of its own ((n, d) float32, (n,) bool),
    with one vocabulary lookup and the table normalised per vocabulary row, not per catalog item (the same floats:
    each row is scaled alone)."""
    table = l2_normalize(model.item_embeddings()[: len(vocab)].float().cpu().numpy())  # (n_vocab, d)
    rows = vocab.encode(item_ids)  # (n,) COLD where the item has no row of its own
    return table[rows], rows > COLD


def known_item_vectors(model: SequentialRecommender, vocab: ItemVocab, item_ids: np.ndarray) -> np.ndarray:
    """Unit item-table rows, NaN for items without a row of their own: what the ranker's `id_cos` reads, so an item
    the model never saw says "no ID yet", not a cosine with the shared cold row. (n, d) float32."""
    out, known = unit_item_vectors(model, vocab, item_ids)
    out[~known] = np.nan
    return out


def trained_id_vectors(model: Any, vocab: Any) -> Callable[[list[str | None]], np.ndarray]:
    """`id_vector_of` for `LLMGenerateScorer`: the ID model's item vector of each generated id, NaN rows for None and
    for items without a trained embedding (the scorer then keeps the sequence representation)."""
    def id_vector_of(ids: list[str | None]) -> np.ndarray:
        known = [i if i is not None and i in vocab else None for i in ids]
        vec = item_vectors(model, vocab, np.array([i or "" for i in known], dtype=object))  # (B, d)
        vec[[i is None for i in known]] = np.nan
        return vec

    return id_vector_of
