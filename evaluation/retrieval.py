"""Retrieval with Mixup as evaluation scorers (Liu et al., "Sequential LLM Framework for Fashion Recommendation",
4.2 and 4.4), exact numpy over every test target; `serving.recommend` is the same ranking over Qdrant.

Two candidate lists per user, both restricted to the target's category:
- ID list: the CORE sequence representation of the user's clicked/purchased items, cosine against CORE's item table,
  over the items CORE has a row for (`id_known`): an item it never saw shares the cold row, a tie block it cannot
  tell apart, so it is in no ID list (as it is in no serving ID collection).
- Title list: a title query vector (see `TitleQueryBuilder`), cosine against the title-model embedding of every item.
  With `RetrievalConfig.title_list="memory_first"` (default) the memory's products for the user's last search come
  first (nearest key's products in the memory's order, then the next keys', de-duplicated, in the category), then
  that cosine ranking (see `memory_first_lists`); users without a search, or whose lookup finds nothing in the
  category, keep the cosine list.
They are combined by `mixup` (top-N of the ID list, then the title list; the paper's N = 1), reciprocal rank fusion,
or either list alone (ablations). Evaluation scores with exact numpy cosine over the category's vectors: it is the
ranking Qdrant returns (tests compare the two); the Qdrant collections are the serving path.

Ties: every list orders tied items by item id (catalog order), as serving does, except that a tie-aware caller (the
evaluation) can pass a `demote` column per row, which then goes after every item it ties with, so a cut or a merge
through a tie never favours the target (see `evaluation.metrics`). Items released after the target's time are never
in a list (the evaluation does not rank them either).

Leakage: `AsOfMemory` (`models.text.memory`, the default for evaluation) answers every lookup exactly as of the target time t: only queries
first searched strictly before t are keys, and their products are aggregated only from impressions strictly before t
(the same result as `build_query_memory(search_results, cutoff=t)`). `TimeSlicedMemory` holds snapshots built at
regular cutoffs, and a target at time t only ever sees the latest snapshot with cutoff <= t (coarser: it misses
searches between that cutoff and t, such as the user's own recent ones).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from evaluation.common import category_batches, in_sorted, list_scores, rows_to_scores
from evaluation.memory import TimeSlicedMemory
from feature_repo.sequences import item_sequences, last_search_queries
from feature_repo.splits import sample_rows
from models.catalog import Catalog
from models.common import l2_normalize, to_ns
from models.retrieval import RetrievalConfig, TitleQueryConfig, combine
from models.text.encoder import TextEncoder
from models.text.memory import (
    AsOfMemory,
    MemoryHit,
)
from models.text.tokenizer import normalize_text
from models.variants import ItemAttributes, VariantConfig, VariantRanker, candidate_features

# ---------------------------------------------------------------------------------------------------------------
# Title query vector


class TitleQueries(NamedTuple):
    """A batch's title query vectors and, per target, the memory's products for its last search."""

    vectors: np.ndarray  # (B, d) unit title query vectors
    memory_rows: list[np.ndarray]  # B arrays of catalog rows: nearest key's products first, de-duplicated


class TitleQueryBuilder:
    """Title query vector per user, from the last search and the memory, or the last items' titles.

    A user with a search: w * embed(last query) + (1 - w) * mean(title vectors of the memory's products for it:
    the Q nearest stored queries' top-V products, de-duplicated, those in `allowed_rows` when any are), then
    L2-normalised. A user without a search: the mean title vector of their last `fallback_items` clicked/purchased
    items. A user with neither gets a zero vector (every title cosine 0).
    """

    def __init__(self, encoder: TextEncoder, memory: AsOfMemory | TimeSlicedMemory, catalog: Catalog,
                 title_vectors: np.ndarray,
                 cfg: TitleQueryConfig = TitleQueryConfig()) -> None:
        self.encoder = encoder
        self.memory = memory
        self.title_vectors = l2_normalize(title_vectors)  # (n_catalog, d) in catalog row order
        self.row_of = pd.Series(np.arange(len(catalog.items)), index=catalog.index)
        self.cfg = cfg

    def __call__(self, batch: pd.DataFrame, allowed_rows: np.ndarray | None = None) -> np.ndarray:
        """(B, d) unit title query vectors for a batch of targets (needs seq_* lists and target_ts)."""
        return self.queries(batch, allowed_rows).vectors

    def queries(self, batch: pd.DataFrame, allowed_rows: np.ndarray | None = None,
                demote: Sequence[str | None] | None = None) -> TitleQueries:
        """Title query vectors (B, d) and, per target, the catalog rows of the memory's products for its last search
        (the Q nearest keys' top-V products in the memory's order, de-duplicated, only those in `allowed_rows` when
        given; empty without a search), from one memory lookup. `demote` (B,) item ids go last among their ties in
        the memory's product lists (`AsOfMemory` only; the weekly snapshots order ties by item id)."""
        cfg = self.cfg
        last = last_search_queries(batch["seq_actions"], batch["seq_queries"])
        uniq = sorted({normalize_text(q) for q in last if q is not None})
        qvec = dict(zip(uniq, self.encoder.encode(uniq), strict=True)) if uniq else {}  # text -> (d,)
        allowed = set(allowed_rows.tolist()) if allowed_rows is not None else None
        items = item_sequences(batch["seq_actions"], batch["seq_item_ids"])
        searched = [b for b, query in enumerate(last) if query is not None]
        times = batch["target_ts"].to_numpy()  # (B,)
        if not searched:
            found: list[list[MemoryHit]] = []
        elif isinstance(self.memory, AsOfMemory):  # one vectorised lookup, each row as of its own target time
            keys = np.stack([qvec[normalize_text(last[b])] for b in searched])  # (n, d)
            demoted = None if demote is None else [demote[b] for b in searched]
            found = self.memory.lookup(keys, times[searched], q=cfg.q, v=cfg.v, demote=demoted)
        else:
            found = [self.memory.for_time(times[b]).lookup_vectors(qvec[normalize_text(last[b])][None], q=cfg.q,
                                                                  v=cfg.v)[0] for b in searched]
        hits_of = dict(zip(searched, found, strict=True))
        out = np.zeros((len(batch), self.title_vectors.shape[1]), np.float32)  # (B, d)
        memory_rows = [np.zeros(0, np.int64) for _ in range(len(batch))]
        for b, (query, hist) in enumerate(zip(last, items, strict=True)):
            if query is not None:
                key = qvec[normalize_text(query)]  # (d,)
                rows = self._rows(p for h in hits_of[b] for p in h.products)
                in_allowed = rows if allowed is None else [r for r in rows if r in allowed]
                memory_rows[b] = np.asarray(in_allowed, np.int64)
                if in_allowed:
                    rows = in_allowed
                vec = l2_normalize(key)[0] * cfg.query_weight
                if rows:
                    vec = vec + (1.0 - cfg.query_weight) * self.title_vectors[rows].mean(axis=0)
                out[b] = vec
            elif hist:
                rows = self._rows(hist[-cfg.fallback_items:])
                if rows:
                    out[b] = self.title_vectors[rows].mean(axis=0)
        return TitleQueries(l2_normalize(out), memory_rows)

    def _rows(self, item_ids: object) -> list[int]:
        """Catalog rows of the known item ids, de-duplicated in order."""
        ids = list(dict.fromkeys(item_ids))  # type: ignore[call-overload]
        rows = self.row_of.reindex(ids).dropna().astype(int)
        return rows.tolist()


# ---------------------------------------------------------------------------------------------------------------
# Scorer


class SharedSources:
    """The last batch's `ListSources` of the scorers that share them (`RetrievalScorer.with_config`), with what they
    were computed for: the settings they depend on, the targets (index, user, time), the category's rows and the
    demoted columns. One entry: the evaluation hands each batch to every method before the next."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: ListSources | None = None
        self.hits = 0  # batches answered from the entry (the tests read it)

    def get(self, settings: tuple, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None,
            compute: Callable[[], ListSources]) -> ListSources:
        key = (settings, batch.index.to_numpy(), batch["user_id"].to_numpy(), batch["target_ts"].to_numpy(),
               np.asarray(cat_rows), None if demote is None else np.asarray(demote))
        if self.value is not None and self._same(key):
            self.hits += 1
            return self.value
        self.key, self.value = None, None  # (free the last batch's matrices before computing the next)
        value = compute()
        for a in (*value[:2], *value[3:], *(value.memory_cols or ())):
            a.flags.writeable = False  # shared: a scorer that writes into them fails loudly
        self.key, self.value = key, value
        return value

    def _same(self, key: tuple) -> bool:
        old = self.key
        assert old is not None
        if key[0] != old[0] or (key[5] is None) != (old[5] is None):
            return False
        return all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(key[1:], old[1:], strict=True)
                   if a is not None)


class ListSources(NamedTuple):
    """A batch's retrieval sources, as column indices into the category's rows (-1 = PAD)."""

    id_top: np.ndarray  # (B, K) the ID list (PAD rows for targets without history)
    title_top: np.ndarray  # (B, K) the title-cosine list (no memory products)
    memory_cols: list[np.ndarray] | None  # B arrays: the memory's products for the last search, in order
    id_cos: np.ndarray  # (B, n_cat) ID cosines (every item, released or not, with a row or the cold one)
    title_cos: np.ndarray  # (B, n_cat) title cosines
    id_query: np.ndarray  # (B, d_id) unit ID query vectors (zero without history)
    title_query: np.ndarray  # (B, d_title) unit title query vectors


def topk_rows(scores: np.ndarray, k: int, demote: np.ndarray | None = None) -> np.ndarray:
    """Column indices of each row's top-k by score, best first. (B, min(k, n)).

    Ties are in column order (item id order, as serving orders them), except each row's `demote` column (B,), which
    goes after every column it ties with; a cut at k through a tie group keeps the group's first columns.
    """
    b, n = scores.shape
    k = min(k, n)
    if k == 0:
        return np.zeros((b, 0), np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (b, 1))  # (B, k)
    kth = np.take_along_axis(scores, part, axis=1).min(axis=1)  # (B,) the k-th best score
    through_tie = (scores >= kth[:, None]).sum(axis=1) > k  # (B,) the k-th score is shared outside the partition

    last = None if demote is None else np.asarray(demote, np.int64)  # (B,)
    tb = part.copy()  # (B, k) tie-break key: the column, or n for the demoted one
    if last is not None:
        tb[part == last[:, None]] = n
    order = np.lexsort((tb, -np.take_along_axis(scores, part, axis=1)), axis=1)
    out = np.take_along_axis(part, order, axis=1)
    for r in np.flatnonzero(through_tie):  # the whole tie group competes for the last places
        cand = np.flatnonzero(scores[r] >= kth[r])
        tb_r = np.where(cand == last[r], n, cand) if last is not None else cand
        out[r] = cand[np.lexsort((tb_r, -scores[r, cand]))][:k]
    return out


def memory_columns(memory_rows: Sequence[np.ndarray], cat_rows: np.ndarray) -> list[np.ndarray]:
    """Catalog rows -> column indices into cat_rows, in order; rows outside cat_rows (other categories) dropped."""
    index = pd.Index(np.asarray(cat_rows))
    cols = [index.get_indexer(np.asarray(r, np.int64)) for r in memory_rows]
    return [c[c >= 0] for c in cols]


def memory_first_lists(memory_cols: Sequence[np.ndarray], cosine_top: np.ndarray, k: int) -> np.ndarray:
    """Per row: the memory columns in order, then the cosine top list, de-duplicated (first occurrence), cut at k.

    cosine_top (B, k') holds each row's title-cosine top-k' columns (-1 = PAD); a row with no memory columns keeps
    it. Every memory column is assumed to be a valid column; rows are PAD-filled to min(k, k').
    """
    out = np.array(cosine_top, dtype=np.int64, copy=True)[:, :k]  # (B, min(k, k'))
    for b, mem in enumerate(memory_cols):
        if len(mem):
            top = cosine_top[b]
            merged = np.concatenate([np.asarray(mem, np.int64), top[top >= 0]])  # PAD (-1) entries dropped
            _, first = np.unique(merged, return_index=True)
            row = merged[np.sort(first)][: out.shape[1]]
            out[b] = np.pad(row, (0, out.shape[1] - len(row)), constant_values=-1)
    return out


class RetrievalScorer:
    """Evaluation `Scorer`: ID list + title list -> combined top-K; rows ranked (list order, then title cosine).

    The combined top-K list (`RetrievalConfig.mode`) gets scores above every other item, in list order; the remaining
    items of the category are ordered by title cosine, whatever the mode, so the full ranking is defined. Items
    released after a target's time are in no list. Tie-aware: `demote` columns go last among their ties.
    """

    tie_aware = True

    def __init__(self, catalog: Catalog, id_vectors: np.ndarray, title_vectors: np.ndarray,
                 id_queries: Callable[[list[list[str]]], np.ndarray],
                 title_queries: Callable[..., np.ndarray | TitleQueries],
                 cfg: RetrievalConfig = RetrievalConfig(), id_known: np.ndarray | None = None,
                 title_unit: bool = False, id_unit: bool = False) -> None:
        """`id_known` (n_catalog,) bool: the items the ID model has a row for, the only ones an ID list holds
        (None: every item). `title_unit`: `title_vectors` are `l2_normalize`d already (a `TitleQueryBuilder`'s,
        shared by every fit's scorer) and are kept as given; `id_unit` the same for `id_vectors`
        (`models.seqrec.vectors.unit_item_vectors`)."""
        self.catalog = catalog
        self.id_known = np.ones(len(catalog.item_ids), bool) if id_known is None else np.asarray(id_known, bool)
        self.index = catalog.index
        self.id_vectors = id_vectors if id_unit else l2_normalize(id_vectors)  # (n_catalog, d_id), catalog order
        self.title_vectors = title_vectors if title_unit else l2_normalize(title_vectors)  # (n_catalog, d_title)
        self.id_queries = id_queries
        self.title_queries = title_queries
        self.cfg = cfg
        self._shared: SharedSources | None = None  # set by `with_config`

    def with_config(self, cfg: RetrievalConfig) -> RetrievalScorer:
        """This scorer's sources combined by another `cfg` (its `mode`, `n`, `title_list`, ...): a copy that shares
        the vectors, the query builders and, with this scorer and every other copy, the last batch's `sources`, so
        methods evaluated together batch by batch (`evaluation.metrics.evaluate_many`) compute the cosine matrices
        and the top-K lists once. A copy with another `k` or `exclude_seen` computes its own."""
        if self._shared is None:
            self._shared = SharedSources()
        other = copy.copy(self)
        other.cfg = cfg
        return other

    def lists(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ID top-K and title top-K column indices (into cat_rows) and the title cosine matrix (B, n_cat).

        The title list is the title-cosine top-K, or with `title_list="memory_first"` and a `title_queries` that
        returns `TitleQueries`, the memory's products for the last search first, then that cosine top-K.
        `demote` (B,) columns go last among their ties in every list (the evaluation passes its targets).
        """
        src = self.sources(batch, cat_rows, demote)
        title_top = src.title_top
        if self.cfg.title_list == "memory_first" and src.memory_cols is not None:
            title_top = memory_first_lists(src.memory_cols, title_top, self.cfg.k)
        elif self.cfg.title_list not in ("memory_first", "cosine"):
            raise ValueError(f"unknown title_list {self.cfg.title_list!r}")
        return src.id_top, title_top, src.title_cos

    def sources(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> ListSources:
        """The separate retrieval sources of a batch: ID and title-cosine top-K, the memory's products, the cosine
        matrices and the query vectors (see `ListSources`); what `lists` merges and the ranking stage reads.
        Scorers made by `with_config` share the last batch's, read-only."""
        if self._shared is None:
            return self._sources(batch, cat_rows, demote)
        return self._shared.get((self.cfg.k, self.cfg.exclude_seen), batch, cat_rows, demote,
                                lambda: self._sources(batch, cat_rows, demote))

    def _sources(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> ListSources:
        hist = item_sequences(batch["seq_actions"], batch["seq_item_ids"])
        qi, found = self.queries(batch, cat_rows, demote)
        qi = l2_normalize(np.nan_to_num(qi))  # (B, d_id)
        vectors, memory_rows = (found.vectors, found.memory_rows) if isinstance(found, TitleQueries) else (found, None)
        qt = l2_normalize(vectors)  # (B, d_title)
        id_cos = qi @ self.id_vectors[cat_rows].T  # (B, n_cat)
        title_cos = qt @ self.title_vectors[cat_rows].T  # (B, n_cat)
        id_raw = id_cos.copy()
        # Unreleased at the target's time: in no list (the evaluation does not rank them either).
        t_ns = to_ns(batch["target_ts"].to_numpy())  # (B,)
        unreleased = ~self.catalog.released(cat_rows, t_ns)  # (B, n_cat)
        id_cos[unreleased] = -np.inf
        id_cos[:, ~self.id_known[cat_rows]] = -np.inf  # no row of its own: in no ID list
        title_rank = title_cos.copy()
        title_rank[unreleased] = -np.inf
        if memory_rows is not None:
            memory_rows = [self._released_rows(r, t) for r, t in zip(memory_rows, t_ns, strict=True)]
        if self.cfg.exclude_seen:
            seen = memory_columns(history_rows(batch, self.index), cat_rows)  # B arrays of columns
            b_idx = np.repeat(np.arange(len(seen)), [len(s) for s in seen])
            c_idx = np.concatenate(seen) if seen else np.zeros(0, np.int64)
            id_cos[b_idx, c_idx] = -np.inf
            title_rank[b_idx, c_idx] = -np.inf
            if memory_rows is not None:
                memory_rows = [r[~np.isin(r, cat_rows[s])] for r, s in zip(memory_rows, seen, strict=True)]
        k = self.cfg.k
        id_top = topk_rows(id_cos, k, demote)
        title_top = topk_rows(title_rank, k, demote)
        # An excluded item (seen or unreleased) is only in a top-k when the category has fewer others: PAD it.
        id_top[np.isneginf(np.take_along_axis(id_cos, id_top, axis=1))] = -1
        title_top[np.isneginf(np.take_along_axis(title_rank, title_top, axis=1))] = -1
        no_hist = np.array([not h for h in hist], bool)
        id_top[no_hist] = -1  # no clicked/purchased item: no ID list (PAD rows)
        memory_cols = memory_columns(memory_rows, cat_rows) if memory_rows is not None else None
        qi[no_hist] = 0.0
        return ListSources(id_top, title_top, memory_cols, id_raw, title_cos, qi, qt)

    def queries(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray | TitleQueries]:
        """The ID query vectors (B, d_id) and the title queries of a batch (subclasses swap in other sources)."""
        qi = self.id_queries(item_sequences(batch["seq_actions"], batch["seq_item_ids"]))
        if demote is None:
            return qi, self.title_queries(batch, cat_rows)
        return qi, self.title_queries(batch, cat_rows, list(self.catalog.item_ids[cat_rows[demote]]))

    def _released_rows(self, rows: np.ndarray, t_ns: int) -> np.ndarray:
        """The catalog rows released at or before t_ns, in order."""
        return rows[self.catalog.created_ns[rows] <= t_ns] if len(self.catalog.created_ns) else rows

    def ranked(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> list[list[int]]:
        """Each target's combined top-K list as column indices into cat_rows."""
        id_top, title_top, _ = self.lists(batch, cat_rows, demote)
        return self.combined(id_top, title_top, demote)

    def combined(self, id_top: np.ndarray, title_top: np.ndarray, demote: np.ndarray | None = None
                 ) -> list[list[int]]:
        """`combine` per row of the two top-K column arrays (PAD -1 entries skipped)."""
        last = [None] * len(id_top) if demote is None else [int(c) for c in demote]
        return [combine([i for i in a.tolist() if i >= 0], [i for i in t.tolist() if i >= 0], self.cfg, d)
                for a, t, d in zip(id_top, title_top, last, strict=True)]

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> np.ndarray:
        id_top, title_top, title_cos = self.lists(batch, cat_rows, demote)
        return list_scores(self.combined(id_top, title_top, demote), title_cos)  # (B, n_cat)


# ---------------------------------------------------------------------------------------------------------------
# Variant selection on top of any combined list


def history_rows(batch: pd.DataFrame, catalog_index: pd.Index) -> list[np.ndarray]:
    """Catalog rows of each target's clicked/purchased items, oldest first (items not in the catalog dropped)."""
    out = []
    for seq in item_sequences(batch["seq_actions"], batch["seq_item_ids"]):
        rows = catalog_index.get_indexer(np.asarray(seq, dtype=object)) if seq else np.zeros(0, np.int64)
        out.append(rows[rows >= 0].astype(np.int64))
    return out


def combined_lists(base: RetrievalScorer, batch: pd.DataFrame, cat_rows: np.ndarray, catalog_index: pd.Index,
                   demote: np.ndarray | None = None
                   ) -> tuple[list[tuple[np.ndarray, np.ndarray, int]], np.ndarray]:
    """Per target: (combined list as catalog rows, history rows, target time in ns); and the title cosine matrix."""
    id_top, title_top, title_cos = base.lists(batch, cat_rows, demote)
    hist = history_rows(batch, catalog_index)
    t_ns = to_ns(batch["target_ts"].to_numpy())  # (B,)
    lists = [(cat_rows[np.asarray(cols, np.int64)], hist[b], int(t_ns[b]))
             for b, cols in enumerate(base.combined(id_top, title_top, demote))]
    return lists, title_cos


class VariantScorer:
    """Evaluation `Scorer`: a `RetrievalScorer`'s combined top-K, re-ranked by a `VariantRanker`.

    The ranker puts every released colour x size variant of the list's leading families in score order, then the
    rest of the list; the result is cut at K and scored like `RetrievalScorer` (list order, then title cosine).
    Tie-aware like its base: a `demote` column goes last among the candidates it ties with.
    """

    tie_aware = True

    def __init__(self, base: RetrievalScorer, catalog: Catalog, ranker: VariantRanker,
                 attrs: ItemAttributes | None = None) -> None:
        self.base, self.ranker = base, ranker
        self.attrs = attrs if attrs is not None else ItemAttributes.from_items(catalog.items)
        self.index = pd.Index(catalog.item_ids)

    def ranked_rows(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None
                    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Each target's re-ranked list as catalog rows (cut at K), and the title cosine matrix (B, n_cat)."""
        lists, title_cos = combined_lists(self.base, batch, cat_rows, self.index, demote)
        out = []
        for b, (list_rows, hist, t) in enumerate(lists):
            last = None if demote is None else int(cat_rows[demote[b]])
            rows = self.ranker.rerank(list_rows, hist, t, self.attrs, demote=last)
            keep = in_sorted(rows, cat_rows)  # variants stay in the category (cat_rows ascending)
            if self.base.cfg.exclude_seen:
                keep &= ~np.isin(rows, hist)
            out.append(rows[keep][: self.base.cfg.k])
        return out, title_cos

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> np.ndarray:
        rows, title_cos = self.ranked_rows(batch, cat_rows, demote)
        return rows_to_scores(rows, cat_rows, title_cos)  # (B, n_cat)


def variant_targets(targets: pd.DataFrame, cfg: VariantConfig) -> pd.DataFrame:
    """The validation targets a variant ranker is fitted on: every one, or past `cfg.max_targets` a seeded uniform
    sample of that many (seed 0), in their order."""
    return sample_rows(targets, cfg.max_targets, seed=0)


def variant_examples(base: RetrievalScorer, targets: pd.DataFrame, catalog: Catalog, attrs: ItemAttributes,
                     cfg: VariantConfig, batch_size: int = 256) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(candidates, features, bought row) per target, from `base`'s combined lists: input to `fit_variant_ranker`."""
    index = pd.Index(catalog.item_ids)
    target_rows = catalog.index_of(targets["target_item_id"])
    out = []
    for _, b, batch, cat_rows in category_batches(targets, catalog, batch_size):
        lists, _ = combined_lists(base, batch, cat_rows, index)
        for j, (list_rows, hist, t) in enumerate(lists):
            cand, x = candidate_features(list_rows, hist, t, attrs, cfg)
            if base.cfg.exclude_seen:  # the scorer drops them too
                keep = ~np.isin(cand, hist)
                cand, x = cand[keep], x[keep]
            out.append((cand, x, int(target_rows[b[j]])))
    return out
