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
    # Per training sequence, each item's moment (its timestamp): items sharing one are a basket, never predicted
    # from each other (`query_positions`). None: every item is its own moment.
    train_moments: Sequence[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if len(self.valid_histories) != len(self.valid_targets):
            raise ValueError("valid_histories and valid_targets differ in length")
        if self.train_moments is not None and [len(m) for m in self.train_moments] != [len(s) for s in self.train]:
            raise ValueError("train_moments must give one moment per item of each training sequence")

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


def _windows(seq: np.ndarray, max_len: int) -> Iterator[np.ndarray]:
    """The slices of one sequence that `make_windows` cuts, latest first."""
    end = len(seq)
    while end > 1:  # the window ending at `end` predicts positions max(1, end - max_len) .. end - 1
        yield seq[max(0, end - max_len - 1) : end]
        end -= max_len


def make_windows(seqs: Sequence[np.ndarray], max_len: int) -> Tensor:
    """Cut sequences into left-padded windows (N, max_len + 1) so every next-item target appears once."""
    windows = [w for seq in seqs for w in _windows(np.asarray(seq, dtype=np.int64), max_len)]
    return pad_sequences(windows, max_len + 1)  # (N, max_len + 1)


def query_positions(moments: Sequence[np.ndarray], max_len: int) -> Tensor:
    """For the windows `make_windows` cuts, the input position whose state predicts each target (N, max_len).

    Target t of a window (its item at window position t + 1) is predicted from the last position before the first
    item of its moment in the window: t itself when the moment is one item, the same earlier position for every
    item of a basket. -1 where the moment starts the window (no state before it there: ignored).
    """
    out = []
    for m in moments:
        for w in _windows(np.asarray(m), max_len):
            n = len(w)
            first = np.zeros(n, np.int64)  # (n,) index in w of the first item of each item's moment
            for i in range(1, n):
                first[i] = first[i - 1] if w[i] == w[i - 1] else i
            q = np.arange(max_len, dtype=np.int64)  # (max_len,) default: the position itself (padding: ignored)
            pad = max_len + 1 - n  # left padding of this window
            q[pad : max_len] = first[1:] + pad - 1  # targets at window positions pad + 1 .. max_len
            q[pad : max_len][first[1:] == 0] = -1
            out.append(q)
    return torch.from_numpy(np.stack(out)) if out else torch.zeros((0, max_len), dtype=torch.int64)


def iterate_batches(windows: Tensor, batch_size: int, generator: torch.Generator, query: Tensor | None = None
                    ) -> Iterator[SeqBatch]:
    """Shuffled batches in an order fixed by `generator` (with their `query_positions` when given)."""
    order = torch.randperm(len(windows), generator=generator)  # (N,)
    for start in range(0, len(windows), batch_size):
        idx = order[start : start + batch_size]
        yield SeqBatch(windows[idx], None if query is None else query[idx])  # (b, max_len + 1), (b, max_len)
