"""Training data for sequential recommenders: index sequences in, left-padded windows out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from models.seqrec.base import SeqBatch, pad_sequences


@dataclass(frozen=True)
class SeqData:
    """Vocab-indexed, time-ordered sequences for training plus validation histories and targets."""

    n_items: int  # len(vocab), incl. padding and cold
    train: Sequence[np.ndarray]  # one int64 array per user, oldest first
    valid_histories: Sequence[np.ndarray] = field(default_factory=list)
    valid_targets: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # (N,)

    def __post_init__(self) -> None:
        if len(self.valid_histories) != len(self.valid_targets):
            raise ValueError("valid_histories and valid_targets differ in length")

    @classmethod
    def leave_one_out(cls, n_items: int, seqs: Sequence[np.ndarray]) -> SeqData:
        """Train on every sequence minus its last item; validate on predicting that last item."""
        usable = [np.asarray(s, dtype=np.int64) for s in seqs if len(s) >= 2]
        return cls(
            n_items=n_items,
            train=[s[:-1] for s in usable],
            valid_histories=[s[:-1] for s in usable],
            valid_targets=np.array([s[-1] for s in usable], dtype=np.int64),
        )


def make_windows(seqs: Sequence[np.ndarray], max_len: int) -> Tensor:
    """Cut sequences into left-padded windows (N, max_len + 1) so every next-item target appears once."""
    windows: list[np.ndarray] = []
    for seq in seqs:
        seq = np.asarray(seq, dtype=np.int64)
        end = len(seq)
        while end > 1:  # the window ending at `end` predicts positions max(1, end - max_len) .. end - 1
            windows.append(seq[max(0, end - max_len - 1) : end])
            end -= max_len
    return pad_sequences(windows, max_len + 1)  # (N, max_len + 1)


def iterate_batches(windows: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[SeqBatch]:
    """Shuffled batches in an order fixed by `generator`."""
    order = torch.randperm(len(windows), generator=generator)  # (N,)
    for start in range(0, len(windows), batch_size):
        yield SeqBatch(windows[order[start : start + batch_size]])  # (b, max_len + 1)
