"""GRU4Rec: Session-based Recommendations with Recurrent Neural Networks.

Hidasi, Karatzoglou, Baltrunas, Tikk. ICLR 2016. https://arxiv.org/abs/1511.06939

A GRU over the item sequence; its state at every position, projected to the item space, is
scored against the shared item table with full-softmax cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.seqrec.base import SequentialRecommender, padding_mask


@dataclass(frozen=True)
class GRU4RecConfig:
    """GRU4Rec hyperparameters."""

    n_items: int  # vocab size incl. padding (0) and cold (1)
    dim: int = 64
    hidden_dim: int = 128
    n_layers: int = 1
    max_len: int = 50
    dropout: float = 0.3  # on input item embeddings


class GRU4Rec(SequentialRecommender):
    """GRU over left-padded sequences; padding never enters the recurrence."""

    config_class = GRU4RecConfig

    def __init__(self, config: GRU4RecConfig) -> None:
        super().__init__(config)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.dim, config.hidden_dim, config.n_layers, batch_first=True)
        self.proj = nn.Linear(config.hidden_dim, config.dim)
        self.reset_parameters()

    def _run_gru(self, x: Tensor, real: Tensor) -> Tensor:
        """Run the GRU on real items only: rotate left padding to the right, pack, rotate back."""
        B, L, _ = x.shape
        lengths = real.sum(1)  # (B,)
        shift = (L - lengths)[:, None]  # (B, 1) number of pads
        ar = torch.arange(L, device=x.device)[None, :]  # (1, L)
        fwd = ((ar + shift) % L)[..., None]  # (B, L, 1) real items first
        x = x.gather(1, fwd.expand_as(x))  # (B, L, d)
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=L)  # (B, L, H)
        back = ((ar - shift) % L)[..., None]  # (B, L, 1)
        return out.gather(1, back.expand_as(out))  # (B, L, H), zeros at padding

    def encode(self, seqs: Tensor) -> Tensor:
        """Causal states at every position, in the item space."""
        x = self.emb_dropout(self.item_embedding(seqs))  # (B, L, d)
        return self.proj(self._run_gru(x, padding_mask(seqs)))  # (B, L, d)
