"""BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations from Transformer.

Sun, Liu, Wu, Pei, Lin, Ou, Jiang. CIKM 2019. https://arxiv.org/abs/1904.06690

Bidirectional transformer trained with the cloze task: random items are replaced by a [MASK]
token (an extra index, `n_items`, outside the candidate set) and predicted from both sides.
To recommend, [MASK] is appended after the history and its state is scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.seqrec.base import (
    SeqBatch,
    SequentialRecommender,
    attention_mask,
    fit_length,
    last_position,
    position_ids,
)
from models.seqrec.layers import TransformerEncoder
from models.seqrec.vocab import COLD, PAD


@dataclass(frozen=True)
class BERT4RecConfig:
    """BERT4Rec hyperparameters."""

    n_items: int  # vocab size incl. padding (0) and cold (1); [MASK] is index n_items
    dim: int = 64
    max_len: int = 50  # includes the appended [MASK] at prediction time
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    mask_prob: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob <= 1.0 or self.max_len < 2:
            raise ValueError("need 0 < mask_prob <= 1 and max_len >= 2 (history + [MASK])")


class BERT4Rec(SequentialRecommender):
    """Bidirectional transformer with a cloze objective."""

    config_class = BERT4RecConfig

    def __init__(self, config: BERT4RecConfig) -> None:
        super().__init__(config, extra_tokens=1)
        self.mask_index = config.n_items
        self.encoder = TransformerEncoder(
            config.dim, config.max_len, config.n_layers, config.n_heads, config.dropout
        )
        # BERT's output transform before scoring against the item table
        self.head = nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU(), nn.LayerNorm(config.dim))
        self.reset_parameters()

    def encode(self, seqs: Tensor) -> Tensor:
        """Bidirectional states at every position (not causal)."""
        x = self.item_embedding(seqs)  # (B, L, d)
        h = self.encoder(x, position_ids(seqs), attention_mask(seqs, causal=False))  # (B, L, d)
        return self.head(h)  # (B, L, d)

    def sequence_representation(self, seqs: Tensor) -> Tensor:
        """State of a [MASK] appended after the latest max_len - 1 items."""
        seqs = fit_length(seqs, self.max_len - 1)  # (B, L-1)
        mask = seqs.new_full((seqs.size(0), 1), self.mask_index)  # (B, 1)
        return last_position(self.encode(torch.cat([seqs, mask], dim=1)))  # (B, d)

    def loss(self, batch: SeqBatch, negatives: int = 0) -> Tensor:
        """Cloze: mask each real item with prob mask_prob (at least one per row), predict it over all items (or
        `negatives` sampled ones)."""
        seqs = batch.seqs[:, 1:]  # (B, L) the latest max_len items of each window
        real = (seqs != PAD) & (seqs != COLD)  # (B, L) maskable: real, non-cold items (see SeqBatch.targets)
        masked = (torch.rand(seqs.shape, device=seqs.device) < self.config.mask_prob) & real  # (B, L)
        empty = ~masked.any(dim=1)  # (B,)
        masked[:, -1] |= empty & real[:, -1]  # rows with no mask: mask the latest item, as in prediction
        h = self.encode(seqs.masked_fill(masked, self.mask_index))  # (B, L, d)
        if not masked.any():
            return h.sum() * 0.0  # nothing to predict in this batch
        return self.softmax_loss(h[masked], seqs[masked], negatives)  # h[masked]: (N, d)
