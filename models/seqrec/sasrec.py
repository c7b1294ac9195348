"""SASRec: Self-Attentive Sequential Recommendation.

Kang, McAuley. ICDM 2018. https://arxiv.org/abs/1808.09781

Causal transformer over the item sequence, scored by dot product with the shared item table.
Two losses: full-softmax cross-entropy (default; the stronger modern form) and the paper's binary
cross-entropy with one uniformly sampled negative per position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from models.seqrec.base import SeqBatch, SequentialRecommender, attention_mask, position_ids
from models.seqrec.layers import TransformerEncoder
from models.seqrec.vocab import PAD


@dataclass(frozen=True)
class SASRecConfig:
    """SASRec hyperparameters."""

    n_items: int  # vocab size incl. padding (0) and cold (1)
    dim: int = 64
    max_len: int = 50
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    loss_type: Literal["ce", "bce"] = "ce"

    def __post_init__(self) -> None:
        if self.loss_type not in ("ce", "bce"):
            raise ValueError(f"loss_type must be 'ce' or 'bce', got {self.loss_type!r}")


class SASRec(SequentialRecommender):
    """Unidirectional transformer; next item at every position."""

    config_class = SASRecConfig

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__(config)
        self.encoder = TransformerEncoder(
            config.dim, config.max_len, config.n_layers, config.n_heads, config.dropout
        )
        self.reset_parameters()

    def encode(self, seqs: Tensor) -> Tensor:
        """Causal states at every position."""
        x = self.item_embedding(seqs)  # (B, L, d)
        return self.encoder(x, position_ids(seqs), attention_mask(seqs, causal=True))  # (B, L, d)

    def loss(self, batch: SeqBatch, negatives: int = 0) -> Tensor:
        """CE over all items (or `negatives` sampled ones), or BCE against one sampled negative per position."""
        if self.config.loss_type == "ce":
            return super().loss(batch, negatives)
        h = batch.query_states(self.encode(batch.inputs))  # (B, L, d)
        keep = batch.targets != PAD  # (B, L)
        if not keep.any():
            return h.sum() * 0.0  # nothing to predict in this batch
        h, pos = h[keep], batch.targets[keep]  # (N, d), (N,)
        # uniform over [1, n_items) minus the positive: draw from n_items - 2 values, skip pos
        neg = torch.randint(1, self.n_items - 1, pos.shape, device=pos.device)  # (N,)
        neg = neg + (neg >= pos).long()  # (N,)
        pos_logit = (h * self.item_embedding(pos)).sum(-1)  # (N,)
        neg_logit = (h * self.item_embedding(neg)).sum(-1)  # (N,)
        logits = torch.cat([pos_logit, neg_logit])  # (2N,)
        labels = torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)])  # (2N,)
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / len(pos)
