"""From Feast sequence features to a trained model and an evaluation scorer.

The item sequence is the clicked and purchased items in time order (searches are not items). The vocabulary is the
items of the training sequences; every other catalog item shares the learned cold row, so cold targets are ranked.
"""

from __future__ import annotations

import pandas as pd

from feature_repo.sequences import item_sequences, item_times
from models.seqrec.data import SeqData
from models.seqrec.vocab import COLD, ItemVocab


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


