"""CORE: Simple and Effective Session-based Recommendation within Consistent Representation Space.

Hou, Hu, Zhang, Zhao. SIGIR 2022. https://arxiv.org/abs/2204.11067

Representation-consistent encoding: the session vector is a convex combination (weights sum to 1)
of the session's ITEM embeddings, so it lives in the item space; CORE-ave uses uniform weights,
CORE-trm learns them with a transformer. Robust distance measuring: cosine similarity over a
temperature, with dropout on the session's item embeddings and on the candidate item table.
Its item table is the paper's ID embedding model (Liu et al., Sec. 3.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from models.seqrec.base import (
    SequentialRecommender,
    attention_mask,
    causal_mask,
    fit_length,
    last_position,
    mask_padding_scores,
    masked_softmax,
    padding_mask,
    position_ids,
)
from models.seqrec.layers import TransformerEncoder


@dataclass(frozen=True)
class COREConfig:
    """CORE hyperparameters (RecBole defaults, d=64)."""

    n_items: int  # vocab size incl. padding (0) and cold (1)
    variant: Literal["ave", "trm"] = "ave"  # mean pooling or transformer-learned weights
    dim: int = 64
    max_len: int = 50
    n_layers: int = 2  # trm only
    n_heads: int = 2  # trm only
    dropout: float = 0.5  # trm hidden/attention dropout
    sess_dropout: float = 0.2  # on the session's item embeddings
    item_dropout: float = 0.2  # on the candidate item table (training only)
    temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.variant not in ("ave", "trm"):
            raise ValueError(f"variant must be 'ave' or 'trm', got {self.variant!r}")


class CORE(SequentialRecommender):
    """CORE-ave / CORE-trm; scores are cosine / temperature."""

    config_class = COREConfig

    def __init__(self, config: COREConfig) -> None:
        super().__init__(config)
        self.sess_dropout = nn.Dropout(config.sess_dropout)
        self.item_dropout = nn.Dropout(config.item_dropout)
        self.weight_net: TransformerEncoder | None = None
        if config.variant == "trm":
            self.weight_net = TransformerEncoder(
                config.dim, config.max_len, config.n_layers, config.n_heads, config.dropout
            )
            self.weight_head = nn.Linear(config.dim, 1)
        self.reset_parameters()

    def _prefix_weights(self, seqs: Tensor, x: Tensor) -> Tensor:
        """Row t: weights over positions of the session ending at t (sum to 1 over its real items)."""
        B, L = seqs.shape
        if self.weight_net is None:
            alpha = x.new_zeros(B, L)  # equal logits -> mean pooling
        else:
            # causal transformer: position i only sees items <= i, so every prefix is exact
            h = self.weight_net(x, position_ids(seqs), attention_mask(seqs, causal=True))  # (B, L, d)
            alpha = self.weight_head(h).squeeze(-1)  # (B, L)
        allowed = padding_mask(seqs)[:, None, :] & causal_mask(L, seqs.device)  # (B, L, L)
        return masked_softmax(alpha[:, None, :].expand(B, L, L), allowed)  # (B, L, L)

    def encode(self, seqs: Tensor) -> Tensor:
        """Normalized session vector for the prefix ending at every position."""
        x = self.sess_dropout(self.item_embedding(seqs))  # (B, L, d)
        s = self._prefix_weights(seqs, x) @ x  # (B, L, d)
        return F.normalize(s, dim=-1)  # (B, L, d)

    def session_weights(self, seqs: Tensor) -> Tensor:
        """Position weights (B, max_len) of the whole session: sum to 1 over real items, 0 on padding."""
        seqs = fit_length(seqs, self.max_len)  # (B, L)
        x = self.sess_dropout(self.item_embedding(seqs))  # (B, L, d)
        return last_position(self._prefix_weights(seqs, x))  # (B, L)

    def item_embeddings(self) -> Tensor:
        """L2-normalized item table (n_items, d): cosine scoring = dot product with the query."""
        return F.normalize(self.item_embedding.weight, dim=-1)  # (n_items, d)

    def item_rows(self, items: Tensor) -> Tensor:
        """Normalized rows, with item dropout in training, as `logits` uses the table."""
        return F.normalize(self.item_dropout(self.item_embedding(items)), dim=-1)  # (..., d)

    def logit_scale(self) -> float:
        return 1 / self.config.temperature

    def logits(self, h: Tensor) -> Tensor:
        """Cosine / temperature against every item, with item dropout in training."""
        table = F.normalize(self.item_dropout(self.item_embedding.weight), dim=-1)  # (n_items, d)
        return mask_padding_scores(h @ table.T / self.config.temperature)  # (..., n_items)
