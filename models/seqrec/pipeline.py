"""From Feast sequence features to a trained model and an evaluation scorer.

The item sequence is the clicked and purchased items in time order (searches are not items). The vocabulary is the
items of the training sequences; every other catalog item shares the learned cold row, so cold targets are ranked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from models.evaluation import Catalog
from models.seqrec.base import SequentialRecommender, pad_sequences
from models.seqrec.data import SeqData
from models.seqrec.vocab import COLD, ItemVocab

ITEM_ACTIONS = ("click", "purchase")


def item_sequences(actions: Sequence[Sequence[str]], item_ids: Sequence[Sequence[str]]) -> list[list[str]]:
    """The clicked/purchased item ids of each action list, oldest first."""
    return [[i for a, i in zip(acts, items, strict=True) if a in ITEM_ACTIONS]
            for acts, items in zip(actions, item_ids, strict=True)]


def item_times(actions: Sequence[Sequence[str]], times: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """The epoch ms of each clicked/purchased item of each action list (aligned with `item_sequences`)."""
    return [np.array([t for a, t in zip(acts, ts, strict=True) if a in ITEM_ACTIONS], np.int64)
            for acts, ts in zip(actions, times, strict=True)]


def build_seq_data(train_history: pd.DataFrame, valid: pd.DataFrame, min_count: int = 1) -> tuple[SeqData, ItemVocab]:
    """Vocab + SeqData from per-user training histories and validation targets (both with seq_* lists).

    Items seen fewer than `min_count` times in training share the cold row: it keeps the softmax small on large
    catalogs and gives the cold embedding real training signal. With `seq_timestamps` in the histories, items that
    share a timestamp are one moment (a day's basket on day-resolution data), and no item is trained to be
    predicted from another of its moment (`SeqData.train_moments`).
    """
    train_items = item_sequences(train_history["seq_actions"], train_history["seq_item_ids"])
    vocab = ItemVocab.from_items((i for seq in train_items for i in seq), min_count=min_count)
    long_enough = [k for k, s in enumerate(train_items) if len(s) >= 2]
    train = [vocab.encode(train_items[k]) for k in long_enough]
    moments = None
    if "seq_timestamps" in train_history:
        times = item_times(train_history["seq_actions"], train_history["seq_timestamps"])
        moments = [times[k] for k in long_enough]
    valid_items = item_sequences(valid["seq_actions"], valid["seq_item_ids"])
    # Early stopping only on targets the ID model can rank: a cold target ties with every untrained item.
    warm_target = vocab.encode(valid["target_item_id"].to_numpy()) != COLD
    keep = [k for k, s in enumerate(valid_items) if s and warm_target[k]]
    data = SeqData(
        n_items=len(vocab),
        train=train,
        valid_histories=[vocab.encode(valid_items[k]) for k in keep],
        valid_targets=vocab.encode(valid["target_item_id"].to_numpy()[keep]),
        train_moments=moments,
    )
    return data, vocab


class SeqScorer:
    """Adapts a sequential model to the evaluation `Scorer` contract (scores for one category's catalog rows)."""

    def __init__(self, model: SequentialRecommender, vocab: ItemVocab, catalog: Catalog):
        self.model = model.eval()
        self.vocab = vocab
        self.max_len = model.config.max_len
        self.vocab_of_row = vocab.encode(catalog.item_ids)  # (n_catalog,) cold items -> 1
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray) -> np.ndarray:
        seqs = [self.vocab.encode(s) for s in item_sequences(batch["seq_actions"], batch["seq_item_ids"])]
        x = pad_sequences(seqs, self.max_len).to(self.device)  # (B, L)
        scores = self.model.score_all(x)  # (B, n_vocab)
        scores[:, 0] = -torch.inf  # padding is never an item
        return scores[:, torch.as_tensor(self.vocab_of_row[cat_rows], device=self.device)].float().cpu().numpy()
