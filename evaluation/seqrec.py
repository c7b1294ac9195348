"""The sequential ID models as evaluation scorers: scores over one category's catalog rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from feature_repo.sequences import item_sequences
from models.catalog import Catalog
from models.seqrec.base import SequentialRecommender, pad_sequences
from models.seqrec.vocab import ItemVocab


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
