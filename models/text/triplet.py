"""Triplet loss with two hard negatives per positive pair (paper section 4.4, "Title Embedding Model").

For each positive pair (query q, title t of an item purchased after q) the loss is
    relu(m - s(q, t) + s(q, t_neg)) + relu(m - s(q, t) + s(q_neg, t)),     s = cosine similarity, m = margin,
where t_neg is the title closest to q that is NOT a positive match of q, and q_neg is the query closest to t that
is NOT a positive match of t. "Positive match" comes from the set of positive pairs, not from the row index: in a
batch, (q_i, t_j) is positive when some pair k has the same query key as i and the same item key as j, so the same
item bought from two queries, or the same query text twice, never serve as each other's negatives (`positive_mask`).

Which negative (`TripletConfig.negatives`):
- "hardest": the paper's rule as written, the closest non-positive.
- "semi_hard" (DEFAULT): the closest non-positive that is still less similar than the positive (FaceNet), falling
  back to the hardest when there is none. Why: short generic queries ("boots", "tee") have many equally good
  items that were simply not bought from them, so the hardest "negative" is usually a false negative. On
  synthetic small-s0 (1,783 purchase pairs before 2023-10-01, 4 epochs; later purchases ranked among 5.9k
  titles) "hardest" collapsed every title onto one point (mean pairwise title cosine 0.996, loss stuck at 2m,
  median rank 266), while "semi_hard" kept them spread (0.068) and ranked far better (median rank 128, R@50
  0.29; untrained character n-gram hashing: 227, 0.24).
- "all": mean hinge over every admissible in-batch negative (no collapse, weaker: median rank 146).

Where negatives come from (`TripletConfig.mining`):
- "in_batch" (DEFAULT): the other titles/queries of the same batch, from the B x B similarity matrix the forward
  pass computes anyway. No extra cost, the negatives carry gradient directly, and they are moderately hard: a
  random batch rarely holds a colour/size sibling of the positive or a near-duplicate product.
- "catalog": t_neg comes from an index over the WHOLE catalog (a precomputed title-embedding matrix refreshed each
  epoch) and q_neg from an index over all distinct training queries; the positive set is the whole training pair
  set. Much harder negatives, but it re-embeds the catalog every epoch (~40k-200k titles), its neighbours are up
  to an epoch stale, and in a high-turnover catalog the nearest titles to a query are mostly variants of the
  bought family or equally good unlogged products: false negatives that push training towards collapse. On
  small-s0 it was ~10x slower (155 s vs 14 s for 4 epochs) and no better (median rank 147 vs 128).
  Negatives are re-embedded with gradient; "all" is treated as "hardest" there.
In both modes `exclude_same_family=True` also refuses, as negatives for q, all variants of the families q bought
from (neither positives nor negatives); set it False to make colour/size siblings count as negatives.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TripletConfig:
    """Hyperparameters of the two-hard-negative triplet loss."""

    margin: float = 0.2
    mining: Literal["in_batch", "catalog"] = "in_batch"
    negatives: Literal["hardest", "semi_hard", "all"] = "semi_hard"  # the paper's literal rule is "hardest"
    exclude_same_family: bool = True  # variants of a positive's family are not used as negatives
    catalog_candidates: int = 64  # nearest index entries scanned for the first non-positive (catalog mining)


@dataclass(frozen=True)
class TripletOutput:
    """Loss and the mined negatives (batch indices; -1 where a row had no admissible negative)."""

    loss: torch.Tensor  # scalar
    neg_title_idx: torch.Tensor  # (B,) t_neg for query i is title neg_title_idx[i]
    neg_query_idx: torch.Tensor  # (B,) q_neg for title i is query neg_query_idx[i]


def _codes(keys: Sequence[Hashable]) -> torch.Tensor:
    """Integer codes (B,) for hashable keys, equal keys -> equal codes."""
    table: dict[Hashable, int] = {}
    return torch.tensor([table.setdefault(k, len(table)) for k in keys], dtype=torch.long)


def positive_mask(query_keys: Sequence[Hashable], item_keys: Sequence[Hashable]) -> torch.Tensor:
    """(B, B) bool: [i, j] is True when (query i, item j) is one of the batch's positive pairs (query_k, item_k)."""
    if len(query_keys) != len(item_keys):
        raise ValueError("query_keys and item_keys must have the same length")
    q, t = _codes(query_keys), _codes(item_keys)  # (B,), (B,)
    same_q = (q[:, None] == q[None, :]).float()  # (B, B) [i, k]: query i has the same key as query k
    same_t = (t[:, None] == t[None, :]).float()  # (B, B) [j, k]: item j has the same key as item k
    return (same_q @ same_t.T) > 0  # (B, B) [i, j]: exists k with key(q_k) = key(q_i) and key(t_k) = key(t_j)


def exclusion_mask(
    query_keys: Sequence[Hashable],
    item_keys: Sequence[Hashable],
    family_keys: Sequence[Hashable] | None = None,
) -> torch.Tensor:
    """(B, B) bool: pairs that may not serve as negatives (positives, plus same-family variants if given)."""
    mask = positive_mask(query_keys, item_keys)  # (B, B)
    if family_keys is not None:
        mask |= positive_mask(query_keys, family_keys)  # (B, B)
    return mask


def mine_in_batch(
    sim: torch.Tensor, exclude: torch.Tensor, semi_hard: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hardest admissible negatives from sim[i, j] = s(q_i, t_j): (title idx per query (B,), query idx per title (B,)).

    semi_hard picks the closest negative that is still less similar than the positive (FaceNet), falling back to
    the hardest one when there is none.
    """
    s = sim.detach().masked_fill(exclude, float("-inf"))  # (B, B)
    s_t, s_q = s, s
    if semi_hard:
        pos = sim.detach().diagonal()  # (B,)
        s_t = s.masked_fill(s >= pos[:, None], float("-inf"))  # (B, B) titles easier than t_i for q_i
        s_q = s.masked_fill(s >= pos[None, :], float("-inf"))  # (B, B) queries easier than q_j for t_j
        s_t = torch.where(torch.isfinite(s_t.max(1, keepdim=True).values), s_t, s)  # (B, B)
        s_q = torch.where(torch.isfinite(s_q.max(0, keepdim=True).values), s_q, s)  # (B, B)
    best_t, t_idx = s_t.max(dim=1)  # (B,) closest non-positive title to each query
    best_q, q_idx = s_q.max(dim=0)  # (B,) closest non-positive query to each title
    t_idx = torch.where(torch.isfinite(best_t), t_idx, torch.full_like(t_idx, -1))  # (B,)
    q_idx = torch.where(torch.isfinite(best_q), q_idx, torch.full_like(q_idx, -1))  # (B,)
    return t_idx, q_idx


def triplet_terms(
    s_pos: torch.Tensor,
    s_q_tneg: torch.Tensor,
    s_qneg_t: torch.Tensor,
    valid_t: torch.Tensor,
    valid_q: torch.Tensor,
    margin: float,
) -> torch.Tensor:
    """Mean over pairs of relu(m - s_pos + s(q, t_neg)) + relu(m - s_pos + s(q_neg, t)); invalid terms count 0."""
    term_t = F.relu(margin - s_pos + s_q_tneg) * valid_t.to(s_pos)  # (B,)
    term_q = F.relu(margin - s_pos + s_qneg_t) * valid_q.to(s_pos)  # (B,)
    return (term_t + term_q).mean()


def in_batch_triplet_loss(
    q: torch.Tensor,
    t: torch.Tensor,
    query_keys: Sequence[Hashable],
    item_keys: Sequence[Hashable],
    margin: float = 0.2,
    family_keys: Sequence[Hashable] | None = None,
    negatives: Literal["hardest", "semi_hard", "all"] = "semi_hard",
) -> TripletOutput:
    """Two-hard-negative triplet loss for rows (q_i, t_i) with negatives mined inside the batch."""
    sim = F.normalize(q, dim=-1) @ F.normalize(t, dim=-1).T  # (B, B) cosine s(q_i, t_j)
    exclude = exclusion_mask(query_keys, item_keys, family_keys)  # (B, B)
    t_idx, q_idx = mine_in_batch(sim, exclude, semi_hard=negatives == "semi_hard")  # (B,), (B,)
    rows = torch.arange(sim.shape[0])  # (B,)
    s_pos = sim.diagonal()  # (B,)
    if negatives == "all":  # mean hinge over every admissible negative: a gentle warm-up objective
        adm = (~exclude).to(sim)  # (B, B)
        term_t = (F.relu(margin - s_pos[:, None] + sim) * adm).sum(1) / adm.sum(1).clamp(min=1)  # (B,)
        term_q = (F.relu(margin - s_pos[None, :] + sim) * adm).sum(0) / adm.sum(0).clamp(min=1)  # (B,)
        return TripletOutput(loss=(term_t + term_q).mean(), neg_title_idx=t_idx, neg_query_idx=q_idx)
    s_q_tneg = sim[rows, t_idx.clamp(min=0)]  # (B,) s(q_i, t_neg(i))
    s_qneg_t = sim[q_idx.clamp(min=0), rows]  # (B,) s(q_neg(i), t_i)
    loss = triplet_terms(s_pos, s_q_tneg, s_qneg_t, t_idx >= 0, q_idx >= 0, margin)
    return TripletOutput(loss=loss, neg_title_idx=t_idx, neg_query_idx=q_idx)


# ----------------------------------------------------------------------------------------------------
# Catalog-wide mining (optional)


@dataclass
class CatalogIndex:
    """Title embeddings of the whole catalog and of all distinct training queries, refreshed once per epoch."""

    titles: list[str]  # (N,)
    item_ids: np.ndarray  # (N,)
    family_ids: np.ndarray  # (N,)
    title_emb: np.ndarray  # (N, D) unit rows
    queries: list[str]  # (M,) distinct query keys
    query_emb: np.ndarray  # (M, D) unit rows
    pos_items: dict[str, set[str]]  # query key -> items bought from it (whole training set)
    pos_families: dict[str, set[str]]  # query key -> their families


def _ranked(scores: np.ndarray, k: int) -> Iterator[int]:
    """Indices by descending score: the top k from a partial sort, the rest only if the caller reads that far."""
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])  # (k,)
    top = top[np.argsort(-scores[top], kind="stable")]  # (k,)
    yield from (int(j) for j in top)
    seen = set(top.tolist())
    yield from (int(j) for j in np.argsort(-scores, kind="stable") if j not in seen)


def _first_admissible(
    scores: np.ndarray, k: int, admissible: Callable[[int], bool], below: float | None = None
) -> int:
    """Highest-scoring admissible index (scoring < below when given and one does, else the hardest); -1 if none."""
    hardest = -1
    for j in _ranked(scores, k):
        if not admissible(j):
            continue
        if below is None or scores[j] < below:
            return j
        if hardest < 0:
            hardest = j
    return hardest


def mine_catalog(
    q_emb: np.ndarray,
    t_emb: np.ndarray,
    query_keys: Sequence[str],
    item_ids: Sequence[str],
    family_ids: Sequence[str],
    index: CatalogIndex,
    cfg: TripletConfig = TripletConfig(),
) -> tuple[list[str | None], list[str | None]]:
    """For each batch pair: (closest non-positive catalog title to q, closest non-positive training query to t)."""
    sims_t = q_emb @ index.title_emb.T  # (B, N)
    sims_q = t_emb @ index.query_emb.T  # (B, M)
    s_pos = (q_emb * t_emb).sum(-1)  # (B,)
    semi = cfg.negatives == "semi_hard"
    neg_titles: list[str | None] = []
    neg_queries: list[str | None] = []
    for b, (qk, item, fam) in enumerate(zip(query_keys, item_ids, family_ids, strict=True)):
        items_q, fams_q = index.pos_items.get(qk, set()), index.pos_families.get(qk, set())

        def title_ok(j: int, items_q: set[str] = items_q, fams_q: set[str] = fams_q) -> bool:
            return index.item_ids[j] not in items_q and not (
                cfg.exclude_same_family and index.family_ids[j] in fams_q
            )

        def query_ok(j: int, item: str = item, fam: str = fam) -> bool:
            key = index.queries[j]
            return item not in index.pos_items.get(key, ()) and not (
                cfg.exclude_same_family and fam in index.pos_families.get(key, ())
            )

        below = float(s_pos[b]) if semi else None
        jt = _first_admissible(sims_t[b], cfg.catalog_candidates, title_ok, below)
        jq = _first_admissible(sims_q[b], cfg.catalog_candidates, query_ok, below)
        neg_titles.append(index.titles[jt] if jt >= 0 else None)
        neg_queries.append(index.queries[jq] if jq >= 0 else None)
    return neg_titles, neg_queries


def pair_triplet_loss(
    q: torch.Tensor,
    t: torch.Tensor,
    t_neg: torch.Tensor,
    q_neg: torch.Tensor,
    valid_t: torch.Tensor,
    valid_q: torch.Tensor,
    margin: float = 0.2,
) -> torch.Tensor:
    """Triplet loss for rows (q_i, t_i) with explicit negatives t_neg_i, q_neg_i (all (B, D))."""
    q, t = F.normalize(q, dim=-1), F.normalize(t, dim=-1)  # (B, D)
    s_pos = (q * t).sum(-1)  # (B,)
    s_q_tneg = (q * F.normalize(t_neg, dim=-1)).sum(-1)  # (B,)
    s_qneg_t = (F.normalize(q_neg, dim=-1) * t).sum(-1)  # (B,)
    return triplet_terms(s_pos, s_q_tneg, s_qneg_t, valid_t, valid_q, margin)
