"""The retrieval-only recommender on the serving path: Qdrant collections in, a ranked list of catalog items out.

For one request (the user's clicked/purchased items, their last search query, the category and the time):
1. ID list: the ID model's sequence representation searched in the ID collection (`item_id_embeddings`), which
   holds only the items the model has a row for: an item it never saw (cold, or new since training) is in no ID
   list; the title side finds it.
2. Memory: the last query's embedding searched in `query_memory`; the Q nearest stored queries' top-V products.
3. Title list: the title query vector (as `TitleQueryBuilder`: query embedding blended with the memory products'
   title embeddings) searched in `item_title_embeddings`, with the memory's products first (`memory_first`).
4. The two lists combined by `RetrievalConfig.mode` (mixup by default), the user's own items left out, and
   re-ranked by a `VariantRanker` when one is given.
Every search is restricted to the request's category partition, and items released after the request time are left
out. Hits with equal scores are ordered by item id, and a search whose k-th hit ties with the last one fetched is
repeated with a larger limit until the tie group is whole, so Qdrant's own order of ties never shows.

The memory is read as of the request: the `query_memory` collection holds every search up to its build time
(`built_before` in each point's payload), so it serves requests at or after that time, and a request dated before it
is refused (it would read later searches). Give an `AsOfMemory` instead to replay requests at any past time: that
is what the evaluation reads, and with it this is exactly the evaluation's ranking (`RetrievalScorer`,
`VariantScorer`); a test checks it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from feature_repo.sequences import UserSequence
from models.catalog import release_ns
from models.common import l2_normalize, to_ns
from models.ranker.candidates import TargetInputs
from models.ranker.stage import RankingStage
from models.retrieval import RetrievalConfig, TitleQueryConfig, combine
from models.text.encoder import TextEncoder
from models.text.memory import AsOfMemory
from models.text.tokenizer import normalize_text
from models.variants import ItemAttributes, VariantRanker
from serving.config import COLLECTIONS, Collections
from serving.scan import ScanTable
from serving.vectorstore import Hit, VectorStore, point_ids

TIE_SLACK = 5  # extra memory hits fetched so that ties at the q-th place break by query text
QUERY_CACHE = 4096  # query encodings kept per bundle


@dataclass(frozen=True)
class UserContext:
    """What serving knows about one request."""

    category: str  # the category to recommend in (every search is restricted to it)
    history: Sequence[str] = ()  # clicked/purchased item ids, oldest first
    last_query: str | None = None  # the user's last search query
    at: pd.Timestamp | None = None  # request time: items released after it are left out (None: now)
    # For the ranking stage (from the same Feast sequence): per history item whether it was a purchase and its
    # epoch ms; and the user's logged searches (search id, epoch ms), oldest first.
    history_buy: Sequence[bool] = ()
    history_ms: Sequence[int] = ()
    searches: Sequence[tuple[int, int]] = ()


@dataclass
class Recommendation:
    items: list[str]  # ranked item ids
    id_list: list[str] = field(default_factory=list)  # the ID collection's list (seen items removed)
    title_list: list[str] = field(default_factory=list)  # memory products first, then title search
    memory_queries: list[str] = field(default_factory=list)  # the stored queries the memory matched
    memory_products: list[str] = field(default_factory=list)  # their products in the category, in order
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage

    sources: dict[str, str] = field(default_factory=dict)  # the ranking stage's source per item
    scores: list[float] = field(default_factory=list)  # the ranking stage's score of each item (empty without it)

    def source(self, item_id: str) -> str:
        """The list an item came from: memory, id, title, search, history, or variant (added as a family member)."""
        if item_id in self.sources:
            return self.sources[item_id]
        if item_id in self.memory_products:
            return "memory"
        if item_id in self.id_list:
            return "id"
        return "title" if item_id in self.title_list else "variant"


class OnlineRetriever:
    """Retrieval-only recommendations from the Qdrant collections (see the module docstring)."""

    def __init__(self, store: VectorStore, items: pd.DataFrame, encoder: TextEncoder,
                 id_queries: Callable[[list[list[str]]], np.ndarray], ranker: VariantRanker | None = None,
                 cfg: RetrievalConfig = RetrievalConfig(), title_cfg: TitleQueryConfig = TitleQueryConfig(),
                 collections: Collections = COLLECTIONS, memory: AsOfMemory | None = None,
                 id_items: Sequence[str] | None = None, ranking: RankingStage | None = None,
                 title_vectors: np.ndarray | None = None, id_vectors: np.ndarray | None = None,
                 scan: bool = False) -> None:
        """`id_items`: the items the ID collection holds (those the ID model has a row for; None: every item), so
        that a category without any has no ID list. `ranking`: the learned ranking stage; with it the lists are its
        sources (seen items kept) and it orders the items. `title_vectors`: every item's unit title vector in item
        id order (`serving.bundle.title_table`, the evaluation's table); None: titles are encoded per request.
        `id_vectors`: every item's unit ID-model vector in item id order, NaN rows for items without one (what the
        ID collection holds). `scan`: with both tables, search the ID and title lists by scanning them (exact, one
        BLAS product per request: 4x faster than the engine's exact search over an in-process shard) instead of
        their collections."""
        self.store, self.encoder, self.id_queries, self.memory = store, encoder, id_queries, memory
        self.ranker, self.cfg, self.title_cfg, self.collections = ranker, cfg, title_cfg, collections
        self.ranking = ranking
        self.items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
        self.index = pd.Index(self.items["item_id"])
        self.item_ids = self.items["item_id"].to_numpy()  # (n,) row -> item id
        # item id -> row: a request looks up a few hundred ids, for which a dict is 10x pandas' `get_indexer`
        self.row_of: dict[str, int] = {str(i): r for r, i in enumerate(self.item_ids.tolist())}
        self.category = self.items["category"].to_numpy()
        self.titles = self.items["title"].fillna("").astype(str).to_numpy()
        if title_vectors is not None and len(title_vectors) != len(self.items):
            raise ValueError(f"title_vectors has {len(title_vectors)} rows for a catalog of {len(self.items)}")
        self.title_table = title_vectors
        # With both tables and `scan`, the ID and title searches scan them per category (exact, no engine trip).
        self.scan = scan and title_vectors is not None and id_vectors is not None
        self._title_partitions: dict[str, ScanTable] = {}
        self._id_partitions: dict[str, ScanTable] = {}
        by_category = {str(c): rows.to_numpy() for c, rows in
                       pd.Series(np.arange(len(self.items))).groupby(self.category, sort=False)}  # rows ascending
        if self.scan:
            assert title_vectors is not None and id_vectors is not None
            if len(id_vectors) != len(self.items):
                raise ValueError(f"id_vectors has {len(id_vectors)} rows for a catalog of {len(self.items)}")
            known = ~np.isnan(id_vectors).any(axis=1)
            for c, r in by_category.items():
                self._title_partitions[c] = ScanTable.build(r, title_vectors[r])
                self._id_partitions[c] = ScanTable.build(r[known[r]], id_vectors[r[known[r]]])
        self.created_ns = release_ns(self.items)  # (n,)
        self.attrs = ItemAttributes.from_items(self.items) if ranker is not None else None
        cats = self.items["category"].fillna("\0missing").astype(str)
        self.category_code = {c: i for i, c in enumerate(sorted(cats.unique()))}  # as ItemAttributes.category
        # The memory collection's keys and payloads, read on its first search (the service's warm-up) and scanned
        # from then on, when the tables are scanned.
        self._memory_table: tuple[np.ndarray, list[dict]] | None = None
        self._memory_lock = threading.Lock()
        # Item searches read no payloads: point id -> item id, for the items the searched collections hold (none
        # when the tables are scanned).
        searched = [] if self.scan else self.items["item_id"]
        self.point_ids = point_ids([str(i) for i in searched])
        # Per category, its rows by release time: a request's unreleased items are a suffix (no catalog scan).
        self._by_release: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for c, r in by_category.items():
            r = r[np.argsort(self.created_ns[r], kind="stable")]
            self._by_release[c] = (self.created_ns[r], self.item_ids[r])
        with_id = self.index.isin(list(id_items)) if id_items is not None else np.ones(len(self.index), bool)
        self.id_categories = set(self.items.loc[with_id, "category"].astype(str))
        # A shopper's last search comes back on every request they make: its encoding is kept (per bundle, since
        # the encoder is the bundle's). The same single-text forward, so the same floats as encoding it again.
        self.query_key = lru_cache(maxsize=QUERY_CACHE)(self._query_key)

    @property
    def memory_read(self) -> bool:
        """Whether the memory collection's table has been read (by the first search, when scanning)."""
        return self._memory_table is not None

    def touch(self) -> int:
        """Reference each per-item Python object a request can reach (the item ids, their rows, the memory's
        payloads) once; the number touched. In a worker forked from the process that loaded the bundle, a request
        that takes a reference writes the object's count, and the first write to a page copies it: spread over the
        first requests, that is hundreds of page copies each (on medium-s0, 656 a request for the first five, 25
        after 200). Touched here, before the worker says ready, they are copied at once (about 20 MB)."""
        n = 0
        for key, row in self.row_of.items():
            n += key is not None and row is not None
        for i in self.item_ids.tolist():
            n += i is not None
        if self.memory_read:
            for payload in self._memory_table[1]:
                n += len(payload) >= 0
        return n

    def _query_key(self, text: str) -> np.ndarray:
        """The unit encoding of one normalised query, read-only. (1, d)"""
        key = l2_normalize(self.encoder.encode([text]))
        key.setflags(write=False)
        return key

    def _scan(self, partitions: dict[str, ScanTable], vector: np.ndarray, k: int, category: str,
              exclude: set[str]) -> list[Hit]:
        """A search as an exact scan of one of the bundle's tables (the vectors its collection holds, `ScanTable`:
        a half-precision pre-scan and an exact re-score on large categories), top-k not in `exclude` by score then
        item id (as `_search`). vector: (d,) unit."""
        table = partitions.get(category) or ScanTable.empty(len(vector))
        top, scores = table.top(vector, k + len(exclude) + TIE_SLACK)  # ties with the m-th best included
        order = np.lexsort((top, -scores))  # rows are in item id order: ties by item id
        ids = self.item_ids[table.rows[top[order]]]
        return [Hit(id=str(i), score=float(sc), payload={}) for i, sc in zip(ids, scores[order], strict=True)
                if i not in exclude][:k]

    def _scan_memory(self, key: np.ndarray, k: int) -> list[Hit]:
        """The memory collection's top-k stored queries for a unit key (ties at the k-th included, then cut by
        score and position), by a scan of its vectors (read once; a half-precision pre-scan when large)."""
        if self._memory_table is None:
            with self._memory_lock:
                if self._memory_table is None:
                    if self.collections.memory not in self.store.collections():
                        raise KeyError(f"no collection {self.collections.memory!r}")
                    _, keys, payloads = self.store.export(self.collections.memory)
                    matrix = l2_normalize(keys) if len(keys) else np.zeros((0, self.encoder.dim), np.float32)
                    self._memory_table = (ScanTable.build(np.arange(len(payloads)), matrix), payloads)
        table, payloads = self._memory_table
        if not len(payloads):
            return []
        pos, scores = table.top(np.asarray(key, np.float32), k)  # (c,) every row at least the k-th best score
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(id=payloads[p]["query"], score=float(sc), payload=payloads[p])
                for p, sc in zip(pos[order].tolist(), scores[order].tolist(), strict=True)]

    def _unreleased(self, category: str, at_ns: int) -> set[str]:
        """The category's items released after `at_ns`."""
        created, ids = self._by_release.get(category, (np.zeros(0, np.int64), np.zeros(0, object)))
        return set(ids[np.searchsorted(created, at_ns, side="right"):].tolist())

    def _search(self, collection: str, vector: np.ndarray, k: int, partition: str, exclude: set[str]) -> list[Hit]:
        """Top-k hits not in `exclude`, by score then item id (see the module docstring on ties). vector: (1, d)."""
        limit = k + len(exclude) + TIE_SLACK
        while True:
            hits = self.store.search(collection, vector, limit, partition=partition, id_of=self.point_ids)[0]
            kept = sorted((h for h in hits if h.id not in exclude), key=lambda h: (-h.score, h.id))
            if len(hits) < limit or (len(kept) >= k and kept[k - 1].score > hits[-1].score):
                return kept[:k]  # everything fetched, or the k-th hit is strictly above the fetch floor
            limit *= 2

    def _rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """The rows of the ids this retriever knows, in order (unknown ids dropped). (m,) int64"""
        row_of = self.row_of
        return np.fromiter((r for r in map(row_of.get, item_ids) if r is not None), np.int64)

    def recommend(self, ctx: UserContext, id_vector: np.ndarray | None = None,
                  title_vector: np.ndarray | None = None) -> Recommendation:
        """Rank the category's items for one request.

        `id_vector` / `title_vector` replace the ID and title query vectors (the LLM stage's generated item and
        title, as `LLMGenerateScorer` does); the memory's products still lead the title list.
        """
        cfg, tcfg = self.cfg, self.title_cfg
        clock = _Clock()
        at = ctx.at if ctx.at is not None else pd.Timestamp.now(tz="UTC")
        at_ns = at.value if isinstance(at, pd.Timestamp) else int(to_ns([at])[0])  # UTC ns (naive is UTC)
        stage = self.ranking
        seen = set(ctx.history) if cfg.exclude_seen and stage is None else set()  # the stage keeps seen items
        list_k = max(stage.cfg.id_k, stage.cfg.title_k) if stage is not None else cfg.k
        unreleased = self._unreleased(ctx.category, at_ns)
        excluded = seen | unreleased
        history = [i for i in ctx.history if i in self.row_of]

        id_list: list[str] = []
        id_query = None
        if id_vector is not None or ctx.history:
            vec = id_vector if id_vector is not None else np.nan_to_num(self.id_queries([list(ctx.history)]))
            vec = l2_normalize(np.asarray(vec, np.float32).reshape(1, -1))  # (1, d)
            id_query = vec[0]
            if ctx.category in self.id_categories:  # else the ID model knows no item of the category
                hits = (self._scan(self._id_partitions, vec[0], list_k, ctx.category, excluded) if self.scan
                        else self._search(self.collections.ids, vec, list_k, ctx.category, excluded))
                id_list = [h.id for h in hits]
        clock.lap("id_search")

        memory_products: list[str] = []
        memory_queries: list[str] = []
        query_vec = None
        if ctx.last_query is not None and normalize_text(ctx.last_query):
            key = self.query_key(normalize_text(ctx.last_query))  # (1, d)
            memory_queries, found = self._memory(key, at)
            rows = self._rows(found)
            in_cat = rows[self.category[rows] == ctx.category]
            memory_products = [str(i) for i in self.item_ids[in_cat] if i not in excluded]
            blend = in_cat if len(in_cat) else rows
            query_vec = key[0] * tcfg.query_weight
            if len(blend):
                query_vec = query_vec + (1 - tcfg.query_weight) * self._title_vectors(blend).mean(axis=0)
        elif ctx.history:
            rows = self._rows(list(dict.fromkeys(ctx.history[-tcfg.fallback_items:])))
            if len(rows):
                query_vec = self._title_vectors(rows).mean(axis=0)
        clock.lap("memory")
        if title_vector is not None:
            query_vec = np.asarray(title_vector, np.float32).reshape(-1)
        title_hits: list[str] = []
        if query_vec is not None:
            if self.scan:
                hits = self._scan(self._title_partitions, l2_normalize(query_vec)[0], list_k, ctx.category, excluded)
            else:
                hits = self._search(self.collections.titles, l2_normalize(query_vec), list_k, ctx.category, excluded)
            title_hits = [h.id for h in hits]
        title_list = title_hits
        if cfg.title_list == "memory_first" and stage is None:
            title_list = list(dict.fromkeys([*memory_products, *title_hits]))[: cfg.k]
        clock.lap("title_search")
        if stage is not None:
            title_query = l2_normalize(query_vec)[0] if query_vec is not None else None
            return self._rank_stage(stage, ctx, at_ns, id_list, title_hits, memory_products, memory_queries,
                                    id_query, title_query, clock)

        ranked = combine(id_list, title_list, cfg)
        if self.ranker is not None and ranked:
            rows = self.ranker.rerank(self._rows(ranked), self._rows(history), at_ns, self.attrs)
            ids = self.item_ids[rows]
            ranked = [str(i) for i, c in zip(ids, self.category[rows], strict=True)
                      if c == ctx.category and i not in seen][: cfg.k]
        clock.lap("mixup_rerank")
        return Recommendation(items=list(ranked), id_list=id_list, title_list=title_list,
                              memory_queries=memory_queries, memory_products=memory_products,
                              timings_ms=clock.laps)

    def _rank_stage(self, stage: RankingStage, ctx: UserContext, at_ns: int, id_list: list[str],
                    title_list: list[str], memory_products: list[str], memory_queries: list[str],
                    id_query: np.ndarray | None, title_query: np.ndarray | None, clock: _Clock) -> Recommendation:
        """The learned ranking stage over the request's sources (as `evaluation.ranking.RankerScorer` evaluates it)."""
        known = [(i, b, m) for i, b, m in zip(ctx.history, ctx.history_buy or [False] * len(ctx.history),
                                               ctx.history_ms or [at_ns // 1_000_000] * len(ctx.history), strict=True)
                 if i in self.row_of]
        searches = sorted(ctx.searches, key=lambda s: s[1])  # oldest first, as the Feast sequence
        results, ms = stage.searches.recent(["search"] * len(searches), [s for s, _ in searches],
                                            [m for _, m in searches], stage.cfg.searches)
        d_title = self.encoder.dim
        inp = TargetInputs(
            category=self.category_code.get(ctx.category, -1), t_ns=at_ns,
            hist_rows=self._rows([i for i, _, _ in known]), hist_buy=np.array([b for _, b, _ in known], bool),
            hist_ms=np.array([m for _, _, m in known], np.int64),
            id_rows=self._rows(id_list), title_rows=self._rows(title_list), memory_rows=self._rows(memory_products),
            searches=results, search_ms=ms, query=ctx.last_query,
            id_query=id_query if known else None,
            title_query=title_query if title_query is not None else np.zeros(d_title, np.float32),
            popular_rows=stage.ctx.popular(self.category_code.get(ctx.category, -1), at_ns, stage.cfg.popular))
        ranked = stage.rank(inp)
        clock.lap("candidates_features_rank")
        top = ranked.rows[: self.cfg.k]
        ids = self.item_ids
        names = ("memory", "search", "history", "id", "title", "popularity")
        pos = pd.Index(ranked.candidates.rows).get_indexer(top)
        sources = {}
        for r, p in zip(top.tolist(), pos.tolist(), strict=True):
            sources[str(ids[r])] = next((n for n in names if ranked.candidates.ranks[n][p] >= 0), "variant")
        return Recommendation(items=[str(i) for i in ids[top]], id_list=id_list, title_list=title_list,
                              memory_queries=memory_queries, memory_products=memory_products,
                              timings_ms=clock.laps, sources=sources, scores=ranked.scores[: self.cfg.k].tolist())

    def memory_for(self, queries: Sequence[str], at: pd.Timestamp, products: int = 3) -> dict[str, tuple[str, ...]]:
        """Each query's nearest stored query's top products (the prompt's memory segment), as of `at`."""
        out: dict[str, tuple[str, ...]] = {}
        for q in dict.fromkeys(q for q in queries if q and normalize_text(q)):
            key = self.query_key(normalize_text(q))  # (1, d)
            _, found = self._memory(key, at, q=1, v=products)
            if found:
                out[q] = tuple(found)
        return out

    def _memory(self, key: np.ndarray, at: pd.Timestamp, q: int | None = None, v: int | None = None
                ) -> tuple[list[str], list[str]]:
        """The Q nearest stored queries as of `at` and their top-V products, de-duplicated in order. key: (1, d)."""
        tcfg = self.title_cfg
        q, v = q or tcfg.q, v or tcfg.v
        if self.memory is not None:
            hits = self.memory.lookup(key, [at], q=q, v=v)[0]
            return [h.query for h in hits], list(dict.fromkeys(p for h in hits for p in h.products))
        # Ties broken by query text, as the exact memories do (their keys are sorted texts); a few extra hits
        # so that a tie at the q-th place is broken the same way.
        found = (self._scan_memory(key[0], q + TIE_SLACK) if self.scan
                 else self.store.search(self.collections.memory, key, q + TIE_SLACK)[0])
        if found and pd.Timestamp(found[0].payload["built_before"]) > at:
            raise ValueError(f"the query memory collection holds searches up to {found[0].payload['built_before']}, "
                             f"after the request time {at}; pass an AsOfMemory to replay past requests")
        found = sorted(found, key=lambda h: (-round(h.score, 5), h.payload["query"]))[:q]
        return ([h.payload["query"] for h in found],
                list(dict.fromkeys(p for h in found for p in h.payload["products"][:v])))

    def _title_vectors(self, rows: np.ndarray) -> np.ndarray:
        """Unit title embeddings of catalog rows: the bundle's table, else encoded on the fly. (n, d)"""
        if self.title_table is not None:
            return self.title_table[rows]
        return l2_normalize(self.encoder.encode(list(self.titles[rows])))


class _Clock:
    """Milliseconds per named stage, measured between consecutive `lap` calls."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + (now - self._t) * 1e3, 3)
        self._t = now


def context_from_features(features: dict[str, list], row: int = 0, category: str | None = None,
                          items: pd.DataFrame | None = None, at: pd.Timestamp | None = None) -> UserContext:
    """A `UserContext` from Feast online features (`prompt_context_v1`: the aligned `seq_*` lists of one row).

    Without `category`, the category of the user's last clicked/purchased item is used (needs `items`).
    """
    seq = UserSequence.from_features(features, row)
    history, buys, times = seq.item_events()
    if category is None:
        if not history or items is None:
            raise ValueError("no category given and no clicked/purchased item to take it from")
        match = items["category"].to_numpy()[items["item_id"].to_numpy() == history[-1]]  # no index built per call
        if not len(match):
            raise ValueError(f"item {history[-1]!r} is not in the catalog")
        category = str(match[0])
    return UserContext(category=category, history=history, last_query=seq.last_query(), at=at, history_buy=buys,
                       history_ms=times, searches=seq.searches())
