"""Shared contract and utilities for sequential recommenders.

Padding convention: sequences are LEFT-padded with index 0 and hold the most recent `max_len`
items, oldest first, so the latest item is always at column -1 (`last_position`). Every model
sees inputs of exactly `max_len` columns (`fit_length`). Position embeddings count from the
oldest real item (`position_ids`), so a prefix gets the same positions inside a training window
as it does on its own at inference; that is what makes one causal pass train every prefix.

Contract (`SequentialRecommender`): `loss(batch)` trains, `score_all(seqs) -> (B, n_items)` ranks.
Scores are `<sequence_representation(seqs), item_embeddings()>` (times a model constant), so the
item table can be exported as ID embeddings and the representation used as the query vector.
Subclasses implement `encode`, a state at every position; for the default next-item `loss` it
must be causal (position t sees only items <= t).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.seqrec.vocab import COLD, PAD


@dataclass(frozen=True)
class SeqBatch:
    """A training batch of left-padded windows of `max_len + 1` consecutive items.

    `query` (optional, `models.seqrec.data.query_positions`) says which input position's state predicts each
    target: by default the one just before it; on data with moments (a day's basket, several items at one
    timestamp), the last position of the moment before the target's, so no target is predicted from an item of its
    own moment, and every item of a basket is predicted from the same state, the one serving reads.
    """

    seqs: Tensor  # (B, L+1) vocab indices
    query: Tensor | None = None  # (B, L) input position predicting targets[:, t]; -1: none (ignored)

    @property
    def inputs(self) -> Tensor:
        """Histories for next-item prediction at every position."""
        return self.seqs[:, :-1]  # (B, L)

    @property
    def targets(self) -> Tensor:
        """Next item at every input position; 0 (ignored) where the input is padding or the target is cold.

        The shared cold row is never a training target: it stands for many different items, and learning to predict
        it would push every untrained catalog item to the top of the ranking at once.
        """
        nxt = self.seqs[:, 1:]  # (B, L)
        ignore = (nxt == COLD) | (self.inputs == PAD)  # (B, L)
        if self.query is not None:  # the predicting position must be a real item
            q = self.query.clamp(min=0)  # (B, L)
            ignore |= (self.query < 0) | (self.inputs.gather(1, q) == PAD)
        return nxt.masked_fill(ignore, PAD)  # (B, L)

    def query_states(self, h: Tensor) -> Tensor:
        """The state predicting each target: h (B, L, d) -> (B, L, d), gathered at `query` when given."""
        if self.query is None:
            return h
        q = self.query.clamp(min=0)[..., None].expand(-1, -1, h.size(-1))  # (B, L, d)
        return h.gather(1, q)  # (B, L, d)

    def to(self, device: torch.device | str) -> SeqBatch:
        """Move to a device."""
        return SeqBatch(self.seqs.to(device), None if self.query is None else self.query.to(device))


def pad_sequences(seqs: Sequence[np.ndarray], max_len: int) -> Tensor:
    """Left-pad variable-length index arrays into a LongTensor (N, max_len), keeping the latest items."""
    out = np.full((len(seqs), max_len), PAD, dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = np.asarray(seq, dtype=np.int64)[-max_len:] if max_len > 0 else np.empty(0, np.int64)
        if len(tail):
            out[row, max_len - len(tail) :] = tail
    return torch.from_numpy(out)


def fit_length(seqs: Tensor, max_len: int) -> Tensor:
    """Crop (keep latest) or left-pad a (B, L) batch to exactly (B, max_len)."""
    length = seqs.size(1)
    if length >= max_len:
        return seqs[:, length - max_len :]  # (B, max_len)
    return F.pad(seqs, (max_len - length, 0), value=PAD)  # (B, max_len)


def padding_mask(seqs: Tensor) -> Tensor:
    """True at real items, False at padding."""
    return seqs != PAD  # (B, L)


def position_ids(seqs: Tensor) -> Tensor:
    """Position of each item counted from the oldest real item (padding gets 0)."""
    n_pad = (~padding_mask(seqs)).sum(1, keepdim=True)  # (B, 1)
    return (torch.arange(seqs.size(1), device=seqs.device) - n_pad).clamp(min=0)  # (B, L)


def causal_mask(length: int, device: torch.device) -> Tensor:
    """Lower-triangular (query t may see keys <= t)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()  # (L, L)


def attention_mask(seqs: Tensor, causal: bool) -> Tensor:
    """Boolean self-attention mask (True = attend): real keys, optionally causal, always the query itself."""
    length = seqs.size(1)
    allowed = padding_mask(seqs)[:, None, :]  # (B, 1, L) real keys
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=seqs.device)  # (B, L, L); no empty rows
    if causal:
        allowed = allowed & causal_mask(length, seqs.device)  # (B, L, L)
    return allowed[:, None]  # (B, 1, L, L), broadcast over heads


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over allowed entries only; rows with nothing allowed get all-zero weights (no NaN)."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim) * mask


def last_position(h: Tensor) -> Tensor:
    """State at the most recent item (left padding puts it at -1)."""
    return h[:, -1]  # (B, ..., d)


def mask_padding_scores(scores: Tensor) -> Tensor:
    """Padding is never a candidate: column 0 -> -inf."""
    scores = scores.clone()
    scores[..., PAD] = float("-inf")
    return scores  # (..., n_items)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """The one weight init for every model: normal(0, std) linear/conv/embedding, xavier GRU, zero padding row."""
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.GRU):
        for name, param in module.named_parameters():
            if name.startswith("weight"):
                nn.init.xavier_uniform_(param)
            else:
                nn.init.zeros_(param)


class SequentialRecommender(nn.Module, ABC):
    """Contract: `loss(batch)` for training and `score_all(seqs) -> (B, n_items)` for ranking."""

    config_class: ClassVar[type[Any]]

    def __init__(self, config: Any, extra_tokens: int = 0) -> None:
        super().__init__()
        if config.n_items < 3:
            raise ValueError("n_items counts padding and cold, so it must be >= 3")
        self.config = config
        self.n_items: int = config.n_items
        self.max_len: int = config.max_len
        self.item_embedding = nn.Embedding(config.n_items + extra_tokens, config.dim, padding_idx=PAD)

    def reset_parameters(self) -> None:
        """Apply the shared init to every submodule."""
        self.apply(init_weights)

    @abstractmethod
    def encode(self, seqs: Tensor) -> Tensor:
        """Per-position states (B, L, d) for left-padded item indices (B, L) of length max_len."""

    def item_embeddings(self) -> Tensor:
        """Candidate item table (n_items, d) as used for scoring."""
        return self.item_embedding.weight[: self.n_items]

    def logits(self, h: Tensor) -> Tensor:
        """Scores of states (..., d) against every item; padding gets -inf."""
        return mask_padding_scores(h @ self.item_embeddings().T)  # (..., n_items)

    def sequence_representation(self, seqs: Tensor) -> Tensor:
        """Query vector (B, d) for histories (B, L)."""
        return last_position(self.encode(fit_length(seqs, self.max_len)))  # (B, d)

    def score_all(self, seqs: Tensor) -> Tensor:
        """Scores (B, n_items) over the whole vocab incl. cold index 1; padding index 0 gets -inf."""
        return self.logits(self.sequence_representation(seqs))  # (B, n_items)

    def item_rows(self, items: Tensor) -> Tensor:
        """The rows (..., d) of the table `logits` scores against, for these item indices, as in training."""
        return self.item_embedding(items)

    def logit_scale(self) -> float:
        """The factor `logits` applies to the dot products (CORE: 1 / temperature)."""
        return 1.0

    def softmax_loss(self, h: Tensor, targets: Tensor, negatives: int = 0) -> Tensor:
        """Cross-entropy of `targets` (N,) from states `h` (N, d). `negatives` 0 (or at least the real items):
        over every item. Otherwise a sampled softmax (`sampled_softmax_loss`) over `negatives` items drawn
        uniformly from the real items (not padding or cold), shared by the batch. The loss's cost grows with the
        negatives, not with the vocabulary (Adam's dense update of the item table still grows with it, unless
        `TrainConfig.sparse_table`)."""
        real = self.n_items - 2
        if negatives <= 0 or negatives >= real:
            return F.cross_entropy(self.logits(h), targets)
        neg = torch.randint(2, self.n_items, (negatives,), device=h.device)  # (S,)
        return self.sampled_softmax_loss(h, targets, neg)

    def sampled_softmax_loss(self, h: Tensor, targets: Tensor, neg: Tensor) -> Tensor:
        """Cross-entropy of `targets` (N,) against the shared negatives `neg` (S,) and the cold row. The negatives'
        logits are raised by log(real items / S), the log-Q correction of a uniform draw, so that they stand for
        the whole vocabulary in the partition function; a negative equal to a row's target is masked out of that
        row. The cold row, which scores every item without a row of its own, is always a negative (uncorrected),
        as in the full softmax. Each distinct item's row is computed once, so that dropout on the table (CORE's)
        gives an item the same row wherever it appears, as the full softmax's one pass over the table does."""
        ids, inv = torch.unique(torch.cat([targets, neg, targets.new_tensor([COLD])]), return_inverse=True)
        rows = self.item_rows(ids)  # (U, d)
        scale = self.logit_scale()
        n, s = len(targets), len(neg)
        pos = (h * rows[inv[:n]]).sum(-1, keepdim=True) * scale  # (N, 1)
        other = h @ rows[inv[n:n + s]].T * scale + math.log((self.n_items - 2) / s)  # (N, S)
        other = other.masked_fill(neg[None, :] == targets[:, None], float("-inf"))  # (N, S)
        cold = h @ rows[inv[n + s:]].T * scale  # (N, 1)
        return F.cross_entropy(torch.cat([pos, cold, other], dim=1), targets.new_zeros(n))

    def loss(self, batch: SeqBatch, negatives: int = 0) -> Tensor:
        """Cross-entropy for the next item at every real position (from its query state): a full softmax, or a
        sampled one over `negatives` shared items (`softmax_loss`)."""
        h = batch.query_states(self.encode(batch.inputs))  # (B, L, d)
        targets = batch.targets  # (B, L)
        keep = targets != PAD  # (B, L)
        if not keep.any():
            return h.sum() * 0.0  # nothing to predict in this batch
        return self.softmax_loss(h[keep], targets[keep], negatives)  # h[keep]: (N, d)
