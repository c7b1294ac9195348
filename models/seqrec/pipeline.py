"""From Feast sequence features to trained models: the val fit that selects the epochs, then the test-period refit.

The item sequence is the clicked and purchased items in time order (searches are not items). The vocabulary is the
items of the training sequences (seen at least `min_count` times); every other catalog item maps to the shared cold
row, which the models' own evaluation rows rank (pessimistically, as a tie block) but no ID list ever holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch

from feature_repo.sequences import item_sequences, item_times
from models.seqrec.base import SequentialRecommender
from models.seqrec.data import SeqData
from models.seqrec.registry import build_model
from models.seqrec.train import TrainConfig, TrainResult, seed_everything, train
from models.seqrec.vocab import COLD, ItemVocab


@dataclass(frozen=True)
class Fit:
    """One trained model with its vocabulary, its training settings and what training did."""

    model: SequentialRecommender
    vocab: ItemVocab
    config: TrainConfig
    result: TrainResult


def fit_and_refit(name: str, history_val: pd.DataFrame, history_test: pd.DataFrame, valid: pd.DataFrame,
                  cfg: TrainConfig, min_count: int = 1, **model_overrides: Any) -> tuple[Fit, Fit]:
    """The val fit (trained on `history_val`, early-stopped on the `valid` targets) and the test fit: the same model
    refitted from scratch on `history_test` for the val fit's best epoch count, without validation data."""
    data, vocab = build_seq_data(history_val, valid, min_count=min_count)
    model = seeded_model(name, len(vocab), cfg.seed, **model_overrides)
    first = Fit(model, vocab, cfg, train(model, data, cfg))
    refit_cfg = replace(cfg, epochs=first.result.best_epoch + 1)
    data, vocab = build_seq_data(history_test, None, min_count=min_count)
    model = seeded_model(name, len(vocab), cfg.seed, **model_overrides)
    return first, Fit(model, vocab, refit_cfg, train(model, data, refit_cfg))


def seeded_model(name: str, n_items: int, seed: int, **model_overrides: Any) -> SequentialRecommender:
    """`build_model` with its initial weights drawn after seeding with `seed`: a fit's start does not depend on
    what used the global random state before it in the process (another asset's training, in the in-process
    executor), so a fit is the same whichever steps ran first."""
    seed_everything(seed)
    return build_model(name, n_items, **model_overrides)


def rolling_refits(name: str, start: Fit, histories: Iterable[pd.DataFrame], epochs: int, min_count: int = 1,
                   **model_overrides: Any) -> Iterator[Fit]:
    """Rolling refits after `start`, one per history (each fit's per-user training sequences, oldest first): every
    refit is warm-started from the previous one (`warm_start`) and trained `epochs` epochs on its history, as a
    nightly or weekly retrain continues from yesterday's model. Yields each fit as it is done."""
    fit = start
    for history in histories:
        data, vocab = build_seq_data(history, None, min_count=min_count)
        cfg = replace(fit.config, epochs=epochs)
        model = warm_start(seeded_model(name, len(vocab), cfg.seed, **model_overrides), vocab, fit)
        fit = Fit(model, vocab, cfg, train(model, data, cfg))
        yield fit


def build_seq_data(train_history: pd.DataFrame, valid: pd.DataFrame | None, min_count: int = 1
                   ) -> tuple[SeqData, ItemVocab]:
    """Vocab + SeqData from per-user training histories and validation targets (both with seq_* lists; `valid`
    None: no validation data).

    Items seen fewer than `min_count` times in training share the cold row (a smaller softmax on large catalogs,
    at the price of those items' own rows). With `seq_timestamps` in the histories, items that
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
    if valid is None:
        return SeqData(n_items=len(vocab), train=train, train_moments=moments), vocab
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


def warm_start(model: SequentialRecommender, vocab: ItemVocab, previous: Fit) -> SequentialRecommender:
    """Copy `previous`'s weights into `model` (same architecture, built for `vocab`): every parameter of the same
    shape as is, and in every item-indexed table (first dimension the vocabulary size) the rows of the items both
    vocabularies hold, padding and cold included; items new to `vocab` keep their fresh initialisation. What a
    nightly incremental retrain starts from."""
    old_n, new_n = len(previous.vocab), len(vocab)
    old_rows = {item: i for i, item in enumerate(previous.vocab.decode(range(old_n)))}
    new_items = vocab.decode(range(new_n))
    shared = [(j, old_rows[item]) for j, item in enumerate(new_items) if item in old_rows]
    dst_idx = torch.tensor([j for j, _ in shared], dtype=torch.long)
    src_idx = torch.tensor([i for _, i in shared], dtype=torch.long)
    state = model.state_dict()
    with torch.no_grad():
        for name, old in previous.model.state_dict().items():
            new = state[name]
            if new.dim() >= 1 and new.shape[0] == new_n and old.shape[0] == old_n and new.shape[1:] == old.shape[1:]:
                new[dst_idx] = old[src_idx].to(new.dtype)  # an item-indexed table: row by row
            elif new.shape == old.shape:
                new.copy_(old)
    model.load_state_dict(state)
    return model
