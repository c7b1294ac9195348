"""The pure retrieval pieces that evaluation and serving share: list combination (Mixup, Liu et al., "Sequential LLM
Framework for Fashion Recommendation", sec. 4.4, and reciprocal rank fusion) and the retrieval configs.

ID embeddings are precise for the top matches, title embeddings generalise (cold start), so the final
top-K takes the top N items of the ID-embedding list and fills positions N+1..K from the
title-embedding list (the paper uses N = 1). All functions are pure, over ranked lists of item ids
(best first); `rank_fusion` is an alternative combiner for ablations.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

PAD = -1  # padding value for the integer-index (array) variants


def unique(items: Iterable[str]) -> list[str]:
    """Return items without repeats, keeping the first occurrence's position."""
    return list(dict.fromkeys(items))


def id_only(id_list: Sequence[str], k: int) -> list[str]:
    """Ablation: the top-k distinct items of the ID-embedding list."""
    _check(k)
    return unique(id_list)[:k]


def title_only(title_list: Sequence[str], k: int) -> list[str]:
    """Ablation: the top-k distinct items of the title-embedding list."""
    _check(k)
    return unique(title_list)[:k]


def mixup(id_list: Sequence[str], title_list: Sequence[str], k: int, n: int = 1) -> list[str]:
    """Top-n distinct ID-list items, then title-list items in order; falls back to the rest of the ID list."""
    # Positions n+1..k are the title list read from its top, skipping items already chosen (the paper
    # does not say "title positions n+1..k"; re-reading the top keeps its best non-duplicate matches).
    # If the title list runs out before k, the ID list continues from position n+1, skipping
    # duplicates; the result is shorter than k only if both lists together hold fewer than k items.
    _check(k, n)
    ids = unique(id_list)
    return unique([*ids[:n], *title_list, *ids[n:]])[:k]


def rank_fusion(
    lists: Sequence[Sequence[str]], k: int, c: float = 60.0, weights: Sequence[float] | None = None,
    demote: Hashable | None = None,
) -> list[str]:
    """Reciprocal rank fusion: score(x) = sum_l w_l / (c + rank_l(x)), ranks from 1; top-k by score."""
    # A repeat within one list counts at its first (best) rank only. Ties keep first-seen order,
    # scanning the lists in the order given, except `demote` (the evaluation's target), which goes after its ties.
    _check(k)
    if c < 0:
        raise ValueError("c must be >= 0")
    if weights is None:
        weights = [1.0] * len(lists)
    if len(weights) != len(lists):
        raise ValueError(f"got {len(weights)} weights for {len(lists)} lists")
    scores: dict[str, float] = {}
    for ranked, w in zip(lists, weights, strict=True):
        for rank, item in enumerate(unique(ranked), start=1):
            scores[item] = scores.get(item, 0.0) + w / (c + rank)
    # sorted() is stable, so equal scores stay in first-seen (dict insertion) order.
    return sorted(scores, key=lambda item: (-scores[item], item == demote))[:k]


def mixup_batch(
    id_lists: Sequence[Sequence[str]], title_lists: Sequence[Sequence[str]], k: int, n: int = 1
) -> list[list[str]]:
    """Apply `mixup` to each user's pair of lists."""
    if len(id_lists) != len(title_lists):
        raise ValueError(f"got {len(id_lists)} ID lists and {len(title_lists)} title lists")
    return [mixup(a, b, k, n) for a, b in zip(id_lists, title_lists, strict=True)]


def unique_rows(items: np.ndarray) -> np.ndarray:
    """Drop repeats (and PAD) within each row, shift survivors left, pad with PAD; same shape."""
    items = np.asarray(items)  # (B, M) integer item indices
    if items.ndim != 2:
        raise ValueError(f"items must be (B, M), got {items.shape}")
    # Stable sort by value: within a run of equal values the earliest position comes first.
    by_value = np.argsort(items, axis=1, kind="stable")  # (B, M)
    values = np.take_along_axis(items, by_value, axis=1)  # (B, M)
    repeat_sorted = np.zeros(items.shape, dtype=bool)  # (B, M)
    repeat_sorted[:, 1:] = values[:, 1:] == values[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, by_value, repeat_sorted, axis=1)  # (B, M): seen at an earlier position
    keep = ~repeat & (items != PAD)  # (B, M)
    order = np.argsort(~keep, axis=1, kind="stable")  # kept positions first, in their original order
    out = np.take_along_axis(items, order, axis=1)  # (B, M)
    out[np.take_along_axis(~keep, order, axis=1)] = PAD
    return out


def mixup_indices(id_topk: np.ndarray, title_topk: np.ndarray, k: int, n: int = 1) -> np.ndarray:
    """Vectorised `mixup` over integer item indices for many users; rows shorter than k end in PAD."""
    _check(k, n)
    id_topk, title_topk = np.asarray(id_topk), np.asarray(title_topk)  # (B, Ki), (B, Kt)
    if id_topk.ndim != 2 or title_topk.ndim != 2 or len(id_topk) != len(title_topk):
        raise ValueError(f"need (B, Ki) and (B, Kt) arrays, got {id_topk.shape} and {title_topk.shape}")
    ids = unique_rows(id_topk)  # (B, Ki)
    candidates = np.concatenate([ids[:, :n], title_topk, ids[:, n:]], axis=1)  # (B, Ki + Kt)
    out = unique_rows(candidates)[:, :k]  # (B, <=k)
    if out.shape[1] < k:  # fewer candidates than k in total
        out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=PAD)
    return out  # (B, k)


def _check(k: int, n: int = 0) -> None:
    if k < 0 or n < 0:
        raise ValueError(f"k and n must be >= 0, got k={k}, n={n}")


Mode = Literal["id_only", "title_only", "mixup", "rrf"]
TitleList = Literal["memory_first", "cosine"]


@dataclass(frozen=True)
class TitleQueryConfig:
    """How the title query vector is formed."""

    q: int = 5  # nearest stored queries
    v: int = 10  # products per stored query
    query_weight: float = 0.5  # weight of the query's own embedding vs the mean of the products' titles
    fallback_items: int = 3  # last clicked/purchased items used when the user never searched


@dataclass(frozen=True)
class RetrievalConfig:
    """Combination of the ID and title lists."""

    mode: Mode = "mixup"
    k: int = 100  # length of each retrieved list and of the combined list
    n: int = 1  # mixup: items taken from the top of the ID list
    rrf_c: float = 60.0
    title_list: TitleList = "memory_first"  # memory products for the last search, then title cosine; or cosine only
    # Leave the user's own clicked/purchased items out of both lists (they rank after the list). On medium-s0 the
    # bought item is in the history for 0.7% of test targets, but CORE's top-1 is a history item for 83% of them.
    exclude_seen: bool = True


def combine(id_list: Sequence[int], title_list: Sequence[int], cfg: RetrievalConfig, demote: int | None = None
            ) -> list[int]:
    """The combined top-k list of one user (column indices), by `cfg.mode`; `demote` goes last among RRF ties."""
    if cfg.mode == "id_only":
        return id_only(id_list, cfg.k)  # type: ignore[arg-type,return-value]  # generic over hashables
    if cfg.mode == "title_only":
        return title_only(title_list, cfg.k)  # type: ignore[arg-type,return-value]
    if cfg.mode == "mixup":
        return mixup(id_list, title_list, cfg.k, cfg.n)  # type: ignore[arg-type,return-value]
    if cfg.mode == "rrf":
        return rank_fusion([id_list, title_list], cfg.k, c=cfg.rrf_c, demote=demote)  # type: ignore[list-item,return-value]
    raise ValueError(f"unknown retrieval mode {cfg.mode!r}")
